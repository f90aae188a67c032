"""What building one ``calls`` row costs the writer (``build_row``), CPU per row, in one run.

    python benchmarks/bench_row.py            # ~half a minute
    python benchmarks/bench_row.py --quick    # a smoke run (seconds)

Exchanges are captured from the ``openai`` SDK over an in-memory transport (a chat
completion; a 20-chunk chat stream with ``include_usage``, as bench_peers.py sends), then
built into rows again and again in this thread (``time.thread_time``: steady on a busy
machine). Streams are built twice, alternated: with the fast SSE reading (``sse_pairs`` and
the provider's ``sse_reader``) and with the general one (``SSEDecoder`` and ``read_event``
on every fully decoded event), which is what a streamed row cost before the fast path.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import httpx2
import openai

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # measure this checkout's httptrack

from _payloads import OPENAI_CHAT_COMPLETION, openai_chat_stream  # noqa: E402

import httptrack  # noqa: E402
from httptrack.providers import Provider  # noqa: E402
from httptrack.providers.openai import OpenAICompatible  # noqa: E402
from httptrack.record import _row  # noqa: E402
from httptrack.record._decoders import SSEDecoder  # noqa: E402
from httptrack.record._writer import writer  # noqa: E402

STREAM = b"".join(openai_chat_stream([f" word{i}" for i in range(16)]))


def capture(folder: Path, count: int, stream: bool) -> list[Any]:
    def handler(request: Any) -> Any:
        if stream:
            return httpx2.Response(
                200, headers={"content-type": "text/event-stream"}, stream=httpx2.ByteStream(STREAM)
            )
        headers = {"content-type": "application/json", "x-request-id": "req_bench"}
        return httpx2.Response(200, headers=headers, stream=httpx2.ByteStream(OPENAI_CHAT_COMPLETION))

    captured: list[Any] = []
    shared = writer()
    shared.submit = captured.append  # type: ignore[method-assign,assignment]
    try:
        transport = httptrack.TrackingTransport(
            httpx2.MockTransport(handler), db=folder / "row.db", cache=False
        )
        sdk = openai.OpenAI(api_key="sk-bench", max_retries=0, http_client=httpx2.Client(transport=transport))
        for i in range(count):
            messages: Any = [{"role": "user", "content": f"What is the capital of France? ({i})"}]
            if stream:
                for _ in sdk.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=messages,
                    stream=True,
                    stream_options={"include_usage": True},
                ):
                    pass
            else:
                sdk.chat.completions.create(model="gpt-4o-mini", messages=messages)
    finally:
        del shared.submit
    return captured


def per_row(exchanges: list[Any], reps: int) -> float:
    gc.collect()
    start = time.thread_time()
    for _ in range(reps):
        for exchange in exchanges:
            _row.build_row(exchange)
    return (time.thread_time() - start) / (reps * len(exchanges)) * 1e6


def general(run: Callable[[], float]) -> float:
    """``run`` with the fast SSE reading off."""

    def decoded(chunks: list[bytes]) -> list[tuple[str | None, str]]:
        return [(e.event, e.data) for e in SSEDecoder().decode_all(chunks)]

    with (
        mock.patch.object(Provider, "sse_reader", lambda self, parsed: None),
        mock.patch.object(OpenAICompatible, "sse_reader", lambda self, parsed: None),
        mock.patch.object(_row, "sse_pairs", decoded),
    ):
        return run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: a few seconds")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    rounds, reps = (1, 2) if args.quick else (args.rounds, 40)
    with tempfile.TemporaryDirectory(prefix="httptrack-bench-") as tmp:
        folder = Path(tmp)
        chat, stream = capture(folder, 50, False), capture(folder, 50, True)
        rows = _row.build_row(stream[0]).row, general(lambda: _row.build_row(stream[0]).row)
        same = {k: v for k, v in rows[0].items() if k not in ("id", "started_at")} == {
            k: v for k, v in rows[1].items() if k not in ("id", "started_at")
        }
        assert same, "the fast and the general reading of the stream differ"
        figures: dict[str, list[float]] = {"chat": [], "stream (fast)": [], "stream (general)": []}
        for _ in range(rounds):
            figures["chat"].append(per_row(chat, reps))
            figures["stream (fast)"].append(per_row(stream, reps))
            figures["stream (general)"].append(general(lambda: per_row(stream, reps)))
    print(f"build_row, CPU µs per row: median of {rounds} rounds (spread)\n")
    for label, values in figures.items():
        print(f"{label:28} {statistics.median(values):7.1f}   {min(values):.1f}–{max(values):.1f}")
    fast, slow = (statistics.median(figures[k]) for k in ("stream (fast)", "stream (general)"))
    print(f"\nstream: the fast reading saves {slow - fast:.1f} µs per row ({fast / slow:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
