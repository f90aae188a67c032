"""How much a response served from httptrack's cache costs, next to the alternatives.

Measured in one run, on the same requests and the same in-memory responses:

- **bare**: an ``httpx2.Client`` over ``httpx2.MockTransport`` (no tracking, no cache): the
  floor for anything that goes through httpx2;
- **httptrack hit**: the same client over ``TrackingTransport(MockTransport)``, the response
  served from httptrack's cache (and the hit recorded in SQLite by the background writer,
  which runs during the measurement: its cost is included);
- **hishel hit**: the same client over hishel's ``CacheTransport(MockTransport)`` with its
  SQLite storage. hishel serves GET and HEAD only (RFC 9111: a POST is written through to
  the origin even when ``supported_methods`` lists it), so it is measured on ``GET
  /v1/models``, and marked n/a for the POST calls LLM APIs are made of;
- **hit, not recorded**: a diagnostic, not a way to run httptrack: the same hit with the
  background writer stubbed out, so what remains is the cache's own cost on the app's
  thread (key, lookup, replay), without the recording of the hit as a ``calls`` row;
- **httptrack, cache off**: tracking without the cache, for reference (every call goes to
  the mock and is recorded).

Each scenario runs at the transport level (``client.get/post`` + read) and through the
``openai`` SDK (``models.list()``, ``chat.completions.create()``, and a streamed chat read to
its end). Variants run interleaved in rounds, so drift on a busy machine hits them alike;
the figure is the median of every call's wall time.

    python benchmarks/bench_cache.py            # a few minutes
    python benchmarks/bench_cache.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hishel
import hishel.httpx2
import httpx2
import openai

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # measure this checkout's httptrack

from _payloads import OPENAI_CHAT_COMPLETION, openai_chat_stream  # noqa: E402

import httptrack  # noqa: E402
from httptrack.record._writer import writer  # noqa: E402

API = "https://api.openai.com/v1"
HEADERS = {"authorization": "Bearer sk-bench", "content-type": "application/json"}
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
CHAT_REQUEST = {"model": "gpt-4o-mini", "messages": QUESTION}

CHAT_BODY = OPENAI_CHAT_COMPLETION
MODELS_BODY = json.dumps(
    {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": 1, "owned_by": "openai"}
            for m in ("gpt-4o-mini", "gpt-4o", "o3-mini", "text-embedding-3-small")
        ],
    }
).encode()


STREAM_CHUNKS = openai_chat_stream(["The", " capital", " of", " France", " is", " Paris", "."])


class _Chunks(httpx2.SyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Any:
        yield from self._chunks


def handler(request: httpx2.Request) -> httpx2.Response:
    """The in-memory "provider": fixed bodies, as cheap as a MockTransport answer gets."""
    if request.method == "GET":
        return httpx2.Response(200, headers={"content-type": "application/json"}, content=MODELS_BODY)
    if b'"stream":true' in request.content or b'"stream": true' in request.content:
        headers = {"content-type": "text/event-stream", "transfer-encoding": "chunked"}
        return httpx2.Response(200, headers=headers, stream=_Chunks(STREAM_CHUNKS))
    return httpx2.Response(200, headers={"content-type": "application/json"}, content=CHAT_BODY)


# -- the clients ----------------------------------------------------------------------------


def clients(tmp: Path) -> dict[str, httpx2.Client]:
    mock = httpx2.MockTransport(handler)
    storage = hishel.SqliteStorage(database_path=str(tmp / "hishel.db"))
    return {
        "bare": httpx2.Client(transport=mock, headers=HEADERS),
        "httptrack hit": httpx2.Client(
            # cache_max_hits=0: the same request thousands of times a minute is what the loop
            # guard stops; here it is the point.
            transport=httptrack.TrackingTransport(
                mock, db=tmp / "calls.db", cache_dir=tmp / "cache", cache_max_hits=0
            ),
            headers=HEADERS,
        ),
        "hishel hit": httpx2.Client(
            transport=hishel.httpx2.CacheTransport(mock, storage=storage), headers=HEADERS
        ),
        "httptrack, cache off": httpx2.Client(
            transport=httptrack.TrackingTransport(mock, db=tmp / "calls-nocache.db", cache=False),
            headers=HEADERS,
        ),
    }


def scenarios(http: dict[str, httpx2.Client]) -> dict[str, dict[str, Callable[[], Any]]]:
    """scenario → variant → one call (each returns what the app would use)."""
    sdks = {
        name: openai.OpenAI(api_key="sk-bench", http_client=client, max_retries=0)
        for name, client in http.items()
    }

    def raw_get(client: httpx2.Client) -> Callable[[], Any]:
        return lambda: client.get(f"{API}/models").content

    def raw_post(client: httpx2.Client) -> Callable[[], Any]:
        return lambda: client.post(f"{API}/chat/completions", json=CHAT_REQUEST).content

    def sdk_models(sdk: openai.OpenAI) -> Callable[[], Any]:
        return lambda: sdk.models.list().data

    def sdk_chat(sdk: openai.OpenAI) -> Callable[[], Any]:
        return lambda: (
            sdk.chat.completions.create(model="gpt-4o-mini", messages=QUESTION).choices[0].message.content
        )

    def sdk_stream(sdk: openai.OpenAI) -> Callable[[], Any]:
        def call() -> str:
            stream = sdk.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True)
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

        return call

    def unrecorded(call: Callable[[], Any]) -> Callable[[], Any]:
        shared = writer()

        def run() -> Any:
            shared.submit = _discard  # type: ignore[method-assign]
            try:
                return call()
            finally:
                del shared.submit

        return run

    table: dict[str, dict[str, Callable[[], Any]]] = {}
    for label, make, over, posts in (
        ("GET /v1/models (httpx2)", raw_get, http, False),
        ("POST chat (httpx2)", raw_post, http, True),
        ("openai models.list()", sdk_models, sdks, False),
        ("openai chat.completions.create()", sdk_chat, sdks, True),
        ("openai chat, stream=True, 10 chunks", sdk_stream, sdks, True),
    ):
        table[label] = {
            name: make(target)  # type: ignore[arg-type]
            for name, target in over.items()
            if not (posts and name == "hishel hit")
        }
        table[label]["hit, not recorded"] = unrecorded(table[label]["httptrack hit"])
    return table


def _discard(exchange: Any) -> None:
    pass


# -- measuring ------------------------------------------------------------------------------


def check_served_from_cache(
    http: dict[str, httpx2.Client], table: dict[str, dict[str, Callable[[], Any]]]
) -> None:
    """Warm every cache, then prove each "hit" variant really is served from its cache."""
    for variants in table.values():
        expected = variants["bare"]()
        for name, call in variants.items():
            call()
            httptrack.flush()
            assert call() == expected, (name, "returns something else than the bare call")
    hit = http["httptrack hit"].post(f"{API}/chat/completions", json=CHAT_REQUEST)
    assert hit.headers["x-httptrack-cache"] == "HIT", hit.headers
    hit = http["hishel hit"].get(f"{API}/models")
    assert hit.extensions["caching"]["from_cache"], hit.extensions


Samples = dict[str, dict[str, list[int]]]


def measure(
    table: dict[str, dict[str, Callable[[], Any]]], rounds: int, calls: int
) -> tuple[Samples, Samples]:
    """Per scenario and variant: every call's wall time, and per round the process CPU time
    per call (both threads: the app's and the background writer's, flushed in the count)."""
    wall: Samples = {s: {v: [] for v in vs} for s, vs in table.items()}
    cpu: Samples = {s: {v: [] for v in vs} for s, vs in table.items()}
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for scenario, variants in table.items():
            for name, call in variants.items():
                times = wall[scenario][name]
                gc.collect()
                cpu_start = time.process_time_ns()
                for _ in range(calls):
                    start = clock()
                    call()
                    times.append(clock() - start)
                httptrack.flush()  # the recording of these calls is part of their cost
                cpu[scenario][name].append((time.process_time_ns() - cpu_start) // calls)
    return wall, cpu


def report(samples: Samples, summary: Callable[[list[int]], float] = statistics.median) -> str:
    columns = ["bare", "httptrack hit", "hishel hit", "hit, not recorded", "httptrack, cache off"]
    lines = [
        f"{'scenario':38} " + " ".join(f"{c:>21}" for c in columns) + f" {'hit / hishel':>13}",
        "-" * (38 + 22 * len(columns) + 14),
    ]
    for scenario, variants in samples.items():
        medians = {name: summary(times) / 1000 for name, times in variants.items()}
        base = medians["bare"]
        cells = []
        for column in columns:
            if column not in medians:
                cells.append(f"{'n/a':>21}")
            elif column == "bare":
                cells.append(f"{base:>15.1f} µs   ")
            else:
                cells.append(f"{medians[column]:>8.1f} µs ({medians[column] / base:4.2f}x)")
        vs = f"{medians['httptrack hit'] / medians['hishel hit']:.2f}x" if "hishel hit" in medians else "n/a"
        lines.append(f"{scenario:38} " + " ".join(cells) + f" {vs:>13}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--calls", type=int, default=50, help="calls per variant per round")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 20 calls")
    args = parser.parse_args(argv)
    rounds, calls = (2, 20) if args.quick else (args.rounds, args.calls)
    with tempfile.TemporaryDirectory(prefix="httptrack-bench-") as folder:
        http = clients(Path(folder))
        table = scenarios(http)
        check_served_from_cache(http, table)
        wall, cpu = measure(table, rounds, calls)
        for client in http.values():
            client.close()
    versions = f"httpx2 {httpx2.__version__}, openai {openai.__version__}, hishel {_version('hishel')}"
    print(f"{rounds} rounds x {calls} calls per variant, interleaved.")
    print(f"Python {sys.version.split()[0]}, {versions}.\n")
    print("Median wall time per call:\n")
    print(report(wall))
    print("\nCPU time per call, whole process (the background recording included; the best round):\n")
    print(report(cpu, min))
    print("\n(x: relative to bare; hit / hishel < 1 means httptrack's hit is the faster.)")
    return 0


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    raise SystemExit(main())
