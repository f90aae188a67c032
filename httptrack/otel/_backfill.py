"""``httptrack export --format otlp``: stored calls sent as spans, with their original times.

Each call is a client span of its own trace, made from its row exactly as a live one is
(``_live.SpanMaker``), and sent to an OTLP/HTTP endpoint in batches, one request per batch,
as the rows are read: memory stays flat however many calls there are. A batch the endpoint
does not accept stops the export with an error (after the OTLP exporter's own retries).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from ._conventions import conventions, started_ns

__all__ = ["BATCH_SPANS", "ExportRefused", "send_calls", "traces_url"]

#: Spans per OTLP request.
BATCH_SPANS = 512


class ExportRefused(Exception):
    """The endpoint did not accept a batch (the message says which and how many were sent)."""


def traces_url(endpoint: str) -> str:
    """The traces URL of an OTLP/HTTP endpoint: ``http://host:4318`` (or any base path, as
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` is read) gets ``/v1/traces``; a URL that already ends
    with it is kept."""
    url = endpoint.strip()
    if url.rstrip("/").endswith("/v1/traces"):
        return url
    return url.rstrip("/") + "/v1/traces"


def send_calls(
    rows: Iterable[Mapping[str, Any]],
    *,
    endpoint: str | None = None,
    headers: Mapping[str, str] | None = None,
    batch: int | None = None,
) -> int:
    """Send each row as a span; returns how many were sent. ``endpoint`` ``None``: the
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT`` variables (else
    ``http://localhost:4318``); ``headers`` ``None``: ``OTEL_EXPORTER_OTLP_HEADERS``."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExportResult

    from ._live import SpanMaker, _version

    ended: list[ReadableSpan] = []

    class Collect(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            ended.append(span)

    base = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "httptrack"}
    provider = TracerProvider(resource=Resource.create(base), shutdown_on_exit=False)
    provider.add_span_processor(Collect())
    tracer = provider.get_tracer("httptrack", _version())
    exporter: Any = OTLPSpanExporter(
        endpoint=None if endpoint is None else traces_url(endpoint),
        headers=dict(headers) if headers else None,
    )
    maker = SpanMaker(conventions())
    batch = batch or BATCH_SPANS
    sent = 0

    def send() -> None:
        nonlocal sent
        if exporter.export(ended) is not SpanExportResult.SUCCESS:
            where = exporter._endpoint  # what the exporter resolved (from the variables too)
            raise ExportRefused(f"{where} did not accept a batch of {len(ended)} spans ({sent:,} were sent)")
        sent += len(ended)
        ended.clear()

    try:
        for row in rows:
            start = started_ns(row)
            latency, ttft = row.get("latency_ms"), row.get("ttft_ms")
            maker.make(
                tracer,
                dict(row),
                start=start,
                end=start + int((latency or 0.0) * 1e6),
                first_token=None if ttft is None else start + int(ttft * 1e6),
                parent=None,
            )
            if len(ended) >= batch:
                send()
        if ended:
            send()
    finally:
        exporter.shutdown()
    return sent
