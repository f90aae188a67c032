"""Read-your-writes and single-flight: an answer is found as soon as it is delivered (no
``flush()``), and identical requests in flight at once are sent once — across threads,
asyncio tasks and processes — through the real SDKs. Provider calls are counted at the
fake provider (in memory, or on 127.0.0.1 for the processes)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import groq
import httpx
import httpx2
import ollama
import openai
import pytest
from helpers import chunk_stream, read_rows

import httptrack
from httptrack._fake import FakeProviderServer, RecordedRequest, mock_handler, mock_transport
from httptrack._faults import fault_counts

ROOT = Path(__file__).resolve().parents[2]
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
CHAT_URL = "https://api.openai.com/v1/chat/completions"


def tracking(inner: Any, db: Path, cache_dir: Path, *, asynchronous: bool = False, **options: Any) -> Any:
    kind = httptrack.AsyncTrackingTransport if asynchronous else httptrack.TrackingTransport
    return kind(inner, db=db, cache_dir=cache_dir, **options)


def shared_of(transport: Any) -> Any:
    return transport._tracker.cache._shared


def wait_for_followers(transport: Any, count: int) -> None:
    """Until ``count`` requests wait for the one in flight (at most 10 s)."""
    shared = shared_of(transport)
    for _ in range(1000):
        if sum(f.followers for f in list(shared.flights.values())) >= count:
            return
        time.sleep(0.01)


def hits_and_misses(db: Path) -> tuple[int, int]:
    httptrack.flush()
    rows = read_rows(db)
    return sum(r["cached"] for r in rows), sum(not r["cached"] for r in rows)


# -- read-your-writes -----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "stream"])
def test_back_to_back_calls_hit_without_a_flush_openai(db: Path, cache_dir: Path, stream: bool) -> None:
    seen: list[RecordedRequest] = []
    client = openai.OpenAI(
        api_key="sk-test-a",
        http_client=httpx2.Client(transport=tracking(mock_transport(httpx2, record=seen), db, cache_dir)),
    )
    labels, texts = [], []
    for _ in range(4):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=QUESTION, stream=stream
        )
        labels.append(raw.headers["x-httptrack-cache"])
        if stream:
            texts.append("".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices))
        else:
            texts.append(raw.parse().choices[0].message.content)
    assert labels == ["MISS", "HIT", "HIT", "HIT"]
    assert len(seen) == 1 and len(set(texts)) == 1
    original, *hits = read_rows(db)
    assert original["cost_usd"] > 0
    assert [h["cost_saved_usd"] for h in hits] == [original["cost_usd"]] * 3
    assert {h["outcome"] for h in hits} == {"complete"}


def test_back_to_back_calls_hit_without_a_flush_async(db: Path, cache_dir: Path) -> None:
    seen: list[RecordedRequest] = []

    async def main() -> list[str]:
        transport = tracking(mock_transport(httpx2, record=seen), db, cache_dir, asynchronous=True)
        client = openai.AsyncOpenAI(api_key="sk-test-a", http_client=httpx2.AsyncClient(transport=transport))
        labels = []
        for stream in (False, False, True, True):
            raw = await client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=QUESTION, stream=stream
            )
            labels.append(raw.headers["x-httptrack-cache"])
            if stream:
                [c async for c in raw.parse()]
        await client.close()
        return labels

    assert asyncio.run(main()) == ["MISS", "HIT", "MISS", "HIT"]
    assert len(seen) == 2


def test_back_to_back_calls_hit_without_a_flush_over_httpx(db: Path, cache_dir: Path) -> None:
    """groq and ollama are built on httpx."""
    seen: list[RecordedRequest] = []
    transport = tracking(mock_transport(httpx, record=seen), db, cache_dir)
    chat = groq.Groq(api_key="gsk-test", http_client=httpx.Client(transport=transport), max_retries=0)
    local = ollama.Client(transport=transport)
    answers = [
        chat.chat.completions.create(model="llama-3.1-8b-instant", messages=QUESTION) for _ in range(2)
    ]
    assert answers[0].model_dump() == answers[1].model_dump()
    streamed = [
        "".join(part.message.content for part in local.chat(model="llama3.2", messages=QUESTION, stream=True))
        for _ in range(2)
    ]
    assert streamed[0] == streamed[1] and streamed[0]
    assert len(seen) == 2
    assert hits_and_misses(db) == (2, 2)


def test_record_then_replay_in_one_process_needs_no_flush(db: Path, cache_dir: Path) -> None:
    seen: list[RecordedRequest] = []
    recorder = openai.OpenAI(
        api_key="sk-test-a",
        http_client=httpx2.Client(transport=tracking(mock_transport(httpx2, record=seen), db, cache_dir)),
    )
    player = openai.OpenAI(
        api_key="sk-test-a",
        http_client=httpx2.Client(transport=tracking(mock_transport(httpx2), db, cache_dir, cache="replay")),
    )
    live = recorder.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    replayed = player.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=QUESTION)
    assert replayed.headers["x-httptrack-cache"] == "HIT"
    assert replayed.parse().model_dump() == live.model_dump()
    # A refresh is seen at once too: never a window with neither the old answer nor the new.
    refreshed = tracking(mock_transport(httpx2, record=seen), db, cache_dir, cache="refresh")
    with httpx2.Client(transport=refreshed) as client:
        client.post(CHAT_URL, json={"model": "gpt-4o-mini", "messages": QUESTION}).read()
    assert (
        player.chat.completions.create(model="gpt-4o-mini", messages=QUESTION).model_dump()
        == live.model_dump()
    )
    assert len(seen) == 2


ERROR_STREAM = [
    b'data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,'
    b'"delta":{"content":"Par"},"finish_reason":null}]}\n\n',
    b'data: {"error":{"message":"The server had an error","type":"server_error"}}\n\n',
    b"data: [DONE]\n\n",
]


def test_an_answer_found_uncacheable_later_is_never_served(db: Path, cache_dir: Path) -> None:
    """A 200 stream that ends in an error event looks like an answer to the app's thread;
    it is judged by the writer's rules before it could be served, and is not."""
    seen: list[Any] = []

    def handler(request: Any) -> Any:
        seen.append(request)
        return httpx2.Response(
            200, headers={"content-type": "text/event-stream"}, stream=chunk_stream(httpx2, ERROR_STREAM)
        )

    body = {"model": "gpt-4o-mini", "messages": QUESTION, "stream": True}
    with httpx2.Client(transport=tracking(httpx2.MockTransport(handler), db, cache_dir)) as client:
        labels = []
        for _ in range(3):
            with client.stream("POST", CHAT_URL, json=body) as reply:
                reply.read()
                labels.append(reply.headers["x-httptrack-cache"])
    assert labels == ["MISS"] * 3 and len(seen) == 3
    assert {r["status"] for r in read_rows(db)} == {"error"}


