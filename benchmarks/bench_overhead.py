"""What tracking costs an app, side by side with the same calls untracked, in one run.

    python benchmarks/bench_overhead.py            # a few minutes
    python benchmarks/bench_overhead.py --quick    # a smoke run (seconds)
    python benchmarks/bench_overhead.py --only calls,streams

Every call goes to an in-memory inner transport (``MockTransport``: no sockets), so what is
measured is the client stack plus httptrack, and httptrack's share is as large as it can
ever be (a real LLM call takes 100 ms to minutes; here a bare call takes ~0.1 ms).

Sections:

- **calls**: a non-streaming chat completion (a new prompt every call, as in real use),
  through ``httpx``, ``httpx2`` and the ``openai`` SDK (over httpx2). Variants: ``bare`` (no
  httptrack), ``tracked, cache off`` and ``tracked, defaults`` (the cache on, as users get
  it: every call a miss, looked up, then stored). Rows are fully written: each round of
  calls ends with ``httptrack.flush()`` inside the timed span, so parsing, pricing, the
  insert and storing to the cache are all counted. ``app thread only`` is the tracked call
  with the writer stubbed out: what runs on the app's own thread (the spool append
  included). Also the app thread's own CPU time per call (``time.thread_time``) with the
  real writer running: the writer's work runs in its own thread and is not in that figure.
- **streams**: time to first chunk (inner transport hands over the first chunk → the app
  receives it) and the cost per chunk, bare vs tracked.
- **spool**: what the crash-safe spool costs the app's thread: one append per call (a chat
  call, a stream of 100 chunks), and the ``openai`` SDK call's app-thread CPU with and
  without it, alternated call by call.
- **writer**: rows per second the background writer sustains (exchanges queued at once,
  then flushed), and what a row costs in each step (building it, inserting it, the search
  index and rollup catch-up).
- **burst**: 100,000 calls as fast as one thread can make them, in a fresh process: rows
  written, calls dropped, peak memory (RSS) and the writer's queue; then the same with a
  queue cap (``max_queue``) small enough to be hit, to show the drop policy.
- **contention**: a call's latency (p50/p99) while the writer is busy with a backlog,
  against the same call with the writer idle: what sharing the GIL with the writer costs.

Variants run interleaved in rounds (so drift on a busy machine hits them alike); figures
are medians over rounds, with the spread (min–max of the round figures) beside them.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # measure this checkout's httptrack

from _payloads import OPENAI_CHAT_COMPLETION, openai_chat_stream  # noqa: E402

import httptrack  # noqa: E402
from httptrack.record._writer import writer  # noqa: E402

API = "https://api.openai.com/v1"
CHAT = f"{API}/chat/completions"
HEADERS = {"authorization": "Bearer sk-bench"}
_counter = itertools.count()


def chat_request() -> dict[str, Any]:
    """A new prompt every call: real prompts do not repeat (and a repeat would be a cache hit)."""
    return {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "user", "content": f"What is the capital of France? (question {next(_counter)})"}
        ],
    }


CHAT_BODY = OPENAI_CHAT_COMPLETION
RESPONSE_HEADERS = {"content-type": "application/json", "x-request-id": "req_bench"}


def sse_chunks(count: int) -> list[bytes]:
    """An OpenAI-style chat stream of ``count`` chunks (one event each), usage and [DONE] last."""
    return openai_chat_stream([f" word{i}" for i in range(max(0, count - 4))], completion_tokens=count)


def mock(lib: Any, stream: list[bytes] | None = None, marks: list[int] | None = None) -> Any:
    """The in-memory provider: a fixed chat answer (or ``stream`` as chunks, noting in
    ``marks`` when the first chunk is handed over)."""

    class Chunks(lib.SyncByteStream):  # type: ignore[misc]
        def __iter__(self) -> Iterator[bytes]:
            assert stream is not None
            first = True
            for chunk in stream:
                if first and marks is not None:
                    marks.append(time.perf_counter_ns())
                first = False
                yield chunk

    def handler(request: Any) -> Any:
        if stream is not None:
            return lib.Response(200, headers={"content-type": "text/event-stream"}, stream=Chunks())
        return lib.Response(200, headers=RESPONSE_HEADERS, stream=lib.ByteStream(CHAT_BODY))

    return lib.MockTransport(handler)


def _discard(exchange: Any) -> None:
    pass


_spooled = [0]


def _spool_only(exchange: Any) -> None:
    """What ``Writer.submit`` does on the app's thread for durability (the spool append),
    without the queue: the record is released at once and the file emptied now and then."""
    shared = writer()
    db = exchange.settings.db
    spool = shared._spools[db] if db in shared._spools else shared._open_spool(db)
    if spool is not None:
        spool.release(spool.append(exchange))
        _spooled[0] += 1
        if _spooled[0] % 1000 == 0:
            spool.tidy()


class stubbed_writer:
    """Within the block, finished calls are not recorded: what is left is the tracking done
    on the app's own thread (the spool append included, unless ``spool=False``)."""

    def __init__(self, *, spool: bool = True) -> None:
        self.spool = spool

    def __enter__(self) -> None:
        writer().submit = _spool_only if self.spool else _discard  # type: ignore[method-assign]

    def __exit__(self, *exc: object) -> None:
        del writer().submit


