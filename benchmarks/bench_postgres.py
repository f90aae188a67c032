"""Rows per second into the call log from 1, 4 and 8 processes: Postgres beside SQLite, in
one run.

    python benchmarks/bench_postgres.py            # a couple of minutes
    python benchmarks/bench_postgres.py --quick    # a smoke run (seconds)

It starts its own throwaway PostgreSQL server (``initdb`` + ``pg_ctl`` in a temporary
folder, on a free loopback port: ``tests/pg_server.py``) and says so and stops if it cannot.

Each process makes ``--calls`` non-streaming chat completions through ``httpx2`` and a
``TrackingTransport`` to an in-memory inner transport (``MockTransport``), all recording
into one log (a SQLite file, or one Postgres database), then ``httptrack.flush()``: every
row goes the real way (spool, background writer, batched transactions). Figures: calls
recorded per second of wall time, from the moment all processes start (a barrier) to the
last one's flush, and the writer threads' CPU per row beside the app's. Every row is
counted in the log at the end (lost: 0). The processes share the machine's cores with
the database server, so past the core count the figure is the machine's, not the log's;
compare the engines within one run.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # measure this checkout's httptrack
sys.path.insert(0, str(ROOT / "tests"))  # the throwaway server

from _payloads import OPENAI_CHAT_COMPLETION  # noqa: E402

CHAT = "https://api.openai.com/v1/chat/completions"


def _writer_cpu() -> float:
    """CPU seconds of this process's httptrack writer thread (Linux: /proc)."""
    for thread in threading.enumerate():
        if thread.name == "httptrack-writer" and thread.native_id is not None:
            try:
                fields = (
                    Path(f"/proc/self/task/{thread.native_id}/stat").read_text().rsplit(")", 1)[1].split()
                )
                return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except OSError:
                return 0.0
    return 0.0


def _worker(db: str, calls: int, barrier: Any, out: Any) -> None:
    import httpx2

    import httptrack

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            200, headers={"content-type": "application/json"}, content=OPENAI_CHAT_COMPLETION
        )

    transport = httptrack.TrackingTransport(httpx2.MockTransport(handler), db=db, cache=False)
    client = httpx2.Client(transport=transport)
    counter = itertools.count()
    headers = {"authorization": "Bearer sk-bench"}

    def post() -> None:
        body = {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": f"question {next(counter)}"}],
        }
        client.post(CHAT, json=body, headers=headers).read()

    for _ in range(5):  # imports, the first connection, the schema: before the clock
        post()
    assert httptrack.flush(60)
    writer_before = _writer_cpu()
    barrier.wait(120)
    start = time.time()
    cpu = time.process_time()
    for _ in range(calls):
        post()
    flushed = httptrack.flush(120)
    out.put(
        {
            "start": start,
            "end": time.time(),
            "cpu": time.process_time() - cpu,
            "writer_cpu": _writer_cpu() - writer_before,
            "flushed": flushed,
        }
    )


def run(db: str, processes: int, calls: int) -> dict[str, float]:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    out = context.Queue()
    workers = [context.Process(target=_worker, args=(db, calls, barrier, out)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    try:
        results = [out.get(timeout=600) for _ in workers]
    finally:
        for worker in workers:
            worker.join(60)
    assert all(r["flushed"] for r in results), "a flush did not finish"
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    rows = processes * calls
    return {
        "rows_per_s": rows / wall,
        "app_us": sum(r["cpu"] - r["writer_cpu"] for r in results) / rows * 1e6,
        "writer_us": sum(r["writer_cpu"] for r in results) / rows * 1e6,
    }


def count_rows(db: str) -> int:
    if db.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db) as conn:
            row = conn.execute("SELECT count(*) FROM calls").fetchone()
            return int(row[0]) if row else 0
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM calls").fetchone()[0])
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls per process (default 3000)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per engine and process count")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 and 4 processes, 150 calls each")
    args = parser.parse_args()
    counts = (1, 4) if args.quick else (1, 4, 8)
    calls = 150 if args.quick else args.calls
    rounds = 1 if args.quick else args.rounds

    from pg_server import PostgresServer, ServerUnavailable

    server = PostgresServer()
    try:
        server.start()
    except ServerUnavailable as exc:
        print(f"bench_postgres: skipped, no PostgreSQL server could be started here: {exc}")
        return
    try:
        with tempfile.TemporaryDirectory(prefix="httptrack-bench-pg-") as tmp:
            os.environ["XDG_DATA_HOME"] = str(Path(tmp) / "xdg")  # the Postgres spools
            figures: dict[tuple[str, int], list[dict[str, float]]] = {}
            expected: dict[str, int] = {}
            for n in counts:
                for r in range(rounds):
                    for engine in ("sqlite", "postgres"):  # interleaved
                        if engine == "sqlite":
                            db = str(Path(tmp) / f"log-{n}-{r}.db")
                        else:
                            db = server.create_database(f"bench_{n}_{r}")
                        figures.setdefault((engine, n), []).append(run(db, n, calls))
                        expected[db] = n * (calls + 5)
            lost = {db: want - count_rows(db) for db, want in expected.items()}
            print(f"\nRows per second into one call log, {calls:,} calls per process (median of {rounds}):\n")
            print("| processes | SQLite rows/s | Postgres rows/s | Postgres ÷ SQLite "
                  "| writer CPU/row SQLite | writer CPU/row Postgres | app CPU/row |")  # fmt: skip
            print("|---:|---:|---:|---:|---:|---:|---:|")
            for n in counts:
                lite, pg = (
                    {k: statistics.median(f[k] for f in figures[(e, n)]) for k in figures[(e, n)][0]}
                    for e in ("sqlite", "postgres")
                )
                print(
                    f"| {n} | {lite['rows_per_s']:,.0f} | {pg['rows_per_s']:,.0f} | "
                    f"{pg['rows_per_s'] / lite['rows_per_s']:.2f}x | {lite['writer_us']:.0f} µs | "
                    f"{pg['writer_us']:.0f} µs | {statistics.mean([lite['app_us'], pg['app_us']]):.0f} µs |"
                )
            print(f"\nRows lost: {sum(lost.values())} (of {sum(expected.values()):,} written)")
            if any(lost.values()):
                raise SystemExit(f"rows lost: {lost}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
