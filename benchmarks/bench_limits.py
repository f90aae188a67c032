"""What a limit costs a call, side by side with the same call under no limit, in one run.

    python benchmarks/bench_limits.py            # about a minute
    python benchmarks/bench_limits.py --quick    # a smoke run (seconds)

Every call is a non-streaming chat completion posted through ``httpx2`` to an in-memory
inner transport (``MockTransport``), tracked with the cache off, so httptrack's share is as
large as it can ever be. Variants, interleaved in rounds:

- **no limits**: the transport as most users have it (the check is one attribute test);
- **limits, none matching**: limits whose ``match`` excludes the call (the filter only);
- **requests/minute**: a rate limit: one transaction, no token count;
- **usd/day by user**: a budget: the prompt counted, priced, reserved (one transaction on
  the app's thread), settled by the writer afterwards (one transaction per batch);
- **usd + tokens + requests**: three limits on one call (still one transaction);
- **async usd/day**: the budget from an ``AsyncClient``: the check runs in a worker thread.

Figures: wall time per call on the caller's side (the writer's work, settling included,
is flushed after each round and reported apart), median over rounds with the spread. In
that loop the writer is always busy with the previous calls' rows, and every SQLite
statement and token count releases the GIL to it: that is the worst case. Then the check
alone with the writer idle (as between real LLM calls, which take 100 ms and more): the
check and the settlement timed apart. Also the cost of counting a long prompt (what a
budget adds per prompt token).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # measure this checkout's httptrack

from _payloads import OPENAI_CHAT_COMPLETION  # noqa: E402

import httptrack  # noqa: E402
from httptrack import Limit  # noqa: E402

CHAT = "https://api.openai.com/v1/chat/completions"
HEADERS = {"authorization": "Bearer sk-bench"}
_counter = itertools.count()


def body() -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "max_tokens": 200,
        "messages": [
            {"role": "user", "content": f"What is the capital of France? (question {next(_counter)})"}
        ],
    }


def handler(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(200, headers={"content-type": "application/json"}, content=OPENAI_CHAT_COMPLETION)


VARIANTS: dict[str, list[Limit] | None] = {
    "no limits": None,
    "limits, none matching": [
        Limit(usd=1e9, per="day", match={"provider": "anthropic"}),
        Limit(requests=10**9, per="minute", match={"service": "other"}),
    ],
    "requests/minute": [Limit(requests=10**9, per="minute")],
    "usd/day by user": [Limit(usd=1e9, per="day", by="user")],
    "usd + tokens + requests": [
        Limit(usd=1e9, per="day", by="user"),
        Limit(tokens=10**12, per="hour", by=("user", "model")),
        Limit(requests=10**9, per="minute", by="service"),
    ],
}


def make_clients(tmp: Path) -> dict[str, Callable[[], Any]]:
    calls: dict[str, Callable[[], Any]] = {}
    for name, limits in VARIANTS.items():
        transport = httptrack.TrackingTransport(
            httpx2.MockTransport(handler), db=tmp / f"{name.replace('/', '_')}.db", cache=False, limits=limits
        )
        client = httpx2.Client(transport=transport)

        def call(client: httpx2.Client = client) -> Any:
            with httptrack.attribute(user="alice", service="bench"):
                return client.post(CHAT, json=body(), headers=HEADERS).status_code

        calls[name] = call
    return calls


def make_async(tmp: Path) -> tuple[httpx2.AsyncClient, Callable[[int], Any]]:
    transport = httptrack.AsyncTrackingTransport(
        httpx2.MockTransport(handler), db=tmp / "async.db", cache=False, limits=VARIANTS["usd/day by user"]
    )
    client = httpx2.AsyncClient(transport=transport)

    async def run(n: int) -> None:
        with httptrack.attribute(user="alice"):
            for _ in range(n):
                await client.post(CHAT, json=body(), headers=HEADERS)

    return client, run


def idle_check(db: Path, limits: list[Limit], count: int, rounds: int) -> tuple[float, float, float, float]:
    """The enforcer's check and settlement on prepared calls, nothing else running."""
    from httptrack._settings import Settings
    from httptrack._tracker import Tracker

    tracker = Tracker(Settings(db=db, cache=False, limits=limits))
    enforcer = tracker.enforcer

    def prepared(n: int) -> list[Any]:
        made = []
        for _ in range(n):
            request = httpx2.Request("POST", CHAT, headers=HEADERS, json=body())
            with httptrack.attribute(user="alice", service="bench"):
                exchange = tracker.begin(request)
            assert exchange is not None
            exchange.request_body = request.read()
            made.append(exchange)
        return made

    for exchange in prepared(20):
        ticket = enforcer.check(exchange)
    enforcer.flush()
    checks, settles = [], []
    for _ in range(max(rounds, 3)):
        batch = prepared(count)
        start = time.perf_counter()
        tickets = [enforcer.check(exchange) for exchange in batch]
        middle = time.perf_counter()
        for ticket in tickets:
            if ticket is not None:
                ticket.settle(0.0001, 20)
                enforcer.flush()
        end = time.perf_counter()
        checks.append((middle - start) / count * 1e6)
        settles.append((end - middle) / count * 1e6)
    return statistics.median(checks), min(checks), statistics.median(settles), min(settles)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 rounds of 20 calls")
    args = parser.parse_args(argv)
    rounds, count = (2, 20) if args.quick else (args.rounds, args.calls)
    loop = asyncio.new_event_loop()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        calls = make_clients(tmp)
        aclient, arun = make_async(tmp)
        calls["async usd/day"] = lambda: None  # measured below, in its loop
        for call in calls.values():  # warm: imports, price data, token encoding, tables
            call()
        loop.run_until_complete(arun(2))
        httptrack.flush()
        time.sleep(1.5)  # the background warm-up of prices and encodings
        per_call: dict[str, list[float]] = {name: [] for name in calls}
        settle: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(rounds):
            for name, call in calls.items():
                start = time.perf_counter()
                if name == "async usd/day":
                    loop.run_until_complete(arun(count))
                else:
                    for _ in range(count):
                        call()
                middle = time.perf_counter()
                httptrack.flush()
                end = time.perf_counter()
                per_call[name].append((middle - start) / count * 1e6)
                settle[name].append((end - middle) / count * 1e6)
        loop.run_until_complete(aclient.aclose())

        print(f"{rounds} rounds x {count} calls per variant, interleaved; µs per call, median (min-max).")
        print()
        base = statistics.median(per_call["no limits"])
        print(f"{'variant':<26} {'caller':>20} {'vs no limits':>13} {'writer (flush)':>20}")
        for name in calls:
            figures = per_call[name]
            median = statistics.median(figures)
            spread = f"{median:7.0f} ({min(figures):.0f}-{max(figures):.0f})"
            writer = (
                f"{statistics.median(settle[name]):7.0f} ({min(settle[name]):.0f}-{max(settle[name]):.0f})"
            )
            print(f"{name:<26} {spread:>20} {median - base:+12.0f} {writer:>20}")

        print()
        print("The check alone, writer idle (µs per call, median of rounds (fastest round)):")
        print(f"{'variant':<26} {'check':>14} {'settle':>14}")
        for name, limits in VARIANTS.items():
            if limits is None:
                continue
            figures = idle_check(tmp / f"idle-{len(name)}.db", limits, 5 if args.quick else 300, rounds)
            check, settle_ = f"{figures[0]:.0f} ({figures[1]:.0f})", f"{figures[2]:.0f} ({figures[3]:.0f})"
            print(f"{name:<26} {check:>14} {settle_:>14}")

        from httptrack.limits._estimate import read_call
        from httptrack.providers import provider_by_name

        print()
        print("Counting a prompt for a budget (on the caller's side, per call):")
        openai_provider = provider_by_name("openai")
        for words in (100, 1000, 10000):
            text = " ".join(f"word{i % 97}" for i in range(words))
            payload = httpx2.Request(
                "POST", CHAT, json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
            )
            raw = payload.read()
            repeats = 3 if args.quick else 20
            start = time.perf_counter()
            for _ in range(repeats):
                estimate = read_call(
                    openai_provider, "chat", "POST", "/v1/chat/completions", "", "api.openai.com", raw
                )
                tokens = estimate.count_input()
            elapsed = (time.perf_counter() - start) / repeats * 1e6
            print(f"  {words:>6} words ({tokens:>6} tokens): {elapsed:8.0f} µs")
    loop.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
