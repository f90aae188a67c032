"""What every provider module implements, and the record of what a parser read.

A provider turns one raw exchange into figures. It is called in the background writer,
never on the app's thread, with the request body already decoded from JSON and the
response either as one decoded JSON body or as a sequence of stream events. Parsers read
what is there rather than what one version of the docs shows: a missing or oddly shaped
field leaves a figure ``None`` (and, where useful, a note), it never raises into the app.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .._json import loads_bytes
from .._usage import Usage
from .._vocab import Operation
from ._prompt import PromptTally

__all__ = [
    "Parsed",
    "Provider",
    "add_shape",
    "all_choices_finished",
    "as_int",
    "choice_finished",
    "dig",
    "expect_choices",
    "first_str",
    "form_fields",
    "items",
    "json_object",
    "merge_usage",
    "positive_int",
    "shape_parser",
]


@dataclass(slots=True)
class Parsed:
    """Everything the parsers learned about one call."""

    operation: Operation = "other"
    model: str | None = None
    stream: bool = False
    user: str | None = None
    response_model: str | None = None
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    #: The provider's id for the response (``chatcmpl-...``, ``msg_...``), when in the body.
    response_id: str | None = None
    #: Generated text as it arrived, for estimates and for reading a stream back.
    output: list[str] = field(default_factory=list)
    #: Things a parser could not read, for the ``parse_notes`` column.
    notes: list[str] = field(default_factory=list)
    #: The response says the call failed even under HTTP 200: a stream's error event, a
    #: GraphQL reply with errors and no data, a failed Responses API object.
    stream_error: bool = False
    #: The stream's own end marker arrived (``[DONE]``, ``message_stop``, ``done: true``):
    #: the response is complete even if the app closed it before the connection's end,
    #: as SDKs do once they see that marker.
    stream_done: bool = False
    #: The usage read is the call's final figure (a usage chunk, ``message_delta``, the
    #: ``done`` line ...), not a provisional one from early in a stream: a stream cut short
    #: after it needs no local count.
    usage_final: bool = False
    #: The response is known to be whole: a stream's end marker arrived (set by the parser
    #: that reads it: ``[DONE]``, ``message_stop``, ``done: true``, a finish reason ...) with
    #: no half-written event after it, or a plain body parsed as JSON. Only a complete
    #: response is stored in the response cache: a proxy cutting a stream cleanly (the
    #: transport sees a normal end) must not leave a broken answer to be served for hours.
    #: Nor is a whole 200 that is not the answer yet: parsers leave it ``False`` for a job
    #: still running (a Responses API ``background`` call) or a model being (un)loaded.
    complete: bool = False
    #: The request went to a batch API (priced at the batch discount).
    batch: bool = False
    #: The price variant the call ran under, beyond batch, as genai-prices names it:
    #: ``service_tier`` (OpenAI: ``flex``, ``priority`` ... as the response reports it) or
    #: ``speed`` (Anthropic's fast mode). ``None``: the standard price.
    price_tier: tuple[str, str] | None = None
    #: Whether the call is billed. ``None``: as its operation says (generations and
    #: embeddings are, model lists and ``other`` are not); parsers set it for the rest
    #: (images and audio are billed, moderations and token counts are free).
    billed: bool | None = None
    #: The cost the provider itself reported (OpenRouter's ``usage.cost``, xAI's
    #: ``cost_in_usd_ticks``, Perplexity's ``usage.cost.total_cost``), in USD.
    reported_cost_usd: float | None = None
    #: Appended to the ``endpoint`` column as ``#detail`` where the path alone does not
    #: say what was called (a GraphQL operation name).
    endpoint_detail: str | None = None
    #: Parser scratch space for stream state (e.g. usage seen so far).
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "".join(self.output)

    def fail(self, code: str | None, message: str | None) -> None:
        """Record an error (the first one wins: later errors are usually consequences)."""
        if self.error_code is None and self.error_message is None:
            self.error_code = code
            self.error_message = message


class Provider:
    """Base class for a provider family. Subclasses set ``name`` and ``hosts`` and override
    the ``read_*`` methods for their wire format."""

    #: httptrack's provider id (the ``provider`` column) and the key prices are looked up by.
    name: ClassVar[str] = "generic"
    #: Hosts (``host`` or ``host:port``) served by this provider out of the box.
    hosts: ClassVar[tuple[str, ...]] = ()
    #: Response headers carrying the provider's request id, in order of preference.
    request_id_headers: ClassVar[tuple[str, ...]] = ("x-request-id", "request-id")
    #: Request headers (lower case) that select what this family's API answers: its API
    #: version, beta features, the account or project billed. Part of the response cache's
    #: key, so a request sent with another value is another request. (Credentials are in the
    #: key too, hashed, whatever their name: the cache finds those itself.)
    cache_key_headers: ClassVar[frozenset[bytes]] = frozenset()
    #: ``data:`` payloads of this family's SSE streams that are not JSON and end the stream
    #: (OpenAI's ``[DONE]``): once one arrives the response is complete.
    stream_end_markers: ClassVar[frozenset[str]] = frozenset()
    #: genai-prices' id for the provider this family's calls are priced as (``google`` for
    #: ``gemini``, ``x-ai`` for ``xai``). ``None``: genai-prices' provider of the same name
    #: if there is one, else the one the model's name (or the host) points to.
    price_provider: ClassVar[str | None] = None
    #: The share of the standard price a batch API bills, where genai-prices has no batch
    #: price of its own for the model (``0.5``: OpenAI's and Anthropic's batch APIs bill
    #: half). ``None``: no discount known; batch calls are priced standard, with a note.
    batch_discount: ClassVar[float | None] = None
    #: What :meth:`ask_for_usage` adds to a request, as the ``parse_notes`` entry names it.
    usage_option: ClassVar[str] = ""

    def operation(self, method: str, path: str) -> Operation:
        """``chat`` | ``completion`` | ``embeddings`` | ``models`` | ``other``."""
        return "other"

    def parser_for(self, method: str, path: str) -> Provider:
        """The parser for this path's wire format: ``self``, or another family's parser
        where a host serves a second API shape (Anthropic's Messages API on Ollama, xAI,
        Azure AI Foundry or a LiteLLM proxy; OpenAI's chat completions on Gemini's host).
        The row keeps this provider's name (and so its prices)."""
        return self

    #: Whether this provider's server, asked for ``stream_options.include_usage``, marks
    #: every other chunk with ``"usage": null`` (OpenAI's protocol). httptrack then hides
    #: the usage chunk it asked for only on a stream with that mark: a usage chunk after
    #: unmarked chunks is one the server sends unasked, which the app would have had
    #: anyway. ``False`` for servers that answer the option without the mark (the first
    #: usage-only chunk of a stream httptrack asked is then always hidden).
    marks_usage_chunks: ClassVar[bool] = True

    def include_usage(self, path: str, query: str) -> bool:
        """Whether this endpoint accepts ``stream_options.include_usage`` on an
        OpenAI-style streaming request (so httptrack may ask for the usage chunk)."""
        return False

    def ask_for_usage(self, body: bytes) -> bytes | None:
        """``body`` with the option that makes a stream report its usage added (OpenAI's
        ``stream_options.include_usage``), or ``None`` when it needs no change (not a stream,
        usage already asked for, not a body this can edit). Asked only where
        :meth:`include_usage` allows it, and only of a body with a ``"stream"`` member. Runs
        on the app's thread for every such request: check bytes before parsing."""
        return None

    def is_usage_chunk(self, data: Any) -> bool:
        """Whether a stream event (its decoded JSON) is the usage chunk that
        :meth:`ask_for_usage` brought: kept from the app, which did not ask for it."""
        return False

    def cacheable(self, method: str, path: str, operation: str) -> bool:
        """Whether a response may be served from the response cache. Only reads that are
        safe to repeat: model generations and lists, never uploads, batches or deletes."""
        if operation == "models":
            return method == "GET"
        return method == "POST" and operation in ("chat", "completion", "embeddings")

    def cacheable_request(self, method: str, path: str, body: bytes) -> bool:
        """Whether this request, on an endpoint :meth:`cacheable` allows, may be answered
        from the cache: ``False`` for one that changes state on the server (appends to a
        stored conversation, starts a background job, loads a model). Asked of
        :meth:`parser_for`'s parser for the path. Runs on the app's thread for every
        cacheable request, with the raw body: check bytes before parsing."""
        return True

    def read_request(self, parsed: Parsed, method: str, path: str, query: str, body: Any) -> None:
        """Fill ``model``, ``stream`` and ``user`` from the request (``body`` is decoded JSON,
        or ``None`` when the request had no JSON body)."""
        if isinstance(body, dict):
            parsed.model = first_str(body.get("model"))
            parsed.stream = body.get("stream") is True

    def stream_format(self, parsed: Parsed, content_type: str) -> str | None:
        """How to split the response body into events (``sse`` | ``ndjson`` |
        ``json-array``), or ``None`` for one plain body."""
        if content_type.startswith("text/event-stream"):
            return "sse"
        if content_type.startswith(("application/x-ndjson", "application/jsonl", "application/ndjson")):
            return "ndjson"
        return None

    def read_body(self, parsed: Parsed, status: int, body: Any) -> None:
        """Read a whole (non-stream) response body, decoded from JSON."""

    def read_event(self, parsed: Parsed, event: str | None, data: Any) -> None:
        """Read one stream event: ``event`` is the SSE event name (``None`` for NDJSON and
        unnamed events); ``data`` its decoded JSON (or text when it was not JSON)."""

    def sse_reader(self, parsed: Parsed) -> Callable[[Parsed, str | None, str], bool] | None:
        """A faster reader of this response's SSE events, or ``None``: called as
        ``read(parsed, event, data_text)``, it reads an event straight from its data's text
        and returns ``True``, or ``False`` having read nothing (the event is then decoded in
        full and given to :meth:`read_event`). What it reads must be exactly what
        :meth:`read_event` would."""
        return None

    def finish(self, parsed: Parsed) -> None:
        """Called once after the body or all events were read."""

    def count_prompt(self, tally: PromptTally, operation: str, body: dict[str, Any]) -> None:
        """Add the prompt of a request in this family's shape (``body``: its decoded JSON) to
        ``tally``, for the estimate made when the provider reports no usage. A body in
        another shape adds nothing (``tally.found`` stays false)."""

    # -- for spend and rate limits (limits/) ------------------------------------------------

    def max_output(self, body: dict[str, Any]) -> tuple[int | None, int]:
        """``(most output tokens per answer, answers)`` a request (its decoded JSON) allows:
        what a budget reserves for its output. ``None``: the request states no maximum."""
        return None, 1

    def limit_error(self, message: str, code: str, metric: str) -> dict[str, Any]:
        """The JSON body of the 429 a call refused by a limit gets, shaped like this family's
        own errors so that its SDK raises its rate-limit error. ``code``: ``budget_exceeded``
        or ``rate_limited``; ``metric``: ``usd``, ``requests`` or ``tokens``."""
        return {"error": {"message": message, "type": code, "code": code}}

    def runs_locally(self, host: str | None) -> bool:
        """Whether a model served at ``host`` (a lower-case host name, no port; ``None``:
        not known) runs on the user's own machine or server, where it costs nothing per
        token."""
        return False


