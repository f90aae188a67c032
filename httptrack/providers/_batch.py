"""Reading a batch API's results file, shared by the families that have one (OpenAI's Batch
API output files, Anthropic's message batch results).

A results file is JSON Lines, one finished request per line; each family's parser picks the
model and usage out of its own line shape and hands them here. The file is one call in the
log: its usage is every succeeded request's usage added up, priced at batch prices.
"""

from __future__ import annotations

from .._usage import Usage
from ._base import Parsed

__all__ = ["add_batch_result", "add_usage", "finish_batch_results", "is_batch_results"]


def add_usage(a: Usage, b: Usage) -> Usage:
    """The sum of two calls' usage (for batch result files)."""

    def plus(x: int | None, y: int | None) -> int | None:
        return None if x is None and y is None else (x or 0) + (y or 0)

    extra = dict(a.extra)
    for key, value in b.extra.items():
        extra[key] = extra.get(key, 0) + value
    return Usage(
        input_tokens=plus(a.input_tokens, b.input_tokens),
        output_tokens=plus(a.output_tokens, b.output_tokens),
        cached_input_tokens=plus(a.cached_input_tokens, b.cached_input_tokens),
        cache_write_tokens=plus(a.cache_write_tokens, b.cache_write_tokens),
        reasoning_tokens=plus(a.reasoning_tokens, b.reasoning_tokens),
        extra=extra,
    )


def add_batch_result(parsed: Parsed, model: str | None, usage: Usage | None) -> None:
    """Count one succeeded request of a batch results file: its model, its usage added to
    the file's."""
    parsed.billed = True
    models: set[str] = parsed.state.setdefault("batch_models", set())
    if model:
        models.add(model)
    if usage is not None:
        parsed.usage = add_usage(parsed.usage, usage)
    parsed.state["batch_lines"] = parsed.state.get("batch_lines", 0) + 1


def is_batch_results(parsed: Parsed) -> bool:
    """Whether what was read is a batch results file (:func:`add_batch_result` ran)."""
    return "batch_lines" in parsed.state


def finish_batch_results(parsed: Parsed) -> None:
    """Close the reading of a batch results file."""
    parsed.stream = False  # read line by line, but a file download, not a stream
    models = sorted(parsed.state.get("batch_models", ()))
    count = parsed.state.get("batch_lines", 0)
    parsed.notes.append(f"batch results: {count} requests; their usage is counted where the results are read")
    if len(models) == 1:
        parsed.response_model = models[0]
    elif models:
        parsed.notes.append(f"batch results for several models ({', '.join(models)}): not priced as one")
