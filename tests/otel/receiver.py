"""A real OTLP/HTTP receiver on 127.0.0.1 for the tests: a tiny ``http.server`` thread that
decodes ``/v1/traces`` and ``/v1/metrics`` with the official ``opentelemetry-proto``
messages and keeps what it got, as plain Python values."""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def value_of(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(value_of(v) for v in value.array_value.values)
    if kind == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


def attributes_of(attributes: Any) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in attributes}


@dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: list[tuple[str, int, dict[str, Any]]]
    status_code: int
    status_message: str
    resource: dict[str, Any]
    scope: str


@dataclass
class Point:
    metric: str
    unit: str
    attributes: dict[str, Any]
    count: int
    sum: float
    bounds: tuple[float, ...]


@dataclass
class Receiver:
    url: str
    spans: list[Span] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def wait_for(self, check: Callable[[], bool], timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return True
            time.sleep(0.05)
        return check()

    def span_for(self, call_id: str) -> Span:
        found = [s for s in self.spans if s.attributes.get("httptrack.call_id") == call_id]
        assert len(found) == 1, f"{len(found)} spans for {call_id}: {[s.name for s in self.spans]}"
        return found[0]


def _decode(body: bytes, encoding: str | None) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = _decode(
                self.rfile.read(int(self.headers["Content-Length"])), self.headers.get("Content-Encoding")
            )
            receiver.requests.append(self.path)
            receiver.headers.append({k.lower(): v for k, v in self.headers.items()})
            if self.path == "/v1/traces":
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    resource = attributes_of(resource_spans.resource.attributes)
                    for scope_spans in resource_spans.scope_spans:
                        for s in scope_spans.spans:
                            receiver.spans.append(
                                Span(
                                    name=s.name,
                                    trace_id=s.trace_id.hex(),
                                    span_id=s.span_id.hex(),
                                    parent_span_id=s.parent_span_id.hex(),
                                    kind=s.kind,
                                    start_ns=s.start_time_unix_nano,
                                    end_ns=s.end_time_unix_nano,
                                    attributes=attributes_of(s.attributes),
                                    events=[
                                        (e.name, e.time_unix_nano, attributes_of(e.attributes))
                                        for e in s.events
                                    ],
                                    status_code=s.status.code,
                                    status_message=s.status.message,
                                    resource=resource,
                                    scope=scope_spans.scope.name,
                                )
                            )
                reply = ExportTraceServiceResponse().SerializeToString()
            elif self.path == "/v1/metrics":
                request = ExportMetricsServiceRequest.FromString(body)
                for resource_metrics in request.resource_metrics:
                    for scope_metrics in resource_metrics.scope_metrics:
                        for metric in scope_metrics.metrics:
                            for p in metric.histogram.data_points:
                                receiver.points.append(
                                    Point(
                                        metric.name,
                                        metric.unit,
                                        attributes_of(p.attributes),
                                        p.count,
                                        p.sum,
                                        tuple(p.explicit_bounds),
                                    )
                                )
                reply = ExportMetricsServiceResponse().SerializeToString()
            else:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def serve() -> Iterator[Receiver]:
    """A receiver for the length of a ``with``/fixture (``yield`` from a fixture)."""
    rec = Receiver("")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(rec))
    rec.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
