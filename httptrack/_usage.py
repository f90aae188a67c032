"""Normalized token usage: one meaning for every provider.

The convention is OpenTelemetry's GenAI one (and genai-prices'):

- ``input_tokens`` counts every input token billed, cache reads and cache writes included
  (Anthropic reports those apart; its parser adds them in).
- ``output_tokens`` counts every output token, reasoning/thinking included (Gemini reports
  thoughts apart; its parser adds them in).
- ``cached_input_tokens``, ``cache_write_tokens`` and ``reasoning_tokens`` are breakdowns
  *inside* those totals, never additions to them.

``None`` means "the provider did not say"; ``0`` means it said zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Usage"]


@dataclass(slots=True)
class Usage:
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    #: True when a figure was counted locally because the provider sent none.
    estimated: bool = False
    #: Further priced units in genai-prices' vocabulary (``cache_write_1h_tokens``,
    #: ``input_audio_tokens``, ``web_searches`` ...), for prices that depend on them.
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def total_tokens(self) -> int | None:
        if self.input_tokens is None and self.output_tokens is None:
            return None
        return (self.input_tokens or 0) + (self.output_tokens or 0)

    @property
    def is_empty(self) -> bool:
        return self.input_tokens is None and self.output_tokens is None
