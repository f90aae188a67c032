"""A cache hit served from Redis next to one served from the cache folder (diskcache), in
one run, on the same requests and the same in-memory responses.

Variants (each an ``openai`` SDK over ``httpx2.MockTransport``):

- **bare**: no tracking, no cache: the floor;
- **folder, memory** / **Redis, memory**: a hit served from the process's memory of recent
  entries, in front of either storage (what a process that asks the same thing again gets);
- **folder, read** / **Redis, read**: the memory forgotten before every call, so each hit
  reads the storage: diskcache's SQLite on this machine, or a ``GET`` round trip to Redis
  (what a process gets for another process's or another machine's answer).

Every hit is recorded (its row written by the background writer, counted). Figures: the
CPU time per call of the whole process (app thread and writer; the best round), and, for
Redis, of the app plus the redis-server serving it; the median wall time per call. The
benchmark starts its own throwaway ``redis-server`` on a free loopback port (no
persistence) and skips with a message when it cannot.

    python benchmarks/bench_redis.py            # about a minute
    python benchmarks/bench_redis.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import openai

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # measure this checkout's httptrack

from _payloads import OPENAI_CHAT_COMPLETION, openai_chat_stream  # noqa: E402

import httptrack  # noqa: E402

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
STREAM_CHUNKS = openai_chat_stream(["The", " capital", " of", " France", " is", " Paris", "."])
VARIANTS = ("bare", "folder, memory", "Redis, memory", "folder, read", "Redis, read")


class _Chunks(httpx2.SyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Any:
        yield from self._chunks


def handler(request: httpx2.Request) -> httpx2.Response:
    if b'"stream":true' in request.content or b'"stream": true' in request.content:
        headers = {"content-type": "text/event-stream"}
        return httpx2.Response(200, headers=headers, stream=_Chunks(STREAM_CHUNKS))
    return httpx2.Response(200, headers={"content-type": "application/json"}, content=OPENAI_CHAT_COMPLETION)


# -- a throwaway redis-server -------------------------------------------------------------


def start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], str] | str:
    """``(process, url)``, or why no server could be started."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.path.exists(binary):
        return "redis-server is not installed (apt-get install redis-server)"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(folder), "--maxmemory", "256mb", "--maxmemory-policy", "volatile-lru"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"redis-server exited with {process.returncode}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.02)
    process.kill()
    return "redis-server did not answer within 10 s"