def spread(values: list[float]) -> str:
    return f"{min(values):.1f}–{max(values):.1f}"


# -- calls ----------------------------------------------------------------------------------


def call_variants(folder: Path) -> dict[str, dict[str, Callable[[], Any]]]:
    """stack → variant → one call."""
    stacks: dict[str, dict[str, Callable[[], Any]]] = {}

    def tracking(lib: Any, name: str, cache: bool) -> Any:
        options: dict[str, Any] = {"cache_dir": folder / f"{name}-cache"} if cache else {"cache": False}
        return httptrack.TrackingTransport(mock(lib), db=folder / f"{name}-{cache}.db", **options)

    def stubbed(call: Callable[[], Any]) -> Callable[[], Any]:
        def app_only() -> Any:
            with stubbed_writer():
                return call()

        return app_only

    for lib in (httpx, httpx2):
        name = lib.__name__

        def raw(transport: Any, lib: Any = lib) -> Callable[[], Any]:
            client = lib.Client(transport=transport, headers=HEADERS)
            return lambda: client.post(CHAT, json=chat_request()).content

        stacks[f"{name} client.post()"] = {
            "bare": raw(mock(lib)),
            "tracked, cache off": raw(tracking(lib, name, False)),
            "tracked, defaults": raw(tracking(lib, name, True)),
            "app thread only, cache off": stubbed(raw(tracking(lib, name, False))),
            "app thread only, defaults": stubbed(raw(tracking(lib, f"{name}-stubbed", True))),
        }

    def create(transport: Any) -> Callable[[], Any]:
        sdk = openai.OpenAI(api_key="sk-bench", max_retries=0, http_client=httpx2.Client(transport=transport))
        return lambda: sdk.chat.completions.create(**chat_request()).choices[0].message.content

    stacks["openai chat.completions.create()"] = {
        "bare": create(mock(httpx2)),
        "tracked, cache off": create(tracking(httpx2, "sdk", False)),
        "tracked, defaults": create(tracking(httpx2, "sdk", True)),
        "app thread only, cache off": stubbed(create(tracking(httpx2, "sdk", False))),
        "app thread only, defaults": stubbed(create(tracking(httpx2, "sdk-stubbed", True))),
    }
    return stacks


Samples = dict[str, dict[str, list[float]]]


