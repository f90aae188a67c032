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

Then, side by side with the behaviour before them (each in the same run):

- **single-flight**: rounds of 10 identical chat calls made at once from 10 threads, against
  a provider that takes 20 ms to answer: provider calls per round and whole-process CPU per
  call with single-flight (the default) and without it (``cache_wait=0``: every one is
  sent, as before);
- **compression**: realistic answers (a chat completion with a few paragraphs, a 300-token
  OpenAI stream, Anthropic and Ollama streams, 1,536-dimension embeddings) stored as cache
  entries, raw (as before) and compressed with zstd: bytes per entry and the CPU to encode
  and decode one.

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
import random
import statistics
import sys
import tempfile
import threading
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
        flights = single_flight(Path(folder), 2 if args.quick else 20)
    packed = compression(20 if args.quick else 500)
    versions = f"httpx2 {httpx2.__version__}, openai {openai.__version__}, hishel {_version('hishel')}"
    print(f"{rounds} rounds x {calls} calls per variant, interleaved.")
    print(f"Python {sys.version.split()[0]}, {versions}.\n")
    print("Median wall time per call:\n")
    print(report(wall))
    print("\nCPU time per call, whole process (the background recording included; the best round):\n")
    print(report(cpu, min))
    print("\n(x: relative to bare; hit / hishel < 1 means httptrack's hit is the faster.)")
    print("\nSingle-flight: 10 identical calls at once (threads; the provider takes 20 ms):\n")
    print(flights)
    print("\nCache entries of realistic answers, raw (before) and compressed with zstd (level 3):\n")
    print(packed)
    return 0


# -- single-flight ---------------------------------------------------------------------------


def single_flight(tmp: Path, rounds: int) -> str:
    """Rounds of 10 identical calls at once, with and without single-flight (interleaved,
    after a warm-up round each)."""
    variants = {"single-flight (default)": None, "cache_wait=0 (before)": 0}
    sent: dict[str, list[int]] = {label: [] for label in variants}
    sdks = {}
    for label, wait in variants.items():

        def slow(request: httpx2.Request, sent: list[int] = sent[label]) -> httpx2.Response:
            sent.append(1)
            time.sleep(0.02)  # the provider thinking
            return httpx2.Response(200, headers={"content-type": "application/json"}, content=CHAT_BODY)

        options: dict[str, Any] = {} if wait is None else {"cache_wait": wait}
        transport = httptrack.TrackingTransport(
            httpx2.MockTransport(slow),
            db=tmp / f"flight-{wait}.db",
            cache_dir=tmp / f"flight-{wait}",
            cache_max_hits=0,
            **options,
        )
        sdks[label] = openai.OpenAI(
            api_key="sk-bench", http_client=httpx2.Client(transport=transport, headers=HEADERS), max_retries=0
        )
    cpu = dict.fromkeys(variants, 0.0)
    wall = dict.fromkeys(variants, 0.0)
    for round_ in range(-1, rounds):
        for label, sdk in sdks.items():
            question = [{"role": "user", "content": f"{label} round {round_}"}]

            def ask(sdk: openai.OpenAI = sdk, question: list[dict[str, str]] = question) -> None:
                sdk.chat.completions.create(model="gpt-4o-mini", messages=question)

            threads = [threading.Thread(target=ask) for _ in range(10)]
            if round_ < 0:
                sent[label].clear()
            cpu_start, wall_start = time.process_time(), time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            httptrack.flush()
            if round_ < 0:  # warm-up
                sent[label].clear()
                continue
            cpu[label] += time.process_time() - cpu_start
            wall[label] += time.perf_counter() - wall_start
    lines = [f"{'variant':34} {'provider calls per 10':>22} {'CPU per call':>14} {'wall per round':>15}"]
    for label in variants:
        lines.append(
            f"{label:34} {len(sent[label]) / rounds:>22.1f} {cpu[label] / (rounds * 10) * 1e6:>11.0f} µs "
            f"{wall[label] / rounds * 1000:>12.1f} ms"
        )
    ratio = cpu["single-flight (default)"] / cpu["cache_wait=0 (before)"]
    lines.append(f"(whole-process CPU per call, single-flight / before: {ratio:.2f}x)")
    return "\n".join(lines)


# -- compression ---------------------------------------------------------------------------


def realistic_answers() -> dict[str, tuple[bytes, ...]]:
    """Answers as providers send them, with prose as models write it (this repository's
    documentation), numbers as embeddings hold them."""
    from httptrack._fake import fake_exchange

    prose = (ROOT / "docs" / "cache.md").read_text().split()
    rng = random.Random(7)
    start = rng.randrange(len(prose) - 2000)
    words = [f" {w}" for w in prose[start : start + 300]]
    chat = json.loads(CHAT_BODY)
    chat["choices"][0]["message"]["content"] = "".join(words).strip()
    embedding = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [rng.uniform(-0.1, 0.1) for _ in range(1536)]}
        ],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 8, "total_tokens": 8},
    }
    prompt = " ".join(prose[start : start + 40])

    def fake(path: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[bytes, ...]:
        reply = fake_exchange("POST", path, "", headers, json.dumps(body).encode())
        return tuple(reply.chunks)

    return {
        "chat completion (300 words)": (json.dumps(chat).encode(),),
        "OpenAI stream (300 tokens)": tuple(openai_chat_stream(words)),
        "Anthropic stream": fake(
            "/v1/messages",
            {
                "model": "claude-3-5-haiku-latest",
                "max_tokens": 500,
                "stream": True,
                "messages": [{"role": "user", "content": prompt}],
            },
            {"anthropic-version": "2023-06-01"},
        ),
        "Ollama stream (NDJSON)": fake(
            "/api/chat", {"model": "llama3.2", "messages": [{"role": "user", "content": prompt}]}, {}
        ),
        "embeddings (1,536 floats)": (json.dumps(embedding).encode(),),
    }


def compression(repeat: int) -> str:
    from httptrack.cache._entry import CacheEntry, decode_entry, encode_entry

    lines = [
        f"{'answer':30} {'raw (before)':>13} {'zstd':>9} {'saved':>7} "
        f"{'encode raw/zstd':>18} {'decode raw/zstd':>18}"
    ]
    total_raw = total_zstd = 0
    for name, chunks in realistic_answers().items():
        entry = CacheEntry(
            200, ((b"content-type", b"application/json"),), chunks, {"input_tokens": 14}, 0.0, 3600.0, {}
        )
        timings = []
        for compress_above in (None, 1024):
            blob = encode_entry(entry, compress_above=compress_above)
            start = time.process_time()
            for _ in range(repeat):
                encode_entry(entry, compress_above=compress_above)
            encode = (time.process_time() - start) / repeat
            start = time.process_time()
            for _ in range(repeat):
                decode_entry(blob)
            decode = (time.process_time() - start) / repeat
            timings.append((len(blob), encode, decode))
        (raw, enc_raw, dec_raw), (packed, enc_z, dec_z) = timings
        total_raw += raw
        total_zstd += packed
        lines.append(
            f"{name:30} {raw:>11,} B {packed:>7,} B {1 - packed / raw:>6.0%} "
            f"{enc_raw * 1e6:>7.1f}/{enc_z * 1e6:<6.1f} µs {dec_raw * 1e6:>7.1f}/{dec_z * 1e6:<6.1f} µs"
        )
    lines.append(
        f"{'all of them':30} {total_raw:>11,} B {total_zstd:>7,} B {1 - total_zstd / total_raw:>6.0%}"
    )
    return "\n".join(lines)


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    raise SystemExit(main())