def cpu_ns_of(pid: int) -> int:
    """CPU time (user + system) another process has used, from /proc (0 where there is none)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    ticks = int(fields[11]) + int(fields[12])
    return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


# -- the variants -----------------------------------------------------------------------------


def sdks(tmp: Path, url: str) -> dict[str, tuple[openai.OpenAI, Callable[[], None]]]:
    """variant → (SDK client, what to do before each call)."""
    from httptrack.cache._redis import shared_redis_store
    from httptrack.cache._store import shared_store

    mock = httpx2.MockTransport(handler)

    def sdk(transport: Any) -> openai.OpenAI:
        return openai.OpenAI(
            api_key="sk-bench", http_client=httpx2.Client(transport=transport), max_retries=0
        )

    def tracked(**cache: Any) -> Any:
        # cache_max_hits=0: thousands of identical requests a minute are the point here.
        return httptrack.TrackingTransport(mock, db=tmp / "calls.db", cache_max_hits=0, **cache)

    folder = tmp / "cache"
    nothing: Callable[[], None] = lambda: None  # noqa: E731
    return {
        "bare": (sdk(mock), nothing),
        "folder, memory": (sdk(tracked(cache_dir=folder)), nothing),
        "Redis, memory": (sdk(tracked(cache_url=url)), nothing),
        "folder, read": (sdk(tracked(cache_dir=folder)), shared_store(folder).memory.clear),
        "Redis, read": (sdk(tracked(cache_url=url)), shared_redis_store(url).memory.clear),
    }


def scenarios(
    clients: dict[str, tuple[openai.OpenAI, Callable[[], None]]],
) -> dict[str, dict[str, Callable[[], Any]]]:
    def chat(client: openai.OpenAI, before: Callable[[], None]) -> Callable[[], Any]:
        def call() -> Any:
            before()
            return (
                client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
                .choices[0]
                .message.content
            )

        return call

    def stream(client: openai.OpenAI, before: Callable[[], None]) -> Callable[[], Any]:
        def call() -> Any:
            before()
            chunks = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True)
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

        return call

    return {
        "openai chat.completions.create()": {name: chat(*pair) for name, pair in clients.items()},
        "openai chat, stream=True, 10 chunks": {name: stream(*pair) for name, pair in clients.items()},
    }


def check_hits(table: dict[str, dict[str, Callable[[], Any]]], url: str) -> None:
    """Warm both caches, then prove every tracked variant is a hit, from where it says."""
    import redis

    for variants in table.values():
        expected = variants["bare"]()
        for call in variants.values():
            call()
            httptrack.flush()
            assert call() == expected
    client = redis.Redis.from_url(url)
    assert len(list(client.scan_iter(match="httptrack:entry:*"))) == 2, "both answers are in Redis"
    client.close()


Samples = dict[str, dict[str, list[int]]]


def measure(
    table: dict[str, dict[str, Callable[[], Any]]], rounds: int, calls: int, redis_pid: int
) -> tuple[Samples, Samples, Samples]:
    """Per scenario and variant: every call's wall time; per round the process CPU per call
    (the writer flushed inside the count); and the best round's plus redis-server's CPU per
    call over all rounds (the kernel counts it in 10 ms ticks: too coarse for one round)."""
    wall: Samples = {s: {v: [] for v in vs} for s, vs in table.items()}
    cpu: Samples = {s: {v: [] for v in vs} for s, vs in table.items()}
    server: Samples = {s: {v: [] for v in vs} for s, vs in table.items()}
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for scenario, variants in table.items():
            for name, call in variants.items():
                times = wall[scenario][name]
                gc.collect()
                server_start = cpu_ns_of(redis_pid)
                cpu_start = time.process_time_ns()
                for _ in range(calls):
                    start = clock()
                    call()
                    times.append(clock() - start)
                httptrack.flush()
                cpu[scenario][name].append((time.process_time_ns() - cpu_start) // calls)
                server[scenario][name].append(cpu_ns_of(redis_pid) - server_start)
    both: Samples = {
        s: {v: [min(cpu[s][v]) + sum(server[s][v]) // (rounds * calls)] for v in vs}
        for s, vs in table.items()
    }
    return wall, cpu, both


def report(samples: Samples, summary: Callable[[list[int]], float]) -> str:
    lines = [
        f"{'scenario':38} " + " ".join(f"{v:>20}" for v in VARIANTS),
        "-" * (38 + 21 * len(VARIANTS)),
    ]
    for scenario, variants in samples.items():
        figures = {name: summary(times) / 1000 for name, times in variants.items()}
        base = figures["bare"]
        cells = [f"{base:>14.1f} µs   "]
        cells += [f"{figures[v]:>7.1f} µs ({figures[v] / base:4.2f}x)" for v in VARIANTS[1:]]
        lines.append(f"{scenario:38} " + " ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=50, help="calls per variant per round")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 10 calls")
    args = parser.parse_args(argv)
    rounds, calls = (2, 10) if args.quick else (args.rounds, args.calls)
    with tempfile.TemporaryDirectory(prefix="httptrack-bench-redis-") as folder:
        started = start_redis(Path(folder))
        if isinstance(started, str):
            print(f"bench_redis: skipped: {started}")
            return 0
        server, url = started
        try:
            clients = sdks(Path(folder), url)
            table = scenarios(clients)
            check_hits(table, url)
            wall, cpu, both = measure(table, rounds, calls, server.pid)
            for client, _ in clients.values():
                client.close()
        finally:
            server.terminate()
            server.wait(timeout=10)
    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
    print(f"{rounds} rounds x {calls} calls per variant, interleaved; every hit recorded.")
    print(f"Python {sys.version.split()[0]}, {' '.join(version[:3])}, on 127.0.0.1.\n")
    print("CPU time per call, this process (app thread + background writer; best round):\n")
    print(report(cpu, min))
    print("\nCPU time per call, this process (best round) + redis-server (all rounds):\n")
    print(report(both, min))
    print("\nMedian wall time per call:\n")
    print(report(wall, statistics.median))
    print("\n(x: relative to bare. memory: served from the process's memory of recent entries;")
    print(" read: the memory forgotten before each call, so the storage itself answers.)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