# -- single-flight --------------------------------------------------------------------------


def gated_handler(lib: Any, seen: list[Any], gate: threading.Event) -> Any:
    """The fake provider, holding its first answer until ``gate`` is set (at most 10 s)."""
    answer = mock_handler(lib)

    def handler(request: Any) -> Any:
        seen.append(request)
        if len(seen) == 1:
            gate.wait(10)
        return answer(request)

    return handler


def test_ten_threads_make_one_provider_call(db: Path, cache_dir: Path) -> None:
    seen: list[Any] = []
    gate = threading.Event()
    transport = tracking(httpx2.MockTransport(gated_handler(httpx2, seen, gate)), db, cache_dir)
    client = openai.OpenAI(api_key="sk-test-a", http_client=httpx2.Client(transport=transport), max_retries=0)
    answers: list[Any] = []

    def ask() -> None:
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=QUESTION)
        answers.append((raw.headers["x-httptrack-cache"], raw.parse().choices[0].message.content))

    threads = [threading.Thread(target=ask) for _ in range(10)]
    for thread in threads:
        thread.start()
    wait_for_followers(transport, 9)
    gate.set()
    for thread in threads:
        thread.join(30)
    assert len(seen) == 1
    assert sorted(label for label, _ in answers) == ["HIT"] * 9 + ["MISS"]
    assert len({text for _, text in answers}) == 1
    rows = read_rows(db)
    leader = next(r for r in rows if not r["cached"])
    followers = [r for r in rows if r["cached"]]
    assert len(followers) == 9
    assert {r["cost_saved_usd"] for r in followers} == {leader["cost_usd"]}
    assert {r["total_tokens"] for r in followers} == {leader["total_tokens"]}


