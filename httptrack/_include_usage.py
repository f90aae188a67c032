"""Ask a stream for its usage, without the app noticing.

Some streams report token usage only when the request asks for it (OpenAI's chat
completions: ``stream_options.include_usage``); without it a tracker can only estimate.
Where the provider says an endpoint accepts the option (``Provider.include_usage``), the
tracking transport has the provider add it to a streaming request that does not ask for
usage (``Provider.ask_for_usage``), and the response's tee removes the one extra event it
brings (``Provider.is_usage_chunk``) from what the app receives
(``_streams.UsageChunkFilter``); the recorder still reads it.

The app's own request is what gets recorded and what the response cache keys on: only the
bytes on the wire change. What each provider's option looks like, and how the body is
edited, is the provider's (``providers/``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._streams import UsageChunkFilter

if TYPE_CHECKING:
    from ._exchange import Exchange

__all__ = ["usage_filter", "usage_request"]


def usage_request(exchange: Exchange) -> tuple[bytes, str] | None:
    """The request body asking for the stream's usage, and what was added (as the
    ``parse_notes`` entry names it); ``None`` to send the request as it is."""
    # A stream is asked for with a "stream" member (not there: most calls, one C-level search).
    if b'"stream"' not in exchange.request_body:
        return None
    provider = exchange.provider
    if exchange.method != "POST" or not provider.include_usage(exchange.path, exchange.query):
        return None
    body = provider.ask_for_usage(exchange.request_body)
    return None if body is None else (body, provider.usage_option)


def usage_filter(exchange: Exchange) -> UsageChunkFilter:
    """The filter that keeps the usage chunk :func:`usage_request` asked for from the app
    (and only that one: see ``UsageChunkFilter`` and ``Provider.marks_usage_chunks``)."""
    provider = exchange.provider
    return UsageChunkFilter(provider.is_usage_chunk, needs_mark=provider.marks_usage_chunks)
