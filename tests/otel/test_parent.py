"""The app's own TracerProvider (set globally, in a process of its own since global providers
are process-wide): httptrack's span sits inside the app's trace, under the span current when
the call began, and is made in the writer thread, never the app's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from .receiver import Receiver

APP = textwrap.dedent(
    """
    import json, sys, threading
    import httpx2, openai
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    import httptrack
    from httptrack._fake import mock_transport

    threads = {}

    class Where(SpanProcessor):
        def on_start(self, span, parent_context=None):
            threads[span.name] = threading.current_thread().name

    provider = TracerProvider(resource=Resource.create({"service.name": "the-app"}))
    provider.add_span_processor(Where())
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=sys.argv[2] + "/v1/traces")))
    trace.set_tracer_provider(provider)
    tracer = trace.get_tracer("app")

    transport = httptrack.TrackingTransport(
        mock_transport(httpx2), db=sys.argv[1], settings=httptrack.Settings(otel=True)
    )
    sdk = openai.OpenAI(api_key="sk-test", http_client=httpx2.Client(transport=transport))
    q = [{"role": "user", "content": "hi"}]
    with tracer.start_as_current_span("handle request") as outer:
        with tracer.start_as_current_span("inner step") as inner:
            inside = sdk.chat.completions.with_raw_response.create(model="gpt-4o", messages=q)
    outside = sdk.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=q)
    assert httptrack.flush()
    provider.shutdown()
    print(json.dumps({
        "trace_id": format(inner.get_span_context().trace_id, "032x"),
        "inner": format(inner.get_span_context().span_id, "016x"),
        "inside": inside.headers["x-httptrack-call-id"],
        "outside": outside.headers["x-httptrack-call-id"],
        "threads": threads,
    }))
    """
)


def test_a_call_span_is_a_child_of_the_apps_span(tmp_path: Path, receiver: Receiver) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HTTPTRACK")}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", APP, str(tmp_path / "calls.db"), receiver.url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert receiver.wait_for(lambda: len(receiver.spans) == 4), receiver.spans
    inside = receiver.span_for(seen["inside"])
    outside = receiver.span_for(seen["outside"])
    # Inside the app's trace, under the span current when the call began ...
    assert inside.trace_id == seen["trace_id"] and inside.parent_span_id == seen["inner"]
    assert inside.resource["service.name"] == "the-app"  # the app's provider, the app's resource
    # ... and a call with no span around it starts a trace of its own.
    assert outside.parent_span_id == "" and outside.trace_id != seen["trace_id"]
    # Made in the writer thread; the app's own spans in the app's.
    assert seen["threads"] == {
        "handle request": "MainThread",
        "inner step": "MainThread",
        "chat gpt-4o": "httptrack-writer",
        "chat gpt-4o-mini": "httptrack-writer",
    }


SCRIPT = textwrap.dedent(
    """
    import sys
    import httpx2, openai
    import httptrack
    from httptrack._fake import mock_transport

    transport = httptrack.TrackingTransport(mock_transport(httpx2), db=sys.argv[1], cache=False)
    sdk = openai.OpenAI(api_key="sk-test", http_client=httpx2.Client(transport=transport))
    made = sdk.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    print(made.headers["x-httptrack-call-id"])
    """
)


def test_a_script_that_ends_at_once_still_sends_its_span(tmp_path: Path, receiver: Receiver) -> None:
    """A script's one call, its end right after: the writer's first batch (and httptrack's own
    providers) come at interpreter exit, when the SDK can no longer make a thread pool."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HTTPTRACK")}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
    env["HTTPTRACK_OTEL"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "calls.db")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert receiver.wait_for(lambda: len(receiver.spans) == 1), done.stderr
    span = receiver.span_for(done.stdout.strip())
    assert span.resource["service.name"] == "otel-test-app"  # OTEL_SERVICE_NAME, as ever