def cpu_phase(
    bare: Callable[[], Any], tracked: Callable[[], Any], rounds: int, calls: int
) -> tuple[float, float, float]:
    """Bare and tracked calls alternated one by one (so both meet the machine in the same
    state), the writer flushed at the end of each round. Returns median µs per call of the
    app thread's CPU (bare, tracked) and of the writer's CPU per tracked call."""
    bare_cpu, tracked_cpu, writer_cpu = [], [], []
    clock = time.thread_time
    for _ in range(rounds):
        gc.collect()
        spent = [0.0, 0.0]
        process, thread = time.process_time(), clock()
        for _ in range(calls):
            start = clock()
            bare()
            middle = clock()
            tracked()
            spent[0] += middle - start
            spent[1] += clock() - middle
        httptrack.flush()
        # Everything the process spent beyond this thread's time is the writer's.
        writer_cpu.append(((time.process_time() - process) - (clock() - thread)) / calls * 1e6)
        bare_cpu.append(spent[0] / calls * 1e6)
        tracked_cpu.append(spent[1] / calls * 1e6)
    return statistics.median(bare_cpu), statistics.median(tracked_cpu), statistics.median(writer_cpu)


def bench_calls(folder: Path, rounds: int, calls: int) -> None:
    stacks = call_variants(folder)
    for variants in stacks.values():  # warm up: imports, the writer, price data, the cache folder
        for call in variants.values():
            for _ in range(20):
                call()
    httptrack.flush()

    print(f"CPU time per call: each variant alternated call by call with bare, {rounds} rounds of {calls}\n")
    head = (
        f"{'stack':34} {'variant':27} {'bare':>7} {'app thread':>10} {'+ writer':>9} {'= total':>8} "
        f"{'x bare':>7} {'app thread +':>13}"
    )
    print(head)
    print("-" * len(head))
    for stack, variants in stacks.items():
        for variant, call in variants.items():
            if variant == "bare":
                continue
            bare_cpu, app, wrote = cpu_phase(variants["bare"], call, rounds, calls)
            if "only" in variant:
                wrote = 0.0  # nothing recorded (what the process spent beyond the thread is noise)
            total = app + wrote
            print(
                f"{stack:34} {variant:27} {bare_cpu:7.1f} {app:10.1f} {wrote:9.1f} {total:8.1f} "
                f"{total / bare_cpu:6.2f}x {app - bare_cpu:+11.1f}µs"
            )
    print(
        "\n(µs of CPU per call, medians over rounds. bare: the same stack with no httptrack, measured\n"
        " in the same rounds; app thread: the calling thread; + writer: the background writer's CPU per\n"
        " call (parse, price, redact, insert, index, cache store); 'app thread only': writer stubbed out.)\n"
    )

    wall: Samples = {s: {v: [] for v in vs} for s, vs in stacks.items()}
    block = calls
    for r in range(rounds):
        for stack, variants in stacks.items():
            names = list(variants)
            names = names[r % len(names) :] + names[: r % len(names)]  # rotate: no variant always first
            for variant in names:
                call = variants[variant]
                gc.collect()
                start = time.perf_counter()
                for _ in range(block):
                    call()
                if variant.startswith("tracked"):
                    httptrack.flush()  # the rows of these calls are written inside the timed span
                wall[stack][variant].append((time.perf_counter() - start) / block * 1e6)
    print(
        f"Wall time per call, the writer's work flushed inside the span: {rounds} rounds of {block} calls "
        "per variant,\ninterleaved; the median of each round's ratio to bare, and its quartiles\n"
    )
    head = f"{'stack':34} {'variant':27} {'wall µs':>8} {'x bare':>7} {'(quartiles)':>13}"
    print(head)
    print("-" * len(head))
    for stack, samples in wall.items():
        for variant, values in samples.items():
            ratios = sorted(v / b for v, b in zip(values, samples["bare"], strict=True))
            q1, q3 = ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]
            print(
                f"{stack:34} {variant:27} {statistics.median(values):8.1f} {statistics.median(ratios):6.2f}x "
                f"{f'({q1:.2f}–{q3:.2f})':>13}"
            )
    print()


# -- streams --------------------------------------------------------------------------------


