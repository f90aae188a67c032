"""A call log written through the real write path, for ``bench_log.py --written``.

Every call goes through ``httptrack.TrackingTransport`` in an ``httpx2.Client`` (attribution
with ``httptrack.attribute``), and its row through the background writer as in any app: the
spool, ``build_row`` (parse, price, redact), the batched ``Store.write`` with compression,
the search index and the rollups. Only the network is replaced: an in-memory transport
answers each request as its provider would (OpenAI, Anthropic, Gemini, Ollama, Mistral,
Groq; plain and streamed; embeddings; errors), with the same distributions as
``bench_log``'s generator (providers, models, users, services, sessions, tokens, latencies,
prompts and answers from its word list). Two clocks are simulated so the log spans 90 days
as a real one would: the wall clock a call starts at (``Exchange.started_at`` and the
call's id) and the latency the provider takes (the response's first and last bytes arrive
that much later on the transport's clock). Cache hits are not simulated (the response
cache stays off: half a million stored responses would be a second benchmark).

Several processes can drive calls at once (``--procs``): each takes every P-th call of the
same 90-day plan, so rows still arrive about in time order, each process with its own
writer, as several workers of one app would. A run that stopped is resumed from the number
of calls in the database.

    python benchmarks/_written.py worker K P N DB START   # what bench_log.py starts
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


class _Clock:
    """The two clocks of ``httptrack._exchange``: ``time()`` is the simulated moment the
    current call starts; ``perf_counter()`` runs as the real one plus the provider's
    simulated waits (added by the fake transport as the response's bytes arrive)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waited = 0.0

    def time(self) -> float:
        return self.now

    def perf_counter(self) -> float:
        return time.perf_counter() + self.waited

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def _sse(obj: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(obj)}\n\n".encode()


class Plan:
    """What one call asks and what its provider answers."""

    __slots__ = (
        "body",
        "chunks",
        "ctype",
        "headers",
        "latency",
        "status",
        "stream",
        "ttft",
        "url",
    )


def _answer(plan: Plan, clock: _Clock) -> Any:
    import httpx2

    def handler(request: Any) -> Any:
        p = plan
        if p.stream:
            clock.waited += p.ttft / 1000

            def chunks() -> Iterator[bytes]:
                last = len(p.chunks) - 1
                for i, chunk in enumerate(p.chunks):
                    if i == last:
                        clock.waited += (p.latency - p.ttft) / 1000
                    yield chunk

            return httpx2.Response(p.status, headers=p.headers, content=chunks())
        clock.waited += p.latency / 1000
        return httpx2.Response(p.status, headers=p.headers, content=p.body)

    return httpx2.MockTransport(handler)


def _pieces(text: str, n: int = 6) -> list[str]:
    words = text.split(" ")
    step = max(1, math.ceil(len(words) / n))
    return [
        " ".join(words[i : i + step]) + (" " if i + step < len(words) else "")
        for i in range(0, len(words), step)
    ]


def _plan_call(
    plan: Plan,
    rng: random.Random,
    bl: Any,
    pools: tuple[list[list[dict[str, str]]], list[str]],
) -> tuple[dict[str, Any], bytes]:
    """Fill ``plan`` for one call; returns (attribution, request body)."""
    turns_pool, texts = pools
    providers = list(bl.PROVIDER_WEIGHTS)
    provider = rng.choices(providers, weights=list(bl.PROVIDER_WEIGHTS.values()))[0]
    models = bl.MODELS[provider]
    model = rng.choices(models, weights=[m[1] for m in models])[0][0]
    embeddings = "embed" in model
    stream = not embeddings and provider != "groq" and rng.random() < 0.55
    input_tokens = max(1, int(rng.lognormvariate(6.7, 0.9)))
    output_tokens = 0 if embeddings else max(1, int(rng.lognormvariate(5.5, 0.8)))
    error = rng.random() < 0.025
    latency = (
        rng.lognormvariate(4.0, 0.5)
        if embeddings
        else rng.lognormvariate(6.0, 0.4) + output_tokens * rng.uniform(8, 25)
    )
    if error:
        latency = rng.lognormvariate(5.0, 0.6)
    turns = turns_pool[rng.randrange(len(turns_pool))]
    text = texts[rng.randrange(len(texts))]
    host = bl.HOSTS[provider]
    scheme = "http" if provider == "ollama" else "https"
    plan.latency, plan.ttft = latency, latency * rng.uniform(0.05, 0.3)
    plan.stream = stream and not error
    plan.status = 200
    plan.ctype = "application/json"
    request: dict[str, Any]
    # The request, in the provider's format.
    if embeddings:
        if provider == "ollama":
            path, request = "/api/embed", {"model": model, "input": turns[-1]["content"]}
        else:
            path, request = "/v1/embeddings", {"model": model, "input": turns[-1]["content"]}
    elif provider == "anthropic":
        path = "/v1/messages"
        request = {
            "model": model,
            "max_tokens": 1024,
            "system": turns[0]["content"],
            "messages": turns[1:],
            "stream": stream,
        }
    elif provider == "gemini":
        verb = "streamGenerateContent?alt=sse" if stream else "generateContent"
        path = f"/v1beta/models/{model}:{verb}"
        request = {
            "systemInstruction": {"parts": [{"text": turns[0]["content"]}]},
            "contents": [
                {"role": "user" if t["role"] == "user" else "model", "parts": [{"text": t["content"]}]}
                for t in turns[1:]
            ],
        }
    elif provider == "ollama":
        path, request = "/api/chat", {"model": model, "messages": turns, "stream": stream}
    else:
        path = "/openai/v1/chat/completions" if provider == "groq" else "/v1/chat/completions"
        request = {"model": model, "messages": turns, "temperature": 0.2}
        if stream:
            request.update(stream=True, stream_options={"include_usage": True})
    plan.url = f"{scheme}://{host}{path}"
    body = json.dumps(request).encode()
    # The response.
    if error:
        status = rng.choice([429, 429, 500, 503, 400])
        message = "Rate limit reached" if status == 429 else "Server error"
        plan.status = status
        if provider == "anthropic":
            kind = "rate_limit_error" if status == 429 else "api_error"
            plan.body = json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()
        else:
            plan.body = json.dumps({"error": {"message": message, "type": "error", "code": status}}).encode()
    elif embeddings:
        vector = [round(rng.uniform(-1, 1), 6) for _ in range(16)]
        if provider == "ollama":
            plan.body = json.dumps(
                {"model": model, "embeddings": [vector], "prompt_eval_count": input_tokens}
            ).encode()
        else:
            plan.body = json.dumps(
                {
                    "object": "list",
                    "data": [{"object": "embedding", "index": 0, "embedding": vector}],
                    "model": model,
                    "usage": {"prompt_tokens": input_tokens, "total_tokens": input_tokens},
                }
            ).encode()
    elif provider == "anthropic":
        msg = {"id": f"msg_{rng.getrandbits(64):x}", "type": "message", "role": "assistant", "model": model}
        if stream:
            plan.ctype = "text/event-stream"
            start = {**msg, "content": [], "usage": {"input_tokens": input_tokens, "output_tokens": 1}}
            plan.chunks = [
                _sse({"type": "message_start", "message": start}, "message_start"),
                _sse(
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    },
                    "content_block_start",
                ),
                *(
                    _sse(
                        {
                            "type": "content_block_delta",
                            "index": 0,
                            "delta": {"type": "text_delta", "text": piece},
                        },
                        "content_block_delta",
                    )
                    for piece in _pieces(text)
                ),
                _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
                _sse(
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": "end_turn"},
                        "usage": {"output_tokens": output_tokens},
                    },
                    "message_delta",
                ),
                _sse({"type": "message_stop"}, "message_stop"),
            ]
        else:
            plan.body = json.dumps(
                {
                    **msg,
                    "content": [{"type": "text", "text": text}],
                    "stop_reason": "end_turn",
                    "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
                }
            ).encode()
    elif provider == "gemini":
        usage = {
            "promptTokenCount": input_tokens,
            "candidatesTokenCount": output_tokens,
            "totalTokenCount": input_tokens + output_tokens,
        }

        def candidate(part: str, done: bool) -> dict[str, Any]:
            c: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": part}]}, "index": 0}
            if done:
                c["finishReason"] = "STOP"
            return c

        if stream:
            plan.ctype = "text/event-stream"
            pieces = _pieces(text)
            plan.chunks = [
                _sse(
                    {
                        "candidates": [candidate(p, i == len(pieces) - 1)],
                        "usageMetadata": usage,
                        "modelVersion": model,
                    }
                )
                for i, p in enumerate(pieces)
            ]
        else:
            plan.body = json.dumps(
                {"candidates": [candidate(text, True)], "usageMetadata": usage, "modelVersion": model}
            ).encode()
    elif provider == "ollama":
        done = {
            "model": model,
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": input_tokens,
            "eval_count": output_tokens,
        }
        if stream:
            plan.ctype = "application/x-ndjson"
            plan.chunks = [
                json.dumps(
                    {"model": model, "message": {"role": "assistant", "content": p}, "done": False}
                ).encode()
                + b"\n"
                for p in _pieces(text)
            ]
            plan.chunks.append(
                json.dumps({**done, "message": {"role": "assistant", "content": ""}}).encode() + b"\n"
            )
        else:
            plan.body = json.dumps({**done, "message": {"role": "assistant", "content": text}}).encode()
    else:  # OpenAI's format: openai, mistral, groq
        answer_model = f"{model}-2025-01-01" if provider == "openai" else model
        cid = f"chatcmpl-{rng.getrandbits(64):x}"
        usage = {
            "prompt_tokens": input_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        }
        if provider == "openai" and rng.random() < 0.2:
            usage["prompt_tokens_details"] = {"cached_tokens": int(input_tokens * 0.6)}
        if stream:
            plan.ctype = "text/event-stream"
            head = {"id": cid, "object": "chat.completion.chunk", "model": answer_model}
            plan.chunks = [
                _sse({**head, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]})
                for p in _pieces(text)
            ]
            plan.chunks.append(
                _sse({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            )
            plan.chunks.append(_sse({**head, "choices": [], "usage": usage}))
            plan.chunks.append(b"data: [DONE]\n\n")
        else:
            plan.body = json.dumps(
                {
                    "id": cid,
                    "object": "chat.completion",
                    "model": answer_model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                }
            ).encode()
    plan.headers = {"content-type": plan.ctype, "x-request-id": f"req_{rng.getrandbits(48):x}"}
    attribution: dict[str, Any] = {}
    if rng.random() > 0.08:
        attribution["user"] = rng.choices(USERS, cum_weights=USER_CUM)[0]
    service = rng.choice(bl.SERVICES)
    if service is not None:
        attribution["service"] = service
    if rng.random() < 0.3:
        attribution["session"] = f"s-{rng.randrange(200_000)}"
    return attribution, body


#: The driver waits while the writer has more than QUEUE_HIGH calls queued, until QUEUE_LOW.
QUEUE_HIGH = 5000
QUEUE_LOW = 1000
USERS = [f"user-{i:03d}" for i in range(300)]
USER_CUM: list[float] = []


def _times(n: int, seed: int, end: float) -> list[float]:
    """The moments of the plan's ``n`` calls over 90 days to ``end``: more lately."""
    rng = random.Random(seed)
    start = end - 90 * 86400
    return sorted(start + (end - start) * math.sqrt(rng.random()) for _ in range(n))


def worker(k: int, procs: int, n: int, db: Path, start: int, end: float) -> None:
    """Drive this process's share of calls ``start..n`` (every ``procs``-th, from ``k``)."""
    import itertools

    sys.path.insert(0, str(HERE))
    import bench_log as bl
    import httpx2

    import httptrack
    from httptrack import _exchange

    USER_CUM.extend(itertools.accumulate(bl._zipf_weights(len(USERS))))
    clock = _Clock()
    _exchange.time = clock  # type: ignore[assignment]
    rng = random.Random(f"{k}-{start}")
    turns_pool: list[list[dict[str, str]]] = []
    texts: list[str] = []
    pool_rng = random.Random(7)
    for _ in range(bl.BODY_POOL):
        turns = [{"role": "system", "content": bl._sentence(pool_rng, pool_rng.randint(10, 60))}]
        for i in range(pool_rng.choice([1, 1, 1, 3, 5])):
            turns.append(
                {
                    "role": "user" if i % 2 == 0 else "assistant",
                    "content": bl._sentence(pool_rng, pool_rng.randint(8, 80)),
                }
            )
        turns_pool.append(turns)
        texts.append(
            " ".join(bl._sentence(pool_rng, pool_rng.randint(6, 25)) for _ in range(pool_rng.randint(2, 10)))
        )
    times = _times(n, 7, end)
    from httptrack.record._writer import writer as the_writer

    queue = the_writer()._queue  # calls waiting for the writer
    plan = Plan()
    transport = httptrack.TrackingTransport(_answer(plan, clock), db=db, cache=False)
    client = httpx2.Client(transport=transport, headers={"authorization": "Bearer sk-bench-not-a-key"})
    mine = range(start + ((k - start) % procs), n, procs)
    t0 = time.perf_counter()
    done = 0
    with client:
        for i in mine:
            clock.now = times[i]
            attribution, body = _plan_call(plan, rng, bl, (turns_pool, texts))
            headers = {"content-type": "application/json"}
            with httptrack.attribute(**attribution):
                if plan.stream:
                    with client.stream("POST", plan.url, content=body, headers=headers) as reply:
                        for _ in reply.iter_bytes():
                            pass
                else:
                    client.post(plan.url, content=body, headers=headers)
            done += 1
            # An app waits for its calls' answers; this one would outrun the writer (and
            # past HTTPTRACK_MAX_QUEUE calls, the writer drops them): it waits while the
            # writer is more than a few thousand calls behind.
            if done % 100 == 0 and len(queue) > QUEUE_HIGH:
                while len(queue) > QUEUE_LOW:
                    time.sleep(0.02)
            if done % 10_000 == 0:
                rate = done / (time.perf_counter() - t0)
                print(f"worker {k}: {done:,} calls ({rate:,.0f}/s)", file=sys.stderr, flush=True)
        httptrack.flush()
    print(f"worker {k}: {done:,} calls in {time.perf_counter() - t0:,.0f} s", file=sys.stderr, flush=True)


def count_calls(db: Path) -> int:
    import sqlite3

    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM calls").fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        conn.close()


def write_through_transport(db: Path, n: int, procs: int = 1, code: Path | None = None) -> float:
    """Bring ``db`` to ``n`` calls written through TrackingTransport and the writer, in
    ``procs`` processes (resuming from the calls already there). Returns the seconds it took."""
    start = count_calls(db)
    end_file = Path(f"{db}.plan-end")
    if start and end_file.exists():
        end = float(end_file.read_text())
    else:
        end = time.time()
        end_file.write_text(repr(end))
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(code or HERE.parent)}
    workers = [
        subprocess.Popen(
            [sys.executable, __file__, "worker", str(k), str(procs), str(n), str(db), str(start), repr(end)],
            env=env,
        )
        for k in range(procs)
    ]
    failed = [w.args for w in workers if w.wait() != 0]
    written = count_calls(db)
    if not failed and written < n:
        raise RuntimeError(f"{n - written:,} calls were not written (dropped?): see the workers' output")
    if failed:
        raise RuntimeError(f"workers failed: {failed}")
    return time.perf_counter() - t0


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        k, procs, n, db, start, end = sys.argv[2:8]
        worker(int(k), int(procs), int(n), Path(db), int(start), float(end))
