"""OpenTelemetry: a call as a GenAI client span and metrics (the semantic conventions' names).

- ``_conventions``: a ``calls`` row → span name, attributes, events, metric attributes
  (pure: no OpenTelemetry import), and which version of the conventions to follow
  (``OTEL_SEMCONV_STABILITY_OPT_IN``) and whether prompts and answers go along
  (``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``).
- ``_live``: ``HTTPTRACK_OTEL=1`` — the writer thread emits each batch's spans and metrics
  through the app's providers, or its own built from the ``OTEL_*`` variables.
- ``_backfill``: ``httptrack export --format otlp``: stored calls as spans, original times.

The OpenTelemetry packages are an optional extra (``pip install 'httptrack[otel]'``); nothing
here is imported with ``httptrack``.
"""

from __future__ import annotations

__all__: list[str] = []
