"""Per-call overhead of tracking, side by side with bare httpx / httpx2 in the same run.

    python benchmarks/bench_overhead.py [--calls 3000]

Every variant sends the same non-streaming chat completion over an in-memory inner
transport (no sockets), so what is measured is the client stack plus httptrack. Tracked
variants include the background writer's work (parse, price, insert): the run ends with a
flush and the time is divided over all calls. Figures are medians of several rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import httpx2

import httptrack

CHAT = "https://api.openai.com/v1/chat/completions"
REQUEST = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
}
RESPONSE = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1735689600,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": 14,
            "completion_tokens": 2,
            "total_tokens": 16,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }
).encode()


def inner(lib: Any) -> Any:
    headers = {"content-type": "application/json", "x-request-id": "req_1"}

    def handler(request: Any) -> Any:
        return lib.Response(200, headers=headers, stream=lib.ByteStream(RESPONSE))

    return lib.MockTransport(handler)


def run_calls(client: Any, calls: int) -> None:
    for _ in range(calls):
        client.post(CHAT, json=REQUEST).read()


def measure(make_client: Any, calls: int, rounds: int, flush: bool) -> float:
    """Median microseconds per call over ``rounds`` rounds (writer work included)."""
    per_call = []
    for _ in range(rounds):
        client = make_client()
        run_calls(client, 50)  # warm up: imports, connection of the writer, price data
        if flush:
            httptrack.flush()
        start = time.perf_counter()
        run_calls(client, calls)
        if flush:
            httptrack.flush()
        per_call.append((time.perf_counter() - start) / calls * 1e6)
        client.close()
    return statistics.median(per_call)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="httptrack-bench-"))
    results: list[tuple[str, float, float]] = []
    for lib in (httpx, httpx2):
        bare = measure(lambda lib=lib: lib.Client(transport=inner(lib)), args.calls, args.rounds, flush=False)
        db = folder / f"{lib.__name__}.db"
        tracked = measure(
            lambda lib=lib, db=db: lib.Client(
                transport=httptrack.TrackingTransport(inner(lib), db=db, cache=False)
            ),
            args.calls,
            args.rounds,
            flush=True,
        )
        results.append((f"{lib.__name__}: bare client", bare, 1.0))
        results.append((f"{lib.__name__}: TrackingTransport (row written)", tracked, tracked / bare))
    print(f"{'variant':<48} {'µs/call':>10} {'ratio':>7}")
    for name, micros, ratio in results:
        print(f"{name:<48} {micros:>10.1f} {ratio:>7.2f}")


if __name__ == "__main__":
    main()
