"""A call's worst case, before it is sent: what a budget reserves.

``usd``: input tokens counted locally × the input price + the most output tokens the
request allows × the output price (priced as the writer will price the call, overrides
included, with no cache discount). ``tokens``: those two counts added. The most output a
request allows, and how many answers it asks for, is the provider family's to read
(``Provider.max_output``: ``max_tokens``, ``max_completion_tokens``, Gemini's
``generationConfig.maxOutputTokens`` ...). A request that states none is reserved
:data:`DEFAULT_MAX_OUTPUT_TOKENS` output tokens: an estimate, not a bound (docs/limits.md).

The rest of httptrack is reached through the small functions at the bottom, and nowhere
else.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._vocab import Operation

__all__ = ["DEFAULT_MAX_OUTPUT_TOKENS", "CallEstimate", "read_call", "warm_up"]

#: Output tokens reserved for a request that states no maximum.
DEFAULT_MAX_OUTPUT_TOKENS = 4096

#: Operations that are never billed per token: they reserve nothing.
_FREE_OPERATIONS = frozenset({"models"})
#: Operations whose worst case is estimated from tokens (others reserve 0 and are
#: counted at their recorded cost).
_TOKEN_OPERATIONS = frozenset({"chat", "completion", "embeddings"})


@dataclass(slots=True)
class CallEstimate:
    """What the limits read from one request (on the app's thread, once per call)."""

    model: str | None = None
    #: The ``user`` field of an OpenAI-style body (the row's user when none is attributed).
    body_user: str | None = None
    #: ``False`` when the provider does not bill this call (a model list, a token count).
    billed: bool = True
    #: The request's most output tokens per answer, ``None`` when it states none.
    stated_max_output: int | None = None
    answers: int = 1
    #: Filled on first need (counting a prompt costs ~1 µs a token).
    input_tokens: int | None = None
    #: The price variant the request asks for (OpenAI's ``service_tier``, Anthropic's ``speed``).
    tier: tuple[str, str] | None = None
    _body: Any = None
    _provider: str = ""
    _parser: Any = None
    _operation: str = ""
    _host: str | None = None

    def output_tokens(self, default: int) -> int:
        if self._operation == "embeddings":
            return 0
        return (self.stated_max_output or default) * self.answers

    def count_input(self) -> int:
        if self.input_tokens is None:
            if self._operation in _TOKEN_OPERATIONS and self.billed:
                self.input_tokens = _count_input(self._parser, self._operation, self._body, self.model) or 0
            else:
                self.input_tokens = 0
            self._body = None  # counted: the body is not needed any more
        return self.input_tokens

    def worst_tokens(self, default_max_output: int) -> int:
        if not self.billed or self._operation not in _TOKEN_OPERATIONS:
            return 0
        return self.count_input() + self.output_tokens(default_max_output)

    def worst_usd(self, default_max_output: int, prices: Any) -> float | None:
        """The most this call can cost; ``None`` when httptrack knows no price for it."""
        if not self.billed or self._operation in _FREE_OPERATIONS:
            return 0.0
        if self._operation not in _TOKEN_OPERATIONS:
            return 0.0  # files, batches ...: counted at their recorded cost afterwards
        if not self.model:
            return None
        return _price(
            self._provider,
            self.model,
            self._host,
            self.count_input(),
            self.output_tokens(default_max_output),
            prices,
            self.tier,
        )


def read_call(
    provider: Any, operation: Operation, method: str, path: str, query: str, host: str | None, body: bytes
) -> CallEstimate:
    """Read the model, the stated maximum output and the body's ``user`` from a request."""
    decoded = _decode(body)
    parser = provider.parser_for(method, path)
    model, user, billed, tier = _read_request(parser, operation, method, path, query, decoded)
    stated, answers = parser.max_output(decoded) if isinstance(decoded, dict) else (None, 1)
    return CallEstimate(
        model=model,
        body_user=user,
        billed=billed is not False,
        stated_max_output=stated,
        answers=answers,
        tier=tier,
        _body=decoded,
        _provider=str(provider.name),
        _parser=parser,
        _operation=operation,
        _host=host,
    )


def _decode(body: bytes) -> Any:
    if not body or body[:1] not in b"{[ \t\r\n":
        return None
    from .._json import loads_bytes

    try:
        return loads_bytes(body)
    except ValueError:
        return None


# -- the boundary with the rest of httptrack ----------------------------------------------


def _read_request(
    parser: Any, operation: Operation, method: str, path: str, query: str, body: Any
) -> tuple[str | None, str | None, bool | None, tuple[str, str] | None]:
    """``(model, user, billed, price tier)`` as the provider's parser reads them (the same reading the
    row gets, so counters and rows agree on the model)."""
    from ..providers._base import Parsed

    parsed = Parsed(operation=operation)
    with contextlib.suppress(Exception):
        parser.read_request(parsed, method, path, query, body)
    return parsed.model, parsed.user, parsed.billed, parsed.price_tier


def _count_input(parser: Any, operation: str, body: Any, model: str | None) -> int | None:
    from ..record._tokens import estimate_prompt_tokens

    return estimate_prompt_tokens(parser, operation, body, model)


def _price(
    provider: str,
    model: str,
    host: str | None,
    input_tokens: int,
    output_tokens: int,
    prices: Any,
    tier: tuple[str, str] | None,
) -> float | None:
    from .._usage import Usage
    from ..pricing import price_usage

    usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens)
    return price_usage(provider, model, usage, host=host, overrides=prices or None, tier=tier).cost_usd


def warm_up() -> None:
    """Load the price data and the default token encoding now (a second or so, once per
    process), so the first call under a budget does not wait for them. Off the app's
    thread: the engine runs it in a daemon thread."""
    from ..pricing import warm_up as prices_warm_up
    from ..record._tokens import DEFAULT_ENCODING, load_encoding

    prices_warm_up()
    load_encoding(DEFAULT_ENCODING)