#: The parser of each API shape that hosts of other families serve too (``openai``,
#: ``anthropic``, ``graphql``), added by the module that reads the shape. A family hands such
#: a path over by the shape's name (see :meth:`Provider.parser_for`), so no family module
#: imports another to do it. ``providers/__init__`` imports every family module before any
#: call is read, so every shape is here by then.
_SHAPES: dict[str, Provider] = {}


def add_shape(name: str, parser: Provider) -> None:
    """Make ``parser`` the reader of the API shape ``name`` (see :func:`shape_parser`)."""
    _SHAPES[name] = parser


def shape_parser(name: str) -> Provider:
    """The parser of the API shape ``name`` (``openai``, ``anthropic``, ``graphql``)."""
    return _SHAPES[name]


def expect_choices(parsed: Parsed, count: Any) -> None:
    """The request asked for ``count`` answers (OpenAI's ``n``, Gemini's ``candidateCount``):
    a stream of them is whole once each has finished (:func:`all_choices_finished`)."""
    parsed.state["choices"] = count if count.__class__ is int and count > 1 else 1


def choice_finished(parsed: Parsed, index: int) -> None:
    """The answer ``index`` of a stream has its finish reason."""
    parsed.state.setdefault("finished", set()).add(index)


def all_choices_finished(parsed: Parsed) -> bool:
    finished: set[int] = parsed.state.get("finished") or set()
    return bool(finished) and len(finished) >= parsed.state.get("choices", 1)


