"""OpenAI-style stream chunks read from their text (``OpenAICompatible.sse_reader``).

Each chat/completions stream chunk's data is decoded by msgspec into only the fields
``OpenAICompatible.read_event`` reads, typed as that method expects them. Whatever does
not fit (a named or typed event, an error, a field of another type, JSON that is not
valid or too deep) is left to ``read_event`` (the caller decodes it in full), so what is
read is always ``read_event``'s reading: tests/providers/test_stream_fast_path.py compares
the two over every recorded stream. The two readers share ``take_tier`` and
``take_tool_calls``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from ._base import Parsed, choice_finished, dig, items

__all__ = ["chunk_reader", "take_tier", "take_tool_calls"]

#: Service tiers billed at the standard price: ``auto`` (the response names the tier that
#: served the call), ``default``, Groq's ``on_demand``, ``scale`` (billed by commitment, not
#: per token).
_STANDARD_TIERS = frozenset({"auto", "default", "standard", "scale", "on_demand"})


def take_tier(parsed: Parsed, tier: Any) -> None:
    """A ``service_tier`` value (chat completions, Responses API): flex and priority have
    prices of their own. A later value (the response's) replaces an earlier one."""
    if isinstance(tier, str) and tier:
        parsed.price_tier = None if tier in _STANDARD_TIERS else ("service_tier", tier)


def take_tool_calls(parsed: Parsed, calls: Any) -> None:
    """A stream delta's ``tool_calls``: each function's name and arguments, as text."""
    for call in items(calls):
        function = dig(call, "function")
        if isinstance(function, dict):
            parsed.output.append(str(function.get("name") or "") + str(function.get("arguments") or ""))


class _Delta(msgspec.Struct, gc=False):
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: Any = None


class _Choice(msgspec.Struct, gc=False):
    index: int = 0
    delta: _Delta | None = None
    finish_reason: str | None = None
    text: str | None = None


class _Chunk(msgspec.Struct, gc=False):
    id: str | None = None
    model: str | None = None
    choices: list[_Choice] | None = None
    usage: dict[str, Any] | None = None
    service_tier: Any = None
    kind: Any = msgspec.field(default=None, name="type")
    error: Any = None
    x_groq: dict[str, Any] | None = None


_decode = msgspec.json.Decoder(_Chunk).decode


def chunk_reader(take_usage: Callable[..., None]) -> Callable[[Parsed, str | None, str], bool]:
    """``read(parsed, event, text) -> bool``: the chunk read into ``parsed``, or ``False``
    (nothing read) for one ``OpenAICompatible.read_event`` must read. ``take_usage``: the
    provider's ``_take_usage``."""

    def read(parsed: Parsed, event: str | None, text: str) -> bool:
        if event is not None:
            return False
        try:
            chunk = _decode(text)
        except (ValueError, RecursionError):
            return False
        groq = chunk.x_groq
        if chunk.kind is not None or chunk.error is not None or (groq is not None and groq.get("error")):
            return False
        # From here on, what read_event does for a chunk of this shape, in its order.
        if chunk.model:
            parsed.response_model = chunk.model
        if chunk.id:
            parsed.response_id = chunk.id
        choices = chunk.choices
        usage = chunk.usage
        if usage is not None:
            take_usage(parsed, usage, merge=True)
            take_tier(parsed, chunk.service_tier)
            if not choices or any(c.finish_reason for c in choices):
                parsed.usage_final = True
        if groq is not None and isinstance(groq.get("usage"), dict):
            take_usage(parsed, groq["usage"], merge=True)
            parsed.usage_final = True
        if choices is None:
            return True
        output = parsed.output
        for choice in choices:
            reason = choice.finish_reason
            index = choice.index
            if reason:
                choice_finished(parsed, index)
            if index != 0:
                continue
            if reason:
                parsed.finish_reason = reason
            delta = choice.delta
            if delta is not None:
                if delta.reasoning_content:
                    output.append(delta.reasoning_content)
                if delta.reasoning:
                    output.append(delta.reasoning)
                if delta.content:
                    output.append(delta.content)
                if delta.tool_calls:
                    take_tool_calls(parsed, delta.tool_calls)
            elif choice.text is not None:
                output.append(choice.text)
        return True

    return read
