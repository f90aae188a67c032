"""``HTTPTRACK_OTEL=1``: each call as a GenAI client span and metrics, from the writer thread.

The writer hands over each batch's built rows (:func:`export_batch`) after writing them; the
app's thread only noted, when the call began, the span that was current then
(:func:`current_span_getter`), so that the call's span sits inside the app's trace. A span
has the call's real start and end (``started_at`` and the measured latency), an event at the
first byte of a streamed answer, and the conventions' attributes (``_conventions``).

Providers: the app's global ``TracerProvider`` / ``MeterProvider`` when it set them; else
httptrack's own, configured as the SDK's standard variables say (``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``..._HEADERS``,
``OTEL_TRACES_EXPORTER=none`` ...): OTLP over HTTP, batched, flushed by ``httptrack.flush()``
and at exit. Any fault here is counted (``otel``) and never reaches a call or the writer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .._faults import report_fault
from ._conventions import (
    DETAILS_EVENT,
    DURATION_BOUNDARIES,
    FIRST_TOKEN_EVENT,
    TOKEN_BOUNDARIES,
    Conventions,
    conventions,
    error_type,
    message_attributes,
    metric_attributes,
    span_attributes,
    span_name,
)

if TYPE_CHECKING:
    from .._exchange import BuiltRow, Exchange

__all__ = ["SpanMaker", "current_span_getter", "export_batch", "flush", "reset", "shutdown"]

#: How long ``httptrack.flush()`` (and exit) waits for httptrack's own exporters, at most.
FLUSH_MILLIS = 3000


def current_span_getter() -> Callable[[], Any] | None:
    """For the app's thread (when otel is on): a function returning the current span's
    ``SpanContext`` (``None`` when there is none), or ``None`` without OpenTelemetry."""
    try:
        from opentelemetry.trace import get_current_span
    except ImportError:
        return None

    def current() -> Any:
        context = get_current_span().get_span_context()
        return context if context.is_valid else None

    return current


class SpanMaker:
    """Makes a call's span from its row (live here, and for ``httptrack export --format otlp``)."""

    def __init__(self, conv: Conventions) -> None:
        from opentelemetry.context import Context
        from opentelemetry.trace import NonRecordingSpan, SpanKind, Status, StatusCode, set_span_in_context

        self.conv = conv
        self._empty = Context()
        self._with_parent: Callable[[Any], Any] = lambda span_context: set_span_in_context(
            NonRecordingSpan(span_context)
        )
        self._client = SpanKind.CLIENT
        self._error_status: Callable[[str | None], Any] = lambda message: Status(StatusCode.ERROR, message)

    def make(
        self, tracer: Any, row: dict[str, Any], *, start: int, end: int, first_token: int | None, parent: Any
    ) -> None:
        """Start and end the span of ``row`` (times in ns since the epoch; ``parent``: the
        app's ``SpanContext`` when the call began, or ``None``: a trace of its own)."""
        conv = self.conv
        span = tracer.start_span(
            span_name(row),
            context=self._empty if parent is None else self._with_parent(parent),
            kind=self._client,
            attributes=span_attributes(row, conv),
            start_time=start,
        )
        ttft = row.get("ttft_ms")
        if first_token is not None and ttft is not None:
            span.add_event(FIRST_TOKEN_EVENT, {"httptrack.ttft_ms": ttft}, timestamp=first_token)
        if conv.content_on_span or conv.content_on_event:
            messages = message_attributes(row)
            if messages and conv.content_on_span:
                span.set_attributes(messages)
            if messages and conv.content_on_event:
                span.add_event(DETAILS_EVENT, messages, timestamp=end)
        if row.get("status") == "error":
            span.set_status(self._error_status(row.get("error_message") or error_type(row)))
        span.end(end_time=end)