def test_ten_asyncio_tasks_make_one_provider_call(db: Path, cache_dir: Path) -> None:
    seen: list[Any] = []
    answer = mock_handler(httpx2)

    async def main() -> list[str]:
        # cache_wait: a follower that blocked the event loop would hold the leader back
        # until then (and the test would fail on the count, not hang).
        transport = tracking(None, db, cache_dir, asynchronous=True, cache_wait=5)

        async def handler(request: Any) -> Any:
            seen.append(request)
            for _ in range(500):  # the leader answers once the other nine wait (at most 5 s)
                shared = shared_of(transport)
                if sum(f.followers for f in list(shared.flights.values())) >= 9:
                    break
                await asyncio.sleep(0.01)
            return answer(request)

        transport._inner = httpx2.MockTransport(handler)
        client = openai.AsyncOpenAI(api_key="sk-test-a", http_client=httpx2.AsyncClient(transport=transport))

        async def ask() -> str:
            raw = await client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=QUESTION
            )
            return str(raw.headers["x-httptrack-cache"])

        labels = await asyncio.wait_for(asyncio.gather(*(ask() for _ in range(10))), 30)
        await client.close()
        return labels

    assert sorted(asyncio.run(main())) == ["HIT"] * 9 + ["MISS"]
    assert len(seen) == 1
    assert hits_and_misses(db) == (9, 1)


class GatedStream:
    """A stream that yields its first chunk, then waits for ``go`` before the rest."""

    def __init__(self, chunks: list[bytes], go: threading.Event) -> None:
        self.chunks = chunks
        self.go = go

    def __iter__(self) -> Any:
        yield self.chunks[0]
        self.go.wait(10)
        yield from self.chunks[1:]

    def close(self) -> None:
        pass


