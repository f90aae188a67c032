"""OpenTelemetry export: what it adds per call, side by side with OpenLLMetry; and a large
Parquet export read back by DuckDB.

    python benchmarks/bench_otel.py            # 2,000 calls per variant, a 1M-row Parquet export
    python benchmarks/bench_otel.py --quick    # a smoke run (CI)
    python benchmarks/bench_otel.py --peer-python /work/peers-otel-venv/bin/python

**calls**: the same ``openai`` SDK chat completion (httpx2, an in-memory inner transport, a
new prompt per call) in a fresh process per variant, the process's whole CPU time (every
thread: the app's, httptrack's writer, the SDK's span and metric exporters) per call,
including the final flush of rows, spans and metrics. Spans and metrics go over real
OTLP/HTTP to a receiver in this process (its CPU is not counted). Variants:

- ``bare``: the SDK alone;
- ``httptrack, otel off`` / ``httptrack, otel on``: tracked (cache off), rows written; with
  ``HTTPTRACK_OTEL=1`` each call also a GenAI span and its metrics (httptrack's own
  providers from the ``OTEL_*`` variables), all made in the writer thread;
- ``openllmetry``: ``opentelemetry-instrumentation-openai`` (Traceloop) patching the SDK,
  with an SDK TracerProvider and MeterProvider exporting over OTLP/HTTP alike. It is run
  with ``--peer-python`` (a separate virtualenv that has it: never this one), beside a
  ``bare`` run of that interpreter; without it the row says "not installed".

Variants run interleaved in rounds; figures are medians over rounds (min–max beside).

**parquet**: a call log of N rows (1M; 20k with ``--quick``) written straight into the
schema, exported with ``httptrack export --format parquet``, read back by DuckDB: row
count and sums (tokens, cost, latency) must equal SQLite's. Rows per second of the export.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_PEER = Path("/work/peers-otel-venv/bin/python")

#: One process per variant and round: N calls after a warm-up, then every pending row, span
#: and metric flushed; prints the process's CPU seconds for the N calls.
WORKER = r"""
import json, os, resource, sys
mode, n, db = sys.argv[1], int(sys.argv[2]), sys.argv[3]
import httpx2, openai

ANSWER = {
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 14, "completion_tokens": 2, "total_tokens": 16},
}

def handler(request):
    return httpx2.Response(200, json=ANSWER, headers={"x-request-id": "req-1"})

inner = httpx2.MockTransport(handler)
flushes = []
if mode.startswith("httptrack"):
    import httptrack
    transport = httptrack.TrackingTransport(
        inner, db=db, cache=False, settings=httptrack.Settings(otel=mode == "httptrack-otel")
    )
    flushes.append(httptrack.flush)
else:
    transport = inner
if mode == "openllmetry":
    from opentelemetry import metrics, trace
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(tracer_provider)
    meter_provider = MeterProvider(metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())])
    metrics.set_meter_provider(meter_provider)
    OpenAIInstrumentor().instrument()
    flushes += [tracer_provider.force_flush, meter_provider.force_flush]

client = openai.OpenAI(api_key="sk-bench", http_client=httpx2.Client(transport=transport), max_retries=0)

def call(i):
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"What is the capital of France? ({i})"}]
    )

for i in range(50):
    call(-i)
for flush in flushes:
    flush()
usage = resource.getrusage(resource.RUSAGE_SELF)
before = usage.ru_utime + usage.ru_stime
for i in range(n):
    call(i)