class LiveExporter:
    """The tracer and instruments the writer emits through (one per process)."""

    def __init__(self) -> None:
        from opentelemetry import metrics, trace

        self.conv: Conventions = conventions()
        #: What this exporter made (and so flushes and shuts down); the app's are the app's.
        self.owned: list[Any] = []
        tracer_provider: Any = trace.get_tracer_provider()
        meter_provider: Any = metrics.get_meter_provider()
        app_traces = not isinstance(tracer_provider, trace.ProxyTracerProvider)
        app_metrics = type(meter_provider).__name__ != "_ProxyMeterProvider"
        # httptrack's own provider for a signal the app did not set up: when the app set up
        # neither, or the variables name an endpoint (an app that set up only tracing in code
        # does not get metrics sent to localhost:4318 that nothing receives).
        if not app_traces:
            own = not app_metrics or _endpoint_named("TRACES")
            tracer_provider = self._own_tracer_provider() if own else None
        if not app_metrics:
            own = not app_traces or _endpoint_named("METRICS")
            meter_provider = self._own_meter_provider() if own else None
        __version__ = _version()
        self.tracer = tracer_provider.get_tracer("httptrack", __version__) if tracer_provider else None
        meter = meter_provider.get_meter("httptrack", __version__) if meter_provider else None
        self.tokens = self.duration = None
        if meter is not None:
            self.tokens = meter.create_histogram(
                "gen_ai.client.token.usage",
                unit="{token}",
                description="Number of input and output tokens used.",
                explicit_bucket_boundaries_advisory=TOKEN_BOUNDARIES,
            )
            self.duration = meter.create_histogram(
                "gen_ai.client.operation.duration",
                unit="s",
                description="GenAI operation duration.",
                explicit_bucket_boundaries_advisory=DURATION_BOUNDARIES,
            )
        self.spans = SpanMaker(self.conv)

    def _own_tracer_provider(self) -> Any:
        import os

        if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
            return None
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        # Not shut down by the SDK's own atexit (it would run before httptrack's last rows
        # are written): httptrack's exit flushes the writer first, then this (shutdown()).
        provider = TracerProvider(resource=_resource(), shutdown_on_exit=False)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self.owned.append(provider)
        return provider

    def _own_meter_provider(self) -> Any:
        import os

        if os.environ.get("OTEL_METRICS_EXPORTER", "").strip().lower() == "none":
            return None
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        reader = PeriodicExportingMetricReader(OTLPMetricExporter())
        provider = MeterProvider(metric_readers=[reader], resource=_resource(), shutdown_on_exit=False)
        self.owned.append(provider)
        return provider

    def export(
        self, batch: Sequence[tuple[Exchange, BuiltRow]], pause: Callable[[], None] | None = None
    ) -> None:
        tracer = self.tracer
        for exchange, built in batch:
            if pause is not None:
                pause()  # the writer's short turns: an app thread waiting for the GIL gets it
            row = built.row
            start = int(exchange.started_at * 1e9)
            t0, t_end, t_first = exchange.t0, exchange.t_end, exchange.t_first
            end = start + int((t_end - t0) * 1e9) if t_end is not None else start
            if tracer is not None:
                self.spans.make(
                    tracer,
                    row,
                    start=start,
                    end=end,
                    first_token=None if t_first is None else start + int((t_first - t0) * 1e9),
                    parent=exchange.otel_parent,
                )
            self._record_metrics(row, (end - start) / 1e9)

    def _record_metrics(self, row: dict[str, Any], seconds: float) -> None:
        if self.duration is None or self.tokens is None:
            return
        attributes = metric_attributes(row, self.conv)
        error = error_type(row)
        self.duration.record(seconds, attributes if error is None else {**attributes, "error.type": error})
        # Billed tokens only: a cache hit cost none, and figures counted locally (the
        # provider sent none) are on the span, flagged, not in the usage metric.
        if row.get("cached") or row.get("tokens_estimated"):
            return
        for column, kind in (("input_tokens", "input"), ("output_tokens", "output")):
            value = row.get(column)
            if value is not None:
                self.tokens.record(value, {**attributes, "gen_ai.token.type": kind})

    def force_flush(self) -> None:
        _bounded(lambda: [provider.force_flush(FLUSH_MILLIS) for provider in self.owned], "flushed")

    def shutdown(self) -> None:
        _bounded(lambda: [provider.shutdown() for provider in self.owned], "flushed at exit")


