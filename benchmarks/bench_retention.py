"""The call log's storage side on a big log: body compression, pruning, the writer's cost
per row as the log grows, the write-ahead log under busy readers, stats and export.

    python benchmarks/bench_retention.py                    # 100,000 calls; 1M for the writer
    python benchmarks/bench_retention.py --rows 1000000 --big /work/bigdb/plain-1m.db
    python benchmarks/bench_retention.py --quick            # CI: a few thousand calls, seconds

Sections (CPU time of this process, steady on a shared machine; sizes in MB):

1. compression: the same calls (``bench_log``'s generator: chat JSON bodies of 0.5-3 KB,
   errors, embeddings; streams' responses as the SSE they arrive as) written as text and
   as the writer now stores them.
2. prune: ``prune --max-size`` to half the log, and ``HTTPTRACK_RETENTION`` steps.
3. writer: ``Store.write`` CPU per row (batches of 50: compress, insert, search index,
   rollups) into an empty log and into a copy of the big log.
4. WAL: its peak size while two readers take turns holding snapshots (there is always
   one), with the writer's restart policy and without it.
5. stats --by each dimension (from the rollups) and export rows/s against a bare
   ``SELECT`` loop over the same rows.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_log import _rows, generate  # noqa: E402

from httptrack.log import _sqlite  # noqa: E402
from httptrack.log._bodies import Compressor  # noqa: E402
from httptrack.log._schema import COLUMN_NAMES  # noqa: E402

_ID = COLUMN_NAMES.index("id")


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def _files(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def _fresh_rows(n: int, seed: int) -> Iterator[tuple[Any, ...]]:
    """``n`` realistic calls with new ids (another seed: none collides with the big log's)."""
    from httptrack._exchange import new_call_id

    for row in realistic_rows(n, seed=seed):
        values = list(row)
        values[_ID] = new_call_id()
        yield tuple(values)


# -- 1. compression ---------------------------------------------------------------------------

_AT = {name: i for i, name in enumerate(COLUMN_NAMES)}


def _sse(model: str, text: str) -> str:
    """An OpenAI chat stream as it arrives: a chunk per few words, usage, ``[DONE]``."""
    import json

    words = text.split(" ")
    events = []
    for i in range(0, len(words), 3):
        piece = " ".join(words[i : i + 3]) + " "
        chunk = {
            "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
            "object": "chat.completion.chunk",
            "created": 1741569952,
            "model": model,
            "system_fingerprint": "fp_06737a9306",
            "choices": [{"index": 0, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}],
        }
        events.append("data: " + json.dumps(chunk, separators=(",", ":")))
    events.append('data: {"id":"chatcmpl-x","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":12}}')
    events.append("data: [DONE]")
    return "\n\n".join(events) + "\n\n"


def realistic_rows(n: int, seed: int = 7) -> Iterator[tuple[Any, ...]]:
    """``bench_log``'s calls, a stream's response body as the SSE it was (they are JSON there)."""
    stream, body, text, model = _AT["stream"], _AT["response_body"], _AT["response_text"], _AT["model"]
    for row in _rows(n, seed=seed):
        if row[stream] and row[text]:
            values = list(row)
            values[body] = _sse(row[model], row[text])
            row = tuple(values)
        yield row


def bench_compression(folder: Path, n: int) -> tuple[Path, Path]:
    import bench_log

    plain = folder / "plain.db"
    packed = folder / "compressed.db"
    compressor = Compressor()
    original = bench_log._rows
    try:
        bench_log._rows = realistic_rows  # type: ignore[assignment]
        generate(plain, n)
        bench_log._rows = lambda count, seed=7: iter(compressor.rows(list(realistic_rows(count, seed))))  # type: ignore[assignment]
        generate(packed, n)
    finally:
        bench_log._rows = original  # type: ignore[assignment]
    conn = sqlite3.connect(plain)
    (bodies,) = conn.execute(
        "SELECT sum(coalesce(length(request_body), 0) + coalesce(length(response_body), 0)) FROM calls"
    ).fetchone()
    conn.close()
    conn = sqlite3.connect(packed)
    (stored, blobs) = conn.execute(
        "SELECT sum(coalesce(length(request_body), 0) + coalesce(length(response_body), 0)), "
        "sum(typeof(request_body) = 'blob') FROM calls"
    ).fetchone()
    conn.close()
    a, b = _files(plain), _files(packed)
    print(f"\n1. Compression, {n:,} calls (bodies of at least 512 bytes as zstd level 3):\n")
    print("| | as text | compressed | saved |\n|---|---:|---:|---:|")
    print(f"| request + response bodies | {_mb(bodies)} | {_mb(stored)} | {1 - stored / bodies:.0%} |")
    print(f"| database file | {_mb(a)} | {_mb(b)} | {1 - b / a:.0%} |")
    print(f"| per call | {a / n:,.0f} B | {b / n:,.0f} B | |")
    print(f"\n({blobs:,} of {n:,} request bodies stored compressed)")
    return plain, packed


# -- 2. prune -----------------------------------------------------------------------------------


def bench_prune(db: Path, n: int) -> None:
    from httptrack._settings import Retention
    from httptrack.log._maintenance import log_bytes, prune
    from httptrack.log._retention import STEP_ROWS, retention_step

    work = db.with_name("prune.db")
    shutil.copy(db, work)
    used = log_bytes(work)
    t0, c0 = time.perf_counter(), time.process_time()
    result = prune(work, max_size=used // 2)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    touched = result.size_bodies + result.size_calls
    print(f"\n2. Prune, {n:,} calls:\n")
    print("| what | calls | wall | CPU | calls/s (CPU) |\n|---|---:|---:|---:|---:|")
    print(
        f"| prune --max-size {_mb(used // 2)} (from {_mb(used)}): {result.size_bodies:,} bodies dropped, "
        f"{result.size_calls:,} calls deleted, now {_mb(result.used_after)} | {touched:,} "
        f"| {wall:.2f} s | {cpu:.2f} s | {touched / max(cpu, 1e-9):,.0f} |"
    )
    shutil.copy(db, work)
    conn = _sqlite.connect(work)
    policy = Retention(bodies=30 * 86400, rows=60 * 86400)
    steps = done = 0
    step_cpu: list[float] = []
    while steps < 20_000:
        c0 = time.process_time()
        with _sqlite.write_transaction(conn):
            changed = retention_step(conn, policy)
        step_cpu.append(time.process_time() - c0)
        if not changed:
            break
        steps += 1
        done += changed
    conn.close()
    step_cpu.sort()
    worst = step_cpu[int(len(step_cpu) * 0.99)] if step_cpu else 0.0
    print(
        f"| HTTPTRACK_RETENTION=bodies=30d;rows=60d: {steps:,} steps of <= {STEP_ROWS} calls, "
        f"p99 step {worst * 1000:.1f} ms CPU | {done:,} | | {sum(step_cpu):.2f} s "
        f"| {done / max(sum(step_cpu), 1e-9):,.0f} |"
    )
    for suffix in ("", "-wal", "-shm"):
        Path(f"{work}{suffix}").unlink(missing_ok=True)


# -- 3. the writer's cost per row ------------------------------------------------------------


def writer_cpu(db: Path, rows: list[tuple[Any, ...]], batch: int = 50) -> float:
    """CPU seconds per row that ``Store.write`` takes for ``rows`` (batches of ``batch``),
    the search index and rollups brought up to date as the writer does."""
    store = _sqlite.Store(db)
    store.open()
    store.write(rows[:batch])  # warm: statements prepared, pages of the indexes cached
    store.catch_up()
    c0 = time.process_time()
    for i in range(batch, len(rows), batch):
        store.write(rows[i : i + batch])
    store.catch_up()
    cpu = time.process_time() - c0
    store.close()
    return cpu / (len(rows) - batch)


def bench_writer(folder: Path, big: Path | None, calls: int) -> None:
    rows = list(_fresh_rows(calls, seed=11))
    empty = folder / "empty.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{empty}{suffix}").unlink(missing_ok=True)
    results = [("empty log", writer_cpu(empty, rows))]
    if big is not None and big.exists():
        copy = folder / "big-copy.db"
        shutil.copy(big, copy)
        conn = sqlite3.connect(copy)
        (count,) = conn.execute("SELECT count(*) FROM calls").fetchone()
        conn.close()
        results.append((f"log of {count:,} calls", writer_cpu(copy, rows)))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{copy}{suffix}").unlink(missing_ok=True)
    print(f"\n3. Writer: Store.write CPU per row, {calls:,} realistic rows in batches of 50:\n")
    print("| log | CPU per row | vs empty |\n|---|---:|---:|")
    base = results[0][1]
    for name, cpu in results:
        print(f"| {name} | {cpu * 1e6:,.0f} us | {cpu / base:.2f}x |")


# -- 4. the WAL under busy readers ------------------------------------------------------------


def wal_peak(db: Path, rows: list[tuple[Any, ...]], *, bounded: bool, hold: float = 0.05) -> int:
    """The biggest the WAL gets while ``rows`` are written (batches of 50) and two readers
    take turns holding a read snapshot for ``hold`` seconds, overlapping (always one)."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    store = _sqlite.Store(db)
    store.open()
    if not bounded:
        store._wal_checked_at = float("inf")  # never: SQLite's own checkpoints only
    stop = threading.Event()

    def reader(offset: float) -> None:
        conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        time.sleep(offset)
        while not stop.is_set():
            conn.execute("BEGIN")
            conn.execute("SELECT count(*) FROM calls_rollup").fetchone()  # the snapshot starts here
            time.sleep(hold)
            conn.execute("COMMIT")
            time.sleep(hold / 4)
        conn.close()

    threads = [threading.Thread(target=reader, args=(d,)) for d in (0.0, 0.6 * 0.05)]
    for t in threads:
        t.start()
    peak = 0
    wal = Path(f"{db}-wal")
    try:
        for i in range(0, len(rows), 50):
            store.write(rows[i : i + 50])
            if not bounded:
                store._wal_checked_at = float("inf")
            peak = max(peak, wal.stat().st_size if wal.exists() else 0)
    finally:
        stop.set()
        for t in threads:
            t.join()
        store.close()
    return peak


def bench_wal(folder: Path, calls: int) -> None:
    rows = list(_fresh_rows(calls, seed=13))
    db = folder / "wal.db"
    without = wal_peak(db, rows, bounded=False)
    with_ = wal_peak(db, rows, bounded=True)
    print(f"\n4. WAL peak while {calls:,} calls are written and two readers always hold a snapshot:\n")
    print("| policy | WAL peak |\n|---|---:|")
    print(f"| SQLite's checkpoints only (before) | {_mb(without)} |")
    print(f"| + RESTART checkpoint past {_mb(_sqlite.WAL_LIMIT_BYTES)}, journal_size_limit | {_mb(with_)} |")


# -- 5. stats and export ---------------------------------------------------------------------


def bench_reading(db: Path) -> None:
    import io

    from httptrack.cli._export import _write
    from httptrack.log._reader import STATS_GROUPS, Log

    print(f"\n5. Reading {db.name}: stats --by each dimension (median of 3, CPU), export:\n")
    print("| question | CPU |\n|---|---:|")
    with Log(db) as log:
        for by in [None, *STATS_GROUPS]:
            times = []
            for _ in range(3):
                c0 = time.process_time()
                log.stats_and_totals(by=by) if by else log.totals()
                times.append(time.process_time() - c0)
            print(f"| stats --by {by or '(totals)'} | {sorted(times)[1] * 1000:,.0f} ms |")
        conn = log._conn
        (n,) = conn.execute("SELECT count(*) FROM calls").fetchone()
        limit = min(n, 100_000)
        c0 = time.process_time()
        cursor = conn.execute(f"SELECT * FROM calls ORDER BY started_at LIMIT {limit}")
        for _ in cursor:
            pass
        bare = limit / (time.process_time() - c0)
        c0 = time.process_time()
        rows = log.rows(newest_first=False, limit=limit, columns=list(COLUMN_NAMES), decode_json=True)
        _write(io.StringIO(), "jsonl", list(COLUMN_NAMES), rows)
        jsonl = limit / (time.process_time() - c0)
        c0 = time.process_time()
        rows = log.rows(newest_first=False, limit=limit, columns=list(COLUMN_NAMES))
        _write(io.StringIO(), "csv", list(COLUMN_NAMES), rows)
        csv_rate = limit / (time.process_time() - c0)
    print(f"\nExport of {limit:,} calls, rows per CPU-second:\n")
    print("| | rows/s |\n|---|---:|")
    print(f"| bare SELECT * loop (the bodies as stored) | {bare:,.0f} |")
    print(f"| export --format jsonl | {jsonl:,.0f} |")
    print(f"| export --format csv | {csv_rate:,.0f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000, help="calls in the generated logs")
    parser.add_argument("--big", type=Path, default=None, help="a big log (bench_log.py's) for the writer")
    parser.add_argument("--writer-rows", type=int, default=10_000)
    parser.add_argument("--folder", type=Path, default=None, help="where the scratch logs go")
    parser.add_argument("--quick", action="store_true", help="CI: 3,000 calls, each section once")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.writer_rows = 3_000, 1_000
    scratch = None
    if args.folder is None:
        scratch = tempfile.TemporaryDirectory(prefix="httptrack-bench-retention-")
        args.folder = Path(scratch.name)
    args.folder.mkdir(parents=True, exist_ok=True)
    print(f"{os.cpu_count()} CPUs, SQLite {sqlite3.sqlite_version}, Python {sys.version.split()[0]}")
    _, packed = bench_compression(args.folder, args.rows)
    bench_prune(packed, args.rows)
    bench_writer(args.folder, args.big, args.writer_rows)
    bench_wal(args.folder, args.writer_rows * 2)
    bench_reading(args.big if args.big is not None and args.big.exists() else packed)
    if scratch is not None:
        scratch.cleanup()


if __name__ == "__main__":
    main()