for flush in flushes:
    flush()
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"cpu": usage.ru_utime + usage.ru_stime - before}))
"""


class _Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that accepts everything (an empty protobuf reply is valid)."""

    received: dict[str, int] = {}

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        _Sink.received[self.path] = _Sink.received.get(self.path, 0) + 1
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _run(python: str, mode: str, n: int, endpoint: str, folder: Path, round_: int) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HTTPTRACK", "OTEL_"))}
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_SERVICE_NAME="bench",
        TRACELOOP_TRACE_CONTENT="false",  # OpenLLMetry: no prompts, as httptrack by default
        PYTHONPATH=str(ROOT) if python == sys.executable else "",
    )
    db = folder / f"{mode}-{round_}.db"
    done = subprocess.run(
        [python, "-c", WORKER, mode, str(n), str(db)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=folder,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{done.stderr[-3000:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["cpu"]) / n * 1e6


def _peer_ok(python: Path) -> bool:
    if not python.exists():
        return False
    probe = subprocess.run(
        [str(python), "-c", "import openai, httpx2, opentelemetry.instrumentation.openai"],
        capture_output=True,
        timeout=120,
    )
    return probe.returncode == 0


def bench_calls(n: int, rounds: int, peer: Path | None) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    variants: list[tuple[str, str, str]] = [
        ("bare", sys.executable, "bare"),
        ("httptrack, otel off", sys.executable, "httptrack"),
        ("httptrack, otel on", sys.executable, "httptrack-otel"),
    ]
    has_peer = peer is not None and _peer_ok(peer)
    if has_peer:
        assert peer is not None
        variants += [("bare (peer venv)", str(peer), "bare"), ("openllmetry", str(peer), "openllmetry")]
    figures: dict[str, list[float]] = {label: [] for label, _, _ in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for label, python, mode in variants:
                figures[label].append(_run(python, mode, n, endpoint, Path(tmp), r))
    server.shutdown()
    med = {label: statistics.median(values) for label, values in figures.items()}
    print(
        f"\ncalls: openai SDK chat completion, {n:,} calls x {rounds} rounds, CPU µs per call (all threads)"
    )
    print(f"  {'variant':<24} {'µs/call':>9} {'range':>15} {'added':>9} {'x bare':>7}")
    for label, _, _ in variants:
        base = med["bare (peer venv)"] if label in ("openllmetry", "bare (peer venv)") else med["bare"]
        values = figures[label]
        added = med[label] - base
        print(
            f"  {label:<24} {med[label]:>9.0f} {min(values):>7.0f}–{max(values):<7.0f} "
            f"{added:>+9.0f} {med[label] / base:>7.2f}"
        )
    if not has_peer:
        note = "not installed (--peer-python: a venv with opentelemetry-instrumentation-openai)"
        print(f"  {'openllmetry':<24} {note}")
    print(
        f"  otel on adds {med['httptrack, otel on'] - med['httptrack, otel off']:+.0f} µs/call over otel off "
        f"(OTLP requests received: {dict(sorted(_Sink.received.items()))})"
    )


# -- parquet -------------------------------------------------------------------------------------


def make_log(path: Path, n: int) -> None:
    from httptrack._exchange import new_call_id
    from httptrack.log._schema import COLUMN_NAMES
    from httptrack.log._sqlite import connect, migrate

    rng = random.Random(5)
    conn = connect(path)
    migrate(conn)
    conn.execute("PRAGMA synchronous=OFF")
    insert = f"INSERT INTO calls ({', '.join(COLUMN_NAMES)}) VALUES ({', '.join('?' * len(COLUMN_NAMES))})"
    index = {c: i for i, c in enumerate(COLUMN_NAMES)}
    base = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    blank = [None] * len(COLUMN_NAMES)
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello " * 40}]})
    batch = []
    for i in range(n):
        ts = base + i * 2.5
        row = list(blank)
        values = {
            "id": new_call_id(ts),
            "started_at": datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "provider": "openai" if i % 3 else "anthropic",
            "host": "api.openai.com",
            "operation": "chat",
            "model": ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5")[i % 3],
            "status": "error" if i % 50 == 0 else "success",
            "input_tokens": rng.randrange(1, 4000),
            "output_tokens": rng.randrange(0, 800),
            "cost_usd": rng.random() / 100,
            "latency_ms": rng.uniform(80, 4000),
            "cached": int(i % 10 == 0),
            "user": f"user-{i % 300}",
            "properties": '{"feature": "faq"}' if i % 4 == 0 else None,
            "request_body": body,
            "response_text": "Paris is the capital of France.",
        }
        for key, value in values.items():
            row[index[key]] = value
        batch.append(row)
        if len(batch) == 50_000 or i == n - 1:
            conn.execute("BEGIN")
            conn.executemany(insert, batch)
            conn.execute("COMMIT")
            batch.clear()
    conn.close()


def bench_parquet(n: int) -> None:
    import duckdb
    from click.testing import CliRunner

    from httptrack.cli import main as cli

    figures = "count(*), sum(input_tokens), sum(output_tokens), sum(cost_usd), sum(latency_ms), sum(cached)"
    with tempfile.TemporaryDirectory() as tmp:
        db, out = Path(tmp) / "big.db", Path(tmp) / "big.parquet"
        t0 = time.perf_counter()
        make_log(db, n)
        made = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = CliRunner().invoke(cli, ["export", "--format", "parquet", "-o", str(out), "--db", str(db)])
        seconds = time.perf_counter() - t0
        if result.exit_code != 0:
            raise RuntimeError(result.output)
        with sqlite3.connect(db) as conn:
            expected = conn.execute(f"SELECT {figures} FROM calls").fetchone()
        t0 = time.perf_counter()
        got = duckdb.connect().execute(f"SELECT {figures} FROM '{out}'").fetchone()
        read = time.perf_counter() - t0
        assert got is not None
        equal = (
            got[:3] == expected[:3]
            and got[5] == expected[5]
            and all(abs(got[i] - expected[i]) <= 1e-9 * abs(expected[i]) for i in (3, 4))
        )
        size = out.stat().st_size
    print(f"\nparquet: {n:,} calls (log made in {made:.1f} s)")
    print(f"  export --format parquet  {seconds:7.1f} s  {n / seconds:>10,.0f} rows/s  {size / 1e6:8.1f} MB")
    verdict = "yes" if equal else "NO"
    print(f"  DuckDB reads it back     {read:7.2f} s  count and sums equal to SQLite's: {verdict}")
    if not equal:
        print(f"  SQLite {expected}\n  DuckDB {got}")
        raise SystemExit(1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run (CI)")
    parser.add_argument("--calls", type=int, help="calls per variant and round")
    parser.add_argument("--rounds", type=int, help="rounds (each variant once per round)")
    parser.add_argument("--rows", type=int, help="rows of the Parquet export")
    parser.add_argument(
        "--peer-python",
        type=Path,
        default=DEFAULT_PEER,
        help=f"an interpreter with opentelemetry-instrumentation-openai (default {DEFAULT_PEER})",
    )
    parser.add_argument("--only", help="calls,parquet")
    args = parser.parse_args(argv)
    only = set((args.only or "calls,parquet").split(","))
    if "calls" in only:
        calls = args.calls or (200 if args.quick else 2000)
        bench_calls(calls, args.rounds or (1 if args.quick else 5), args.peer_python)
    if "parquet" in only:
        bench_parquet(args.rows or (20_000 if args.quick else 1_000_000))


if __name__ == "__main__":
    main()