def _bounded(work: Callable[[], object], what: str) -> None:
    """``work`` (the providers' flush or shutdown), waited for at most ``FLUSH_MILLIS``: an
    exporter's own timeout and retries against a collector that never answers take 10 s per
    signal and more, which would hold ``httptrack.flush()``, the writer and exit."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # raised below, on the caller's thread
            failed.append(exc)

    try:
        thread = threading.Thread(target=run, name="httptrack-otel-flush", daemon=True)
        thread.start()
    except RuntimeError:  # no new threads (the interpreter is shutting down): as it is
        work()
        return
    thread.join(FLUSH_MILLIS / 1000)
    if failed:
        raise failed[0]
    if thread.is_alive():
        report_fault(
            "otel",
            f"the OpenTelemetry collector did not take the spans and metrics within "
            f"{FLUSH_MILLIS / 1000:g} s when {what}: httptrack goes on (what the exporters "
            "still hold may not be sent; the calls are recorded)",
        )


def _resource() -> Any:
    """The SDK's resource for httptrack's own providers (``OTEL_SERVICE_NAME``,
    ``OTEL_RESOURCE_ATTRIBUTES`` and the SDK's detectors)."""
    from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource

    try:
        return Resource.create()
    except RuntimeError:
        # At interpreter exit (a script whose calls ended just before it did, so the writer's
        # first batch comes at exit): the SDK's detection runs in a thread pool, which can no
        # longer be made then. What the variables say, and the SDK's own attributes.
        from opentelemetry.sdk.version import __version__ as sdk_version

        resource = Resource(
            {
                "telemetry.sdk.language": "python",
                "telemetry.sdk.name": "opentelemetry",
                "telemetry.sdk.version": sdk_version,
            }
        ).merge(OTELResourceDetector().detect())
        if not resource.attributes.get(SERVICE_NAME):
            resource = resource.merge(Resource({SERVICE_NAME: "unknown_service"}))
        return resource


def _endpoint_named(signal: str) -> bool:
    import os

    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
    )


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("httptrack")
    except PackageNotFoundError:  # pragma: no cover - a source checkout
        return None


_lock = threading.Lock()
#: The process's exporter: ``None`` not made yet, ``False`` cannot be made (no OpenTelemetry).
_exporter: LiveExporter | bool | None = None


def _get() -> LiveExporter | None:
    global _exporter
    exporter = _exporter
    if exporter is None:
        with _lock:
            if _exporter is None:
                try:
                    _exporter = LiveExporter()
                except ImportError as exc:
                    _exporter = False
                    report_fault(
                        "otel",
                        "HTTPTRACK_OTEL is on but OpenTelemetry is not installed "
                        "(pip install 'httptrack[otel]'): no spans or metrics are sent",
                        exc,
                    )
            exporter = _exporter
    return exporter if isinstance(exporter, LiveExporter) else None


def export_batch(batch: Sequence[tuple[Exchange, BuiltRow]], pause: Callable[[], None] | None = None) -> None:
    """Emit the spans and metrics of a batch of recorded calls (the writer thread, which
    passes its ``pause``: called before each call's span)."""
    try:
        exporter = _get()
        if exporter is not None:
            exporter.export(batch, pause)
    except Exception as exc:
        report_fault("otel", "calls could not be sent to OpenTelemetry (they are recorded)", exc)


def flush() -> None:
    """Send what httptrack's own providers hold now (a no-op before the first export)."""
    exporter = _exporter
    if isinstance(exporter, LiveExporter):
        try:
            exporter.force_flush()
        except Exception as exc:
            report_fault("otel", "spans or metrics could not be flushed", exc)


def shutdown() -> None:
    """At exit, after the writer's last rows: flush and stop httptrack's own providers."""
    exporter = _exporter
    if isinstance(exporter, LiveExporter):
        try:
            exporter.shutdown()
        except Exception as exc:
            report_fault("otel", "spans or metrics could not be flushed at exit", exc)


def reset() -> None:
    """Forget the exporter (tests; the next export reads the environment again)."""
    global _exporter
    with _lock:
        exporter, _exporter = _exporter, None
    if isinstance(exporter, LiveExporter):
        exporter.shutdown()
