"""What tracking costs an app at its cold start and on a compression bomb: event-loop lag
while the first calls are recorded, and peak memory while a gzip bomb is recorded.

    python benchmarks/bench_stall.py [--rounds 8] [--bomb-mib 1024]
    python benchmarks/bench_stall.py --quick        # a smoke run (3 rounds, a 64 MiB bomb)

**Cold start.** Each run is a fresh process: an asyncio app whose loop runs a task that
sleeps 1 ms at a time and notes how late each wake-up is (the loop's lag), and a thread that
does the same (a long GIL hold anywhere shows in both). It makes its client at start-up, as
apps do, before the loop serves anything ("client made": the tracking transport's first
construction imports the provider parsers and the writer on the app's thread, once), then
after 100 ms of ticking makes its first calls through the openai SDK (``AsyncOpenAI`` over an
in-memory ``httpx2`` transport): a chat completion whose response carries no usage
(httptrack then counts the tokens itself: its first token count loads an encoding), a stream
cut short after its first chunk, and an embeddings call; it waits for the records
(``httptrack.flush()`` in a worker thread) and ticks 300 ms more. "bare" is the same app
with the transport untracked. The SDK's own first call stalls the loop too (its lazy
imports, pydantic building its models: 25-60 ms here), so each is run twice: as is, and
with the SDK warmed by the same calls untracked before the loop starts ticking, which
leaves httptrack's own cold start (its writer starting, the price data and an encoding
loading, SQLite opened). Figures: the largest and the 99th-percentile lag from the first
call to the end, medians over runs (and the worst run's largest), conditions interleaved.

**Gzip bomb.** Each run is a fresh process that streams one response through a raw
``httpx2`` client, reading it as an app (or a proxy) would (``iter_bytes``: httpx2 inflates
it in bounded pieces), then flushes: a gzip body of ``--bomb-mib`` MiB of zeros (about a
thousandth of that on the wire). Peak RSS (``ru_maxrss``) of: the bomb untracked (bare); the
same call tracked with an ordinary JSON answer (what tracking itself costs the process:
SQLite, the price data, the encodings); the bomb tracked. Linux/macOS only (``resource``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COLD_START = textwrap.dedent(
    r"""
    import asyncio, json, os, sys, threading, time
    TRACKED = sys.argv[1] == "tracked"
    WARM_SDK = sys.argv[2] == "warm"
    import httpx2, openai
    if TRACKED:
        import httptrack

    loop_lags, thread_gaps = [], []
    stop = False

    def thread_ticker():
        last = time.perf_counter()
        while not stop:
            time.sleep(0.001)
            now = time.perf_counter()
            thread_gaps.append((now, now - last - 0.001))
            last = now

    async def loop_ticker():
        while not stop:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            loop_lags.append((now, now - before - 0.001))

    CHAT = json.dumps({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1735689600, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "The capital of France is Paris. " * 20}}],
    }).encode()
    EMBEDDING = json.dumps({
        "object": "list", "model": "text-embedding-3-small",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.25] * 256}],
    }).encode()

    def stream_chunks():
        base = {"id": "chatcmpl-2", "object": "chat.completion.chunk", "model": "gpt-4o-mini"}
        for word in ["Once", " upon", " a", " time"] * 50:
            choice = {"index": 0, "delta": {"content": word}, "finish_reason": None}
            yield b"data: " + json.dumps({**base, "choices": [choice]}).encode() + b"\n\n"

    class Events(httpx2.AsyncByteStream):
        async def __aiter__(self):
            for chunk in stream_chunks():
                yield chunk

    def handler(request):
        if request.url.path.endswith("/embeddings"):
            return httpx2.Response(200, headers={"content-type": "application/json"}, content=EMBEDDING)
        if b'"stream":true' in request.content.replace(b" ", b""):
            return httpx2.Response(200, headers={"content-type": "text/event-stream"}, stream=Events())
        return httpx2.Response(200, headers={"content-type": "application/json"}, content=CHAT)

    async def calls(client):
        messages = [{"role": "user", "content": "What is the capital of France? " * 30}]
        await client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        stream = await client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True)
        async for _ in stream:
            break
        await stream.close()
        await client.embeddings.create(model="text-embedding-3-small", input="hello " * 100)

    async def main():
        global stop
        if WARM_SDK:  # the SDK's own first call (its lazy imports, pydantic schemas) done untracked
            untracked = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
            await calls(openai.AsyncOpenAI(api_key="sk-bench", http_client=untracked))
        thread = threading.Thread(target=thread_ticker, daemon=True)
        thread.start()
        # The app makes its client at start-up, before it serves (the transport's own
        # imports, on the app's thread, are timed apart).
        made = time.perf_counter()
        inner = httpx2.MockTransport(handler)
        if TRACKED:
            inner = httptrack.AsyncTrackingTransport(inner, db=os.environ["BENCH_DB"], cache=False)
        client = openai.AsyncOpenAI(api_key="sk-bench", http_client=httpx2.AsyncClient(transport=inner))
        made = time.perf_counter() - made
        ticker = asyncio.ensure_future(loop_ticker())
        await asyncio.sleep(0.1)
        start = time.perf_counter()
        await calls(client)
        calls_done = time.perf_counter()
        if TRACKED:
            assert await asyncio.to_thread(httptrack.flush, 30)
        flushed = time.perf_counter()
        await asyncio.sleep(0.3)
        stop = True
        await ticker
        thread.join()
        lags = sorted(lag for at, lag in loop_lags if at >= start)
        gaps = [gap for at, gap in thread_gaps if at >= start]
        print(json.dumps({
            "max": lags[-1], "p99": lags[int(len(lags) * 0.99)], "ticks": len(lags),
            "thread_max": max(gaps), "calls": calls_done - start, "flushed": flushed - start, "made": made,
        }))

    asyncio.run(main())
    """
)

BOMB = textwrap.dedent(
    r"""
    import os, resource, sys, time
    mode, path = sys.argv[1], sys.argv[2]
    import httpx2
    if mode != "bare":
        import httptrack
    if path == "-":
        body, encoding = b'{"object": "list", "data": []}', "identity"
    else:
        body, encoding = open(path, "rb").read(), "gzip"

    class Wire(httpx2.SyncByteStream):
        def __iter__(self):  # as a socket delivers it: 16 KiB at a time
            for i in range(0, len(body), 16384):
                yield body[i : i + 16384]

    def handler(request):
        headers = {"content-type": "application/json", "content-encoding": encoding}
        return httpx2.Response(200, headers=headers, stream=Wire())

    inner = httpx2.MockTransport(handler)
    if mode != "bare":
        inner = httptrack.TrackingTransport(inner, db=os.environ["BENCH_DB"], cache=False)
    started = time.perf_counter()
    with httpx2.Client(transport=inner) as client:
        with client.stream("GET", "https://api.openai.com/v1/models") as response:
            size = sum(len(chunk) for chunk in response.iter_bytes())
    if mode != "bare":
        assert httptrack.flush(120)
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(size, peak * (1 if sys.platform == "darwin" else 1024), elapsed)
    """
)


def run(code: str, *args: str, db: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HTTPTRACK")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["BENCH_DB"] = str(db)
    out = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"benchmark process failed:\n{out.stderr}")
    return out.stdout.strip().splitlines()[-1]


COLD_CONDITIONS = {
    "bare": ("bare", "cold"),
    "tracked": ("tracked", "cold"),
    "bare, SDK warmed": ("bare", "warm"),
    "tracked, SDK warmed": ("tracked", "warm"),
}


def cold_start(rounds: int, folder: Path) -> dict[str, list[dict[str, float]]]:
    results: dict[str, list[dict[str, float]]] = {name: [] for name in COLD_CONDITIONS}
    for index in range(rounds):
        for number, (name, args) in enumerate(COLD_CONDITIONS.items()):
            db = folder / f"cold-{number}-{index}.db"
            results[name].append(json.loads(run(COLD_START, *args, db=db)))
    return results


def gzip_bomb(mib: int, rounds: int, folder: Path) -> dict[str, list[tuple[int, float]]]:
    path = folder / "bomb.gz"
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    zeros = bytes(1 << 20)
    with path.open("wb") as out:
        for _ in range(mib):
            out.write(compressor.compress(zeros))
        out.write(compressor.flush())
    print(f"gzip bomb: {mib} MiB of zeros in {path.stat().st_size:,} bytes on the wire")
    conditions = {
        "bare, the bomb": ("bare", str(path)),
        "tracked, an ordinary answer": ("tracked", "-"),
        "tracked, the bomb": ("tracked", str(path)),
    }
    results: dict[str, list[tuple[int, float]]] = {name: [] for name in conditions}
    for index in range(rounds):
        for name, (mode, body) in conditions.items():
            size, peak, elapsed = run(BOMB, mode, body, db=folder / f"bomb-{index}.db").split()
            if body != "-":
                assert int(size) == mib << 20, size
            results[name].append((int(peak), float(elapsed)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="fresh processes per condition (cold start)")
    parser.add_argument("--bomb-rounds", type=int, default=3, help="fresh processes per condition (bomb)")
    parser.add_argument("--bomb-mib", type=int, default=1024, help="size of the inflated bomb, MiB")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 rounds, a 64 MiB bomb")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.bomb_rounds, args.bomb_mib = 3, 1, 64

    with tempfile.TemporaryDirectory(prefix="httptrack-bench-stall-") as scratch:
        folder = Path(scratch)
        cold = cold_start(args.rounds, folder)
        print(
            f"Cold start, {args.rounds} fresh processes per condition: event-loop lag from the first "
            "call until 300 ms after the records are written (ms)"
        )
        heads = (
            ("max (median)", 14),
            ("max (worst)", 13),
            ("p99 (median)", 14),
            ("thread max", 12),
            ("flushed at", 12),
            ("client made", 13),
        )
        print(" " * 22 + "".join(f"{head:>{width}}" for head, width in heads))
        for mode, runs in cold.items():
            print(
                f"{mode:22}"
                f"{statistics.median(r['max'] for r in runs) * 1000:14.1f}"
                f"{max(r['max'] for r in runs) * 1000:13.1f}"
                f"{statistics.median(r['p99'] for r in runs) * 1000:14.1f}"
                f"{statistics.median(r['thread_max'] for r in runs) * 1000:12.1f}"
                f"{statistics.median(r['flushed'] for r in runs) * 1000:12.0f}"
                f"{statistics.median(r['made'] for r in runs) * 1000:13.1f}"
            )
        own = statistics.median(r["max"] for r in cold["tracked, SDK warmed"]) * 1000
        print(
            f"target: httptrack's cold start (SDK warmed) lag < 50 ms -> {'met' if own < 50 else 'NOT met'} "
            f"(median of the largest, {own:.1f} ms)"
        )
        print()

        bomb = gzip_bomb(args.bomb_mib, args.bomb_rounds, folder)
        print(
            f"Peak RSS, {args.bomb_rounds} fresh process(es) per condition "
            "(median MiB; seconds to read and record)"
        )
        for name, runs in bomb.items():
            peak = statistics.median(p for p, _ in runs) / (1 << 20)
            seconds = statistics.median(s for _, s in runs)
            print(f"  {name:30}{peak:8.0f} MiB{seconds:8.2f} s")
        bare = statistics.median(p for p, _ in bomb["bare, the bomb"])
        baseline = statistics.median(p for p, _ in bomb["tracked, an ordinary answer"])
        tracked = statistics.median(p for p, _ in bomb["tracked, the bomb"])
        print(
            f"tracked bomb / tracked ordinary answer: {tracked / baseline:.2f}x; "
            f"the bomb's own cost tracked, (bomb - ordinary) / bare bomb: {(tracked - baseline) / bare:.2f}x"
        )
        print(f"target: within 2x -> {'met' if tracked <= 2 * baseline else 'NOT met'}")


if __name__ == "__main__":
    main()