def bench_streams(folder: Path, rounds: int, calls: int) -> None:
    lengths = (10, 1010)
    marks: list[int] = []
    clients: dict[str, dict[int, Any]] = {"bare": {}, "tracked": {}}
    for n in lengths:
        chunks = sse_chunks(n)
        clients["bare"][n] = httpx2.Client(transport=mock(httpx2, chunks, marks))
        clients["tracked"][n] = httpx2.Client(
            transport=httptrack.TrackingTransport(
                mock(httpx2, chunks, marks), db=folder / "streams.db", cache=False
            )
        )
    body = json.dumps(
        {"model": "gpt-4o-mini", "messages": [], "stream": True, "stream_options": {"include_usage": True}}
    )

    def one(client: Any) -> tuple[int, int, int]:
        """(ns to the whole stream, ns request → first chunk, ns inner hand-over → app)"""
        start = time.perf_counter_ns()
        with client.stream(
            "POST", CHAT, content=body, headers={"content-type": "application/json"}
        ) as response:
            first = None
            for _ in response.iter_raw():
                if first is None:
                    first = time.perf_counter_ns()
        end = time.perf_counter_ns()
        assert first is not None
        return end - start, first - start, first - marks[-1]

    for variants in clients.values():
        for client in variants.values():
            for _ in range(5):
                one(client)
    httptrack.flush()
    total: dict[str, dict[int, list[float]]] = {v: {n: [] for n in lengths} for v in clients}
    ttfc: dict[str, list[float]] = {v: [] for v in clients}
    handover: dict[str, list[float]] = {v: [] for v in clients}
    per_round = max(5, calls // 10)
    for _ in range(rounds):
        for variant, by_length in clients.items():
            for n, client in by_length.items():
                gc.collect()
                times = [one(client) for _ in range(per_round)]
                httptrack.flush()
                total[variant][n].append(statistics.median(t[0] for t in times) / 1000)
                if n == lengths[0]:
                    ttfc[variant].extend(t[1] / 1000 for t in times)
                    handover[variant].extend(t[2] / 1000 for t in times)

    def per_chunk(variant: str) -> list[float]:
        short, long = total[variant][lengths[0]], total[variant][lengths[1]]
        return [(b - a) / (lengths[1] - lengths[0]) for a, b in zip(short, long, strict=True)]

    print(f"Streams (httpx2, SSE chunks, writer running, cache off): {rounds} rounds x {per_round} streams\n")
    print(f"{'':44} {'bare':>10} {'tracked':>10} {'added':>10}")
    rows = [
        ("first chunk: inner hands it over → app has it", handover),
        ("first chunk: request sent → app has it", ttfc),
    ]
    for label, data in rows:
        b, t = statistics.median(data["bare"]), statistics.median(data["tracked"])
        print(f"{label:44} {b:8.1f}µs {t:8.1f}µs {t - b:+8.1f}µs")
    b, t = statistics.median(per_chunk("bare")), statistics.median(per_chunk("tracked"))
    print(f"{'per chunk (slope from 10 to 1010 chunks)':44} {b:8.2f}µs {t:8.2f}µs {t - b:+8.2f}µs")
    spreads = spread(per_chunk("bare")), spread(per_chunk("tracked"))
    print(f"{'  spread of the per-chunk figure (rounds)':44} {spreads[0]:>10} {spreads[1]:>10}")
    b, t = statistics.median(total["bare"][lengths[1]]), statistics.median(total["tracked"][lengths[1]])
    print(f"{f'whole stream of {lengths[1]} chunks (row written)':44} {b:8.0f}µs {t:8.0f}µs {t / b:9.2f}x\n")


# -- writer ---------------------------------------------------------------------------------


def capture_exchanges(db: Path, count: int) -> list[Any]:
    """``count`` finished calls, held back from the writer (to be submitted at once later)."""
    captured: list[Any] = []
    shared = writer()
    shared.submit = captured.append  # type: ignore[method-assign,assignment]
    try:
        client = httpx2.Client(transport=httptrack.TrackingTransport(mock(httpx2), db=db, cache=False))
        for _ in range(count):
            client.post(CHAT, json=chat_request()).read()
    finally:
        del shared.submit
    return captured


def bench_writer(folder: Path, rounds: int, rows: int) -> None:
    from httptrack.log._sqlite import Store
    from httptrack.record._row import build_row
    from httptrack.record._writer import _row_values

    shared = writer()
    rates, build, insert, derive = [], [], [], []
    for r in range(rounds):
        db = folder / f"throughput-{r}.db"
        exchanges = capture_exchanges(db, rows)
        httptrack.flush()
        gc.collect()
        start = time.perf_counter()
        for exchange in exchanges:
            shared.submit(exchange)
        httptrack.flush()
        rates.append(rows / (time.perf_counter() - start))
        with sqlite3.connect(db) as conn:
            (written,) = conn.execute("SELECT count(*) FROM calls").fetchone()
        assert written == rows, (written, rows)
        # The steps, one at a time, in this thread: its CPU time (steady on a busy machine).
        again = capture_exchanges(folder / "steps.db", rows)
        start = time.thread_time()
        built = [_row_values(build_row(e).row) for e in again]
        build.append((time.thread_time() - start) / rows * 1e6)
        store = Store(folder / f"steps-{r}.db")
        store.write(built[:1])
        store.due = lambda: False  # type: ignore[method-assign]
        start = time.thread_time()
        for i in range(1, rows, 200):
            store.write(built[i : i + 200])
        insert.append((time.thread_time() - start) / rows * 1e6)
        del store.due
        start = time.thread_time()
        store.catch_up()
        derive.append((time.thread_time() - start) / rows * 1e6)
        store.close()
    print(f"Writer: {rows} queued calls written, {rounds} rounds\n")
    for label, values, unit in (
        ("rows per second (queue → committed)", rates, ",.0f"),
        ("build a row (parse, price, redact) CPU µs/row", build, ".1f"),
        ("insert (batches of 200) CPU µs/row", insert, ".1f"),
        ("search index + rollup catch-up CPU µs/row", derive, ".1f"),
    ):
        low, high = format(min(values), unit), format(max(values), unit)
        print(f"{label:44} {format(statistics.median(values), unit):>10}   spread {low}–{high}")
    print()


# -- burst ----------------------------------------------------------------------------------


def rss_mb() -> float:
    """This process's resident memory now (Linux), else its peak so far."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def burst_child(calls: int, db: Path, max_queue: int | None) -> dict[str, Any]:
    """Runs in a fresh process: ``calls`` calls as fast as possible, then a flush."""
    options: dict[str, Any] = {"db": db, "cache": False}
    if max_queue is not None:
        options["max_queue"] = max_queue
    client = httpx2.Client(transport=httptrack.TrackingTransport(mock(httpx2), **options), headers=HEADERS)
    shared = writer()
    for _ in range(20):
        client.post(CHAT, json=chat_request()).read()
    httptrack.flush()
    gc.collect()
    base = peak = rss_mb()
    dropped0 = shared.dropped
    longest = 0
    start = time.perf_counter()
    for i in range(calls):
        client.post(CHAT, json=chat_request()).read()
        if i % 500 == 0:
            longest = max(longest, len(shared._queue))
            peak = max(peak, rss_mb())
    calls_done = time.perf_counter()
    while shared._queue:  # still draining: memory is at its highest around here
        peak = max(peak, rss_mb())
        time.sleep(0.05)
    httptrack.flush(timeout=600)
    end = time.perf_counter()
    with sqlite3.connect(db) as conn:
        (rows,) = conn.execute("SELECT count(*) FROM calls").fetchone()
    return {
        "calls": calls,
        "rows": rows - 20,
        "dropped": shared.dropped - dropped0,
        "faults": httptrack.fault_counts(),
        "calls_s": calls_done - start,
        "total_s": end - start,
        "rss_base_mb": base,
        "rss_peak_mb": peak,
        "queue_peak": longest,
    }


def bench_burst(folder: Path, calls: int) -> None:
    print(f"Burst: {calls:,} calls from one thread, as fast as it can (fresh process each)\n")
    head = (
        f"{'max_queue':>10} {'rows written':>13} {'dropped':>8} {'calls/s':>9} {'until flushed':>14} "
        f"{'peak queue':>11} {'RSS base → peak':>18}"
    )
    print(head)
    print("-" * len(head))
    for max_queue in (None, calls // 10):
        db = folder / f"burst-{max_queue}.db"
        args = [sys.executable, __file__, "--burst-child", str(calls), "--db", str(db)]
        if max_queue is not None:
            args += ["--max-queue", str(max_queue)]
        out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        label = "default" if max_queue is None else f"{max_queue:,}"
        grew = r["rss_peak_mb"] - r["rss_base_mb"]
        print(
            f"{label:>10} {r['rows']:13,} {r['dropped']:8,} {calls / r['calls_s']:9,.0f} "
            f"{r['total_s']:13.1f}s {r['queue_peak']:11,} "
            f"{r['rss_base_mb']:7.0f} → {r['rss_peak_mb']:4.0f} MB (+{grew:.0f})"
        )
        assert r["rows"] + r["dropped"] == calls, r
        if max_queue is None:
            assert r["dropped"] == 0, r
        else:
            print(f"{'':>10} faults counted: {r['faults']}")
    print()


# -- contention -----------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_contention(folder: Path, rounds: int, backlog: int) -> None:
    shared = writer()
    bare = httpx2.Client(transport=mock(httpx2))
    tracked = httpx2.Client(
        transport=httptrack.TrackingTransport(mock(httpx2), db=folder / "contention.db", cache=False)
    )
    calls: dict[str, Callable[[], Any]] = {
        "bare call": lambda: bare.post(CHAT, json=chat_request()).content,
        "tracked call": lambda: tracked.post(CHAT, json=chat_request()).content,
    }
    idle: dict[str, list[float]] = {k: [] for k in calls}
    busy: dict[str, list[float]] = {k: [] for k in calls}
    calls["tracked call"]()
    httptrack.flush()  # the writer started and warmed up (price data loaded) beforehand
    for _ in range(rounds):
        exchanges = capture_exchanges(folder / "backlog.db", backlog)
        for name, call in calls.items():
            httptrack.flush()
            gc.collect()
            for _ in range(200):
                start = time.perf_counter_ns()
                call()
                idle[name].append((time.perf_counter_ns() - start) / 1000)
            httptrack.flush()
            for exchange in exchanges:
                shared.submit(exchange)
            # Calls made while the writer works through the backlog (the tracked calls add
            # to it: stop after as many calls as were made idle).
            for _ in range(200):
                if not shared._queue:
                    break
                start = time.perf_counter_ns()
                call()
                busy[name].append((time.perf_counter_ns() - start) / 1000)
            httptrack.flush()
            exchanges = capture_exchanges(folder / "backlog.db", backlog)
    print(f"A call's latency while the writer is idle / busy with a backlog of {backlog:,} calls (µs)\n")
    columns = ("idle p50", "idle p99", "busy p50", "busy p99", "busy max")
    print(f"{'':14} " + " ".join(f"{c:>9}" for c in columns) + f" {'calls':>7}")
    for name in calls:
        a, b = idle[name], busy[name]
        print(
            f"{name:14} {percentile(a, 0.5):9.0f} {percentile(a, 0.99):9.0f} {percentile(b, 0.5):9.0f} "
            f"{percentile(b, 0.99):9.0f} {max(b):9.0f} {len(b):7}"
        )
    print()


# -- spool ----------------------------------------------------------------------------------


def bench_spool(folder: Path, rounds: int, calls: int) -> None:
    """What the crash-safe spool costs the app's thread: one append per call."""
    from httptrack.record._spool import Spool

    plain = capture_exchanges(folder / "spool-plain.db", calls)
    captured: list[Any] = []
    shared = writer()
    shared.submit = captured.append  # type: ignore[method-assign,assignment]
    try:
        client = httpx2.Client(
            transport=httptrack.TrackingTransport(
                mock(httpx2, stream=sse_chunks(100)), db=folder / "spool-stream.db", cache=False
            )
        )
        for _ in range(calls):
            with client.stream("POST", CHAT, json={**chat_request(), "stream": True}) as reply:
                for _chunk in reply.iter_raw():
                    pass
    finally:
        del shared.submit
    spool = Spool(folder / "spool.db")
    timings: dict[str, list[float]] = {"plain": [], "stream": []}
    for _ in range(rounds):
        for kind, exchanges in (("plain", plain), ("stream", captured)):
            gc.collect()
            start = time.perf_counter()
            tidying = 0.0
            for n, exchange in enumerate(exchanges, 1):
                spool.release(spool.append(exchange))
                if n % 20 == 0:  # the writer's part, after each batch it writes: not counted
                    tidied = time.perf_counter()
                    spool.tidy()
                    tidying += time.perf_counter() - tidied
            timings[kind].append((time.perf_counter() - start - tidying) / len(exchanges) * 1e6)
            spool.tidy()
    spool.close()
    sizes = {
        kind: len(exchanges[0].request_body) + exchanges[0].received
        for kind, exchanges in (("plain", plain), ("stream", captured))
    }
    print(f"Spool: one append per call (marshal, a copy into a mapped file), {rounds} rounds of {calls}\n")
    for kind, values in timings.items():
        label = "a chat call" if kind == "plain" else "a stream of 100 chunks"
        print(
            f"{label + f' ({sizes[kind]:,} bytes)':44} {statistics.median(values):8.1f} µs/call   "
            f"spread {spread(values)}"
        )
    # The same call's app-thread CPU with and without the spool append, call by call.
    transport = httptrack.TrackingTransport(mock(httpx2), db=folder / "spool-calls.db", cache=False)
    sdk = openai.OpenAI(api_key="sk-bench", max_retries=0, http_client=httpx2.Client(transport=transport))

    def create() -> Any:
        return sdk.chat.completions.create(**chat_request()).choices[0].message.content

    without, with_spool = [], []
    clock = time.thread_time
    for _ in range(rounds):
        gc.collect()
        spent = [0.0, 0.0]
        for n in range(calls):
            for spooled in (False, True) if n % 2 else (True, False):  # neither always first
                with stubbed_writer(spool=spooled):
                    start = clock()
                    create()
                    spent[spooled] += clock() - start
        without.append(spent[0] / calls * 1e6)
        with_spool.append(spent[1] / calls * 1e6)
    a, b = statistics.median(without), statistics.median(with_spool)
    print(
        f"{'openai create(), app thread, no spool':44} {a:8.1f} µs/call\n"
        f"{'openai create(), app thread, with spool':44} {b:8.1f} µs/call   ({b - a:+.1f} µs)\n"
    )


# -- main -----------------------------------------------------------------------------------

SECTIONS = ("calls", "streams", "spool", "writer", "burst", "contention")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: a few seconds")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=200, help="calls per variant per round")
    parser.add_argument("--burst", type=int, default=100_000, help="calls in the burst")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated: {', '.join(SECTIONS)}")
    parser.add_argument("--burst-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--max-queue", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.burst_child:
        print(json.dumps(burst_child(args.burst_child, args.db, args.max_queue)))
        return 0
    rounds, calls, burst, rows, backlog = args.rounds, args.calls, args.burst, 20_000, 5_000
    if args.quick:
        rounds, calls, burst, rows, backlog = 1, 20, 1_000, 500, 200
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    print(
        f"Python {sys.version.split()[0]}, httpx {httpx.__version__}, httpx2 {httpx2.__version__}, "
        f"openai {openai.__version__}, SQLite {sqlite3.sqlite_version}; {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}\n"
    )
    with tempfile.TemporaryDirectory(prefix="httptrack-bench-") as tmp:
        folder = Path(tmp)
        if "calls" in only:
            bench_calls(folder, rounds, calls)
        if "streams" in only:
            bench_streams(folder, rounds, calls)
        if "spool" in only:
            bench_spool(folder, rounds, calls)
        if "writer" in only:
            bench_writer(folder, max(1, rounds // 5), rows)
        if "burst" in only:
            bench_burst(folder, burst)
        if "contention" in only:
            bench_contention(folder, max(1, rounds // 5), backlog)
        httptrack.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