def json_object(body: bytes) -> dict[str, Any] | None:
    """A request body decoded as a JSON object, or ``None``."""
    try:
        data = loads_bytes(body)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def dig(obj: Any, *path: str | int) -> Any:
    """``obj[a][b][c]`` or ``None`` when any step is missing or of another type."""
    for key in path:
        if isinstance(key, int):
            if not isinstance(obj, list) or not -len(obj) <= key < len(obj):
                return None
            obj = obj[key]
        elif isinstance(obj, dict):
            obj = obj.get(key)
        else:
            return None
    return obj


def as_int(value: Any) -> int | None:
    """A token count, or ``None`` for anything that is not a sane non-negative integer."""
    if value.__class__ is int:  # the common case, first (a bool's class is bool)
        return value if 0 <= value < 1 << 53 else None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value if 0 <= value < 1 << 53 else None
    if isinstance(value, float) and value.is_integer():
        return as_int(int(value))
    if isinstance(value, str) and value.isdigit():
        return as_int(int(value))
    return None


def items(value: Any) -> list[Any]:
    """``value`` if it is a list, else an empty one (so a loop never trips on a payload that
    puts a string, a number or an object where the reference has an array)."""
    return value if isinstance(value, list) else []


def positive_int(value: Any) -> int | None:
    """A stated maximum (``max_tokens`` ...): a whole number above 0, else ``None``."""
    count = as_int(value)
    return count if count else None