def test_a_follower_gets_each_chunk_as_the_leader_receives_it(db: Path, cache_dir: Path) -> None:
    chunks = [
        b'data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,'
        + b'"delta":{"content":"%s"},"finish_reason":null}]}\n\n' % word
        for word in (b"Paris", b" is", b" the", b" capital")
    ]
    chunks.append(
        b'data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,'
        b'"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    )
    go, asked = threading.Event(), threading.Event()
    seen: list[Any] = []
    stream_type = type("Gated", (GatedStream, httpx2.SyncByteStream), {})

    def handler(request: Any) -> Any:
        seen.append(request)
        asked.set()
        return httpx2.Response(
            200, headers={"content-type": "text/event-stream"}, stream=stream_type(chunks, go)
        )

    transport = tracking(httpx2.MockTransport(handler), db, cache_dir, include_usage=False)
    client = httpx2.Client(transport=transport)
    body = {"model": "gpt-4o-mini", "messages": QUESTION, "stream": True}
    received: dict[str, list[bytes]] = {"leader": [], "follower": []}
    first = threading.Event()

    def read(who: str) -> None:
        with client.stream("POST", CHAT_URL, json=body) as reply:
            for chunk in reply.iter_raw():
                received[who].append(chunk)
                if who == "follower":
                    first.set()

    leader = threading.Thread(target=read, args=("leader",))
    leader.start()
    assert asked.wait(10)
    follower = threading.Thread(target=read, args=("follower",))
    follower.start()
    # The follower has the first chunk while the provider still holds back the second.
    assert first.wait(10) and not go.is_set()
    assert received["follower"] == chunks[:1]
    go.set()
    leader.join(10)
    follower.join(10)
    assert b"".join(received["follower"]) == b"".join(received["leader"]) == b"".join(chunks)
    assert len(seen) == 1
    assert hits_and_misses(db) == (1, 1)


def test_a_failed_leader_releases_the_followers(db: Path, cache_dir: Path) -> None:
    """The first answer is a 500: the followers are not served it; one of them asks anew
    and the rest get that answer."""
    seen: list[Any] = []
    gate = threading.Event()
    answer = mock_handler(httpx2)

    def handler(request: Any) -> Any:
        seen.append(request)
        if len(seen) == 1:
            gate.wait(10)
            return httpx2.Response(500, json={"error": {"message": "boom", "type": "server_error"}})
        return answer(request)

    transport = tracking(httpx2.MockTransport(handler), db, cache_dir)
    client = httpx2.Client(transport=transport)
    statuses: list[int] = []

    def ask() -> None:
        reply = client.post(CHAT_URL, json={"model": "gpt-4o-mini", "messages": QUESTION})
        statuses.append(reply.status_code)

    threads = [threading.Thread(target=ask) for _ in range(5)]
    for thread in threads:
        thread.start()
    wait_for_followers(transport, 4)
    gate.set()
    for thread in threads:
        thread.join(30)
    assert sorted(statuses) == [200] * 4 + [500]
    assert len(seen) == 2


def test_single_flight_can_be_switched_off(db: Path, cache_dir: Path) -> None:
    seen: list[Any] = []
    barrier = threading.Barrier(3, timeout=10)
    answer = mock_handler(httpx2)

    def handler(request: Any) -> Any:
        seen.append(request)
        barrier.wait()  # all three are at the provider at once
        return answer(request)

    transport = tracking(httpx2.MockTransport(handler), db, cache_dir, cache_wait="off")
    client = httpx2.Client(transport=transport)
    threads = [
        threading.Thread(target=lambda: client.post(CHAT_URL, json={"model": "m", "messages": QUESTION}))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(seen) == 3


def test_cache_wait_setting() -> None:
    assert httptrack.Settings().cache_wait == 60.0
    assert httptrack.Settings(cache_wait="2m").cache_wait == 120.0
    assert httptrack.Settings(cache_wait=0).cache_wait == 0.0
    with pytest.raises(httptrack.Settings.__init__.__globals__["SettingsError"]):
        httptrack.Settings(cache_wait="soon")


# -- across processes -----------------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import json, os, sys, threading, time
    import httpx2, openai, httptrack

    url, port, db, cache_dir, ready, go = sys.argv[1:]
    transport = httptrack.TrackingTransport(db=db, cache_dir=cache_dir, hosts={f"127.0.0.1:{port}": "openai"})
    client = openai.OpenAI(api_key="sk-test", base_url=url + "/v1", http_client=httpx2.Client(transport=transport),
                           max_retries=0)
    results = []

    def ask():
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "one answer for all"}], stream=True,
            extra_headers={"x-fake-delay": "0.05"})
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        results.append([raw.headers["x-httptrack-cache"], text])

    open(ready, "w").close()
    deadline = time.monotonic() + 30
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.002)
    threads = [threading.Thread(target=ask) for _ in range(int(os.environ.get("THREADS", "1")))]
    for t in threads: t.start()
    for t in threads: t.join(30)
    httptrack.flush()
    print(json.dumps(results))
    """
)


def test_four_processes_make_one_provider_call(tmp_path: Path, db: Path, cache_dir: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "THREADS": "3"}
    with FakeProviderServer() as server:
        workers = []
        for n in range(4):
            args = [str(server.url), str(server.port), str(db), str(cache_dir), str(tmp_path / f"ready{n}")]
            workers.append(
                subprocess.Popen(
                    [sys.executable, str(script), *args, str(tmp_path / "go")],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        try:
            for _ in range(3000):  # every worker imported and ready (at most 30 s)
                if all((tmp_path / f"ready{n}").exists() for n in range(4)):
                    break
                time.sleep(0.01)
            (tmp_path / "go").touch()
            outputs = [w.communicate(timeout=60) for w in workers]
        finally:
            for w in workers:
                w.kill()
        calls = [r for r in server.requests if r.path.endswith("/chat/completions")]
    results = [json.loads(out) for out, err in outputs]
    assert all(not err for _, err in outputs), [err for _, err in outputs]
    answers = [answer for result in results for answer in result]
    assert len(answers) == 12
    assert len(calls) == 1, results
    assert sorted(label for label, _ in answers) == ["HIT"] * 11 + ["MISS"]
    assert len({text for _, text in answers}) == 1
    assert hits_and_misses(db) == (11, 1)


# -- a busy index -----------------------------------------------------------------------------


def test_a_busy_index_during_eviction_is_counted_without_a_traceback(
    db: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import diskcache

    import httptrack.cache._store as cache_store
    from httptrack.cache._store import shared_store

    monkeypatch.setattr(cache_store, "CULL_INTERVAL", 0.0)  # every batch culls
    with httpx2.Client(transport=tracking(mock_transport(httpx2), db, cache_dir)) as client:
        client.post(CHAT_URL, json={"model": "gpt-4o-mini", "messages": QUESTION}).read()
        httptrack.flush()
        disk = shared_store(cache_dir)._open()

        def busy(*args: Any, **kwargs: Any) -> Any:
            raise diskcache.Timeout("database is locked")

        disk.cull = busy
        client.post(
            CHAT_URL, json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "2"}]}
        ).read()
        httptrack.flush()
    assert fault_counts()["cache_busy"] == 1
    assert "cache_write" not in fault_counts()
    assert not any(record.exc_info for record in caplog.records)


# -- compression ------------------------------------------------------------------------------


def test_large_entries_are_stored_compressed_and_replayed_byte_for_byte(db: Path, cache_dir: Path) -> None:
    from httptrack.cache._entry import _MAGIC_ZSTD, decode_entry
    from httptrack.cache._store import shared_store

    seen: list[RecordedRequest] = []
    client = openai.OpenAI(
        api_key="sk-test-a",
        # Bodies not in the log: the folder keeps the whole answer (else only a reference
        # to the call's row, see test_answers_are_stored_once_in_the_log's tests).
        http_client=httpx2.Client(
            transport=tracking(mock_transport(httpx2, record=seen), db, cache_dir, store_bodies=False)
        ),
    )
    long_question = [{"role": "user", "content": " ".join(["tell me about the weather"] * 60)}]
    chunks = []
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=long_question, stream=True
        )
        chunks.append([c.model_dump() for c in raw.parse()])
    assert chunks[0] == chunks[1] and len(seen) == 1
    httptrack.flush()
    store = shared_store(cache_dir)
    disk = store._open()
    (key,) = list(disk.iterkeys())
    blob = disk.get(key)
    assert blob[:4] == _MAGIC_ZSTD
    entry = decode_entry(blob)
    assert len(blob) * 3 < sum(map(len, entry.chunks))
    damaged = blob[:-5] + bytes(5)
    with pytest.raises(httptrack._errors.CorruptEntry):
        decode_entry(damaged)


# -- memory -----------------------------------------------------------------------------------


def test_answers_only_stored_are_not_held_in_memory(db: Path, cache_dir: Path) -> None:
    """One copy of an answer's bytes: once stored, the process keeps none (a hit reads it
    back once); nothing is left in flight or waiting to be stored; misses are answered by
    the membership filter without the folder."""
    from httptrack.cache._store import shared_store

    transport = tracking(mock_transport(httpx2), db, cache_dir)
    with httpx2.Client(transport=transport) as client:
        for n in range(50):
            client.post(
                CHAT_URL, json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"q{n}"}]}
            )
        httptrack.flush()
        store = shared_store(cache_dir)
        shared = shared_of(transport)
        assert len(store.memory) == 0 and not shared.recent and not shared.flights
        assert shared.filter is not None
        reads = []
        original_get = store.get
        store.get = lambda key: reads.append(key) or original_get(key)  # type: ignore[method-assign]
        for n in range(50, 60):
            client.post(
                CHAT_URL, json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"q{n}"}]}
            )
        hit = client.post(
            CHAT_URL, json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "q1"}]}
        )
        assert hit.headers["x-httptrack-cache"] == "HIT"
        assert len(reads) <= 2  # the hit (and at most one false positive of ten misses)
        assert len(store.memory) == 1


def test_a_thread_never_waits_for_a_response_it_has_not_read_yet(db: Path, cache_dir: Path) -> None:
    """One thread opens a stream, then sends the identical request before reading the
    first: waiting for the first would wait for itself. The second is sent."""
    seen: list[RecordedRequest] = []
    transport = tracking(mock_transport(httpx2, record=seen), db, cache_dir, cache_wait=5)
    body = {"model": "gpt-4o-mini", "messages": QUESTION, "stream": True}
    with httpx2.Client(transport=transport) as client:
        first = client.send(client.build_request("POST", CHAT_URL, json=body), stream=True)
        # (Waiting for itself would end after cache_wait in a ReadError.)
        second = client.send(client.build_request("POST", CHAT_URL, json=body), stream=True)
        second_body = second.read()
        first_body = first.read()
        first.close()
        second.close()
    assert first_body == second_body and len(seen) == 2


def test_a_follower_of_an_answer_longer_than_the_body_cap_gets_it_whole(db: Path, cache_dir: Path) -> None:
    """A leader's 2xx longer than ``max_body_bytes`` (a big embeddings batch, images) is not
    kept in the cache, but a follower already mirroring it still gets all of it: its body
    does not fail because the answer outgrew what httptrack holds."""
    big = b'data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,'
    chunks = [
        big + b'"delta":{"content":"%s"},"finish_reason":null}]}\n\n' % (b"x" * 400_000) for _ in range(4)
    ]
    chunks.append(
        b'data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,'
        b'"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    )
    go, asked = threading.Event(), threading.Event()
    seen: list[Any] = []
    stream_type = type("Gated", (GatedStream, httpx2.SyncByteStream), {})

    def handler(request: Any) -> Any:
        seen.append(request)
        asked.set()
        return httpx2.Response(
            200, headers={"content-type": "text/event-stream"}, stream=stream_type(chunks, go)
        )

    transport = tracking(httpx2.MockTransport(handler), db, cache_dir, include_usage=False, max_body_bytes=1)
    client = httpx2.Client(transport=transport)
    body = {"model": "gpt-4o-mini", "messages": QUESTION, "stream": True}
    received: dict[str, list[bytes]] = {"leader": [], "follower": []}
    errors: list[BaseException] = []
    first = threading.Event()

    def read(who: str) -> None:
        try:
            with client.stream("POST", CHAT_URL, json=body) as reply:
                for chunk in reply.iter_raw():
                    received[who].append(chunk)
                    if who == "follower":
                        first.set()
        except Exception as exc:
            errors.append(exc)
            first.set()

    leader = threading.Thread(target=read, args=("leader",))
    leader.start()
    assert asked.wait(10)
    follower = threading.Thread(target=read, args=("follower",))
    follower.start()
    assert first.wait(10)
    go.set()
    leader.join(10)
    follower.join(10)
    assert errors == []
    assert b"".join(received["follower"]) == b"".join(received["leader"]) == b"".join(chunks)
    assert len(seen) == 1


def test_the_membership_filter_is_refreshed_by_the_writer_and_after_a_pause_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A lookup never lists the storage while the writer keeps the filter fresh (that query
    would hand the GIL to the busy writer mid-call); the writer refreshes it every
    FILTER_REFRESH_EVERY seconds; a filter left older than FILTER_REFRESH (the writer idle)
    is refreshed by the first lookup that finds it so."""
    from httptrack.cache import _flight

    now = [100.0]
    monkeypatch.setattr(_flight.time, "monotonic", lambda: now[0])
    listed: list[object] = []

    class Storage:
        def changes_since(self, cursor: object) -> tuple[list[str], object]:
            listed.append(cursor)
            return ([] if cursor is None else ["stored-elsewhere"]), len(listed)

    shared = _flight.Shared(Storage())  # type: ignore[arg-type]
    assert shared.may_contain("k") and listed == []  # no filter yet: the writer loads it first
    shared.refresh_filter(shared.store)  # the writer: the first load
    assert listed == [None] and not shared.may_contain("k")
    now[0] += _flight.FILTER_REFRESH_EVERY / 2
    shared.refresh_filter(shared.store)  # not due yet
    assert not shared.may_contain("k") and listed == [None]  # the lookup lists nothing
    now[0] += _flight.FILTER_REFRESH_EVERY / 2
    shared.refresh_filter(shared.store)  # due: what other processes stored is added
    assert listed == [None, 1] and shared.may_contain("stored-elsewhere")
    now[0] += _flight.FILTER_REFRESH - 0.01
    assert not shared.may_contain("k") and len(listed) == 2  # still fresh enough
    now[0] += 5.0  # the writer was idle: the first lookup refreshes it, once
    assert not shared.may_contain("k") and not shared.may_contain("k2")
    assert listed == [None, 1, 2]


def test_a_call_that_led_a_flight_is_freed_without_the_garbage_collector(db: Path, cache_dir: Path) -> None:
    # A leader's exchange and its flight held each other: a cycle, freed only by the garbage
    # collector. The calls waiting for the writer were promoted to its oldest generation
    # meanwhile, and their bodies kept the process ~10 MiB larger in a loop of new calls.
    import gc

    client = openai.OpenAI(
        api_key="sk-test-a",
        http_client=httpx2.Client(transport=tracking(mock_transport(httpx2), db, cache_dir)),
    )
    client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)  # warmed up
    httptrack.flush()
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for n in range(3):
            question = [{"role": "user", "content": f"question {n}"}]
            raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=question)
            assert raw.headers["x-httptrack-cache"] == "MISS"
        assert hits_and_misses(db) == (0, 4)
        gc.collect()
        left = {type(o).__name__ for o in gc.garbage} & {"Flight", "Exchange", "Answer"}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert not left
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=QUESTION)
    assert raw.headers["x-httptrack-cache"] == "HIT"
