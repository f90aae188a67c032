"""Per-chunk cost on the app's thread of hiding the injected usage chunk.

Compares, for the same OpenAI-style stream (300 events of ~230 bytes, then the usage chunk
and ``[DONE]``):

- ``raw``: iterating the chunks (the floor);
- ``tee``: the tracking tee as every stream gets it (capture only);
- ``tee + filter``: the tee of a stream httptrack asked for usage (capture, cut at event
  boundaries, drop the usage event).

Each under two chunkings: one event per chunk (how servers flush SSE) and 100-byte pieces
(a proxy re-chunking). Prints microseconds per chunk side by side.

    python benchmarks/bench_usage_filter.py
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable

from httptrack._context import current_attribution
from httptrack._exchange import Exchange
from httptrack._settings import Settings
from httptrack._streams import SyncTee, UsageChunkFilter
from httptrack.providers import provider_by_name, provider_for_host

BASE = {
    "id": "chatcmpl-B74aE2TDl9ZbKx2fXoVatoMDnErNm",
    "object": "chat.completion.chunk",
    "created": 1741025614,
    "model": "gpt-4o-mini-2024-07-18",
    "system_fingerprint": "fp_d0469e1700",
}
EVENTS = [
    {
        **BASE,
        "choices": [{"index": 0, "delta": {"content": f" word{i}"}, "finish_reason": None}],
        "usage": None,
    }
    for i in range(300)
]
EVENTS.append(
    {**BASE, "choices": [], "usage": {"prompt_tokens": 78, "completion_tokens": 300, "total_tokens": 378}}
)
BODY = (
    b"".join(b"data: " + json.dumps(e, separators=(",", ":")).encode() + b"\n\n" for e in EVENTS)
    + b"data: [DONE]\n\n"
)
SETTINGS = Settings(db=":memory:", cache=False)
PROVIDER = provider_for_host("api.openai.com", None)


def exchange() -> Exchange:
    assert PROVIDER is not None
    return Exchange(
        provider=PROVIDER,
        operation="chat",
        settings=SETTINGS,
        sink=None,
        method="POST",
        scheme="https",
        host="api.openai.com",
        port=None,
        path="/v1/chat/completions",
        query="",
        request_headers=[],
        request_body=b"",
        attribution=current_attribution(),
        control=None,
    )


def run_raw(chunks: list[bytes]) -> None:
    for _ in chunks:
        pass


def run_tee(chunks: list[bytes], filtered: bool) -> None:
    ex = exchange()
    ex.chunk_filter = UsageChunkFilter(provider_by_name("openai").is_usage_chunk) if filtered else None
    for _ in SyncTee(chunks, ex, lambda e: None):
        pass


ROUNDS = 200


def per_chunk_us(fn: Callable[[list[bytes]], None], chunks: list[bytes], rounds: int | None = None) -> float:
    rounds = rounds or ROUNDS
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(rounds):
            fn(chunks)
        best = min(best, (time.perf_counter() - start) / rounds / len(chunks) * 1e6)
    return best


def chunkings() -> Iterable[tuple[str, list[bytes]]]:
    events = [e + b"\n\n" for e in BODY.split(b"\n\n") if e]
    yield "one event per chunk", events
    yield "100-byte pieces", [BODY[i : i + 100] for i in range(0, len(BODY), 100)]


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer repetitions")
    args = parser.parse_args()
    global ROUNDS
    if args.quick:
        ROUNDS = 5
    columns = ("raw µs", "tee µs", "tee+filter µs", "filter adds µs")
    print(f"{'chunking':22} {'chunks':>6} " + " ".join(f"{c:>{max(8, len(c))}}" for c in columns))
    for name, chunks in chunkings():
        raw = per_chunk_us(run_raw, chunks)
        tee = per_chunk_us(lambda c: run_tee(c, False), chunks)
        both = per_chunk_us(lambda c: run_tee(c, True), chunks)
        print(f"{name:22} {len(chunks):6d} {raw:8.3f} {tee:8.3f} {both:14.3f} {both - tee:15.3f}")


if __name__ == "__main__":
    main()