def first_str(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    return None


def merge_usage(old: Usage, new: Usage) -> Usage:
    """``new`` over ``old`` figure by figure: a later chunk's figures supersede earlier
    (provisional) ones, and a figure a later chunk leaves out is kept, not erased."""
    if old.is_empty and not old.extra:
        return new

    def pick(a: int | None, b: int | None) -> int | None:
        return a if b is None else b

    return Usage(
        input_tokens=pick(old.input_tokens, new.input_tokens),
        output_tokens=pick(old.output_tokens, new.output_tokens),
        cached_input_tokens=pick(old.cached_input_tokens, new.cached_input_tokens),
        cache_write_tokens=pick(old.cache_write_tokens, new.cache_write_tokens),
        reasoning_tokens=pick(old.reasoning_tokens, new.reasoning_tokens),
        estimated=old.estimated or new.estimated,
        extra={**old.extra, **new.extra},
    )


def form_fields(body: bytes, content_type: str, limit: int = 64) -> dict[str, str]:
    """The short text fields of a ``multipart/form-data`` body (``model``, ``prompt``,
    ``response_format`` ... of an audio or image upload), so a parser can read them as it
    reads a JSON body. File parts and anything unreadable are skipped."""
    _, _, params = content_type.partition(";")
    boundary = ""
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip().strip('"')
    if not boundary:
        return {}
    fields: dict[str, str] = {}
    for part in body.split(b"--" + boundary.encode("latin-1")):
        head, sep, raw = part.partition(b"\r\n\r\n")
        if not sep or b"filename=" in head:
            continue
        marker = head.find(b'name="')
        if marker < 0:
            continue
        name = head[marker + 6 : head.find(b'"', marker + 6)].decode("utf-8", "replace")
        if len(raw) > 64 * 1024:
            continue
        fields[name] = raw.removesuffix(b"\r\n").decode("utf-8", "replace")
        if len(fields) >= limit:
            break
    return fields
