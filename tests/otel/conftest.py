"""Fixtures of the OpenTelemetry tests: a receiver, and httptrack's exporter made anew."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .receiver import Receiver, serve


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """An OTLP/HTTP receiver, and the standard variables pointing httptrack's own providers
    at it (metrics exported every 100 ms); httptrack's exporter is made anew for the test."""
    from httptrack.otel import _live

    for name in ("OTEL_SEMCONV_STABILITY_OPT_IN", "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"):
        monkeypatch.delenv(name, raising=False)
    for rec in serve():
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rec.url)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "otel-test-app")
        monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "100")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        _live.reset()
        try:
            yield rec
        finally:
            _live.reset()
