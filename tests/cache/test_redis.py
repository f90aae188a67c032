"""The response cache in Redis (``cache_url=`` / ``HTTPTRACK_CACHE_URL``), on a real,
throwaway ``redis-server`` (tests/redis_server.py), driven through the real SDKs: hits
served from Redis (memory forgotten first, so the server answers), streams replayed as
recorded, one process hitting another's answer, native TTLs, and an outage that never fails
a call."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import httpx2
import ollama
import openai
import pytest
import redis
from helpers import read_rows
from redis_server import RedisServer, need_redis

import httptrack
from httptrack._fake import RecordedRequest, mock_transport
from httptrack._faults import fault_counts
from httptrack.cache import _redis
from httptrack.cache._entry import decode_entry, encode_entry
from httptrack.cache._redis import ENTRY_PREFIX, GENERATION_KEY, SALT_KEY, RedisStore, shared_redis_store

ROOT = Path(__file__).resolve().parents[2]
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
CHAT_URL = "https://api.openai.com/v1/chat/completions"


def tracking(inner: Any, db: Path, url: str, *, asynchronous: bool = False, **options: Any) -> Any:
    kind = httptrack.AsyncTrackingTransport if asynchronous else httptrack.TrackingTransport
    return kind(inner, db=db, cache_url=url, **options)


def forget_memory(url: str) -> None:
    """The next lookup asks Redis (as another process would)."""
    shared_redis_store(url).memory.clear()


def server(url: str) -> Any:
    return redis.Redis.from_url(url)


def entry_keys(url: str) -> list[bytes]:
    client = server(url)
    try:
        return sorted(client.scan_iter(match=ENTRY_PREFIX + "*"))
    finally:
        client.close()


# -- hits through the SDKs, from the server ---------------------------------------------------


def test_openai_hit_is_served_from_redis_with_the_ttl_as_expiry(db: Path, redis_url: str) -> None:
    seen: list[RecordedRequest] = []
    transport = tracking(mock_transport(httpx2, record=seen), db, redis_url)
    client = openai.OpenAI(api_key="sk-test-a", http_client=httpx2.Client(transport=transport))
    first = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=QUESTION)
    httptrack.flush()
    (key,) = entry_keys(redis_url)
    forget_memory(redis_url)
    second = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=QUESTION)
    assert len(seen) == 1
    assert (first.headers["x-httptrack-cache"], second.headers["x-httptrack-cache"]) == ("MISS", "HIT")
    assert second.parse().model_dump() == first.parse().model_dump()
    original, hit = read_rows(db)
    assert (original["cached"], hit["cached"]) == (0, 1)
    assert hit["cost_saved_usd"] == original["cost_usd"] > 0
    assert key == (ENTRY_PREFIX + original["cache_key"]).encode()
    client_ = server(redis_url)
    # Native TTL: the operation's (chat: 1 hour) is the key's expiry.
    assert 3500_000 < client_.pttl(key) <= 3600_000
    salt = client_.get(SALT_KEY)
    assert salt is not None and len(salt) == 32 and client_.pttl(SALT_KEY) == -1  # never expires
    client_.close()


def test_openai_async_stream_replays_the_same_chunks_from_redis(db: Path, redis_url: str) -> None:
    seen: list[RecordedRequest] = []

    async def main() -> list[list[dict[str, Any]]]:
        transport = tracking(mock_transport(httpx2, record=seen), db, redis_url, asynchronous=True)
        client = openai.AsyncOpenAI(api_key="sk-test-a", http_client=httpx2.AsyncClient(transport=transport))
        runs = []
        for _ in range(2):
            stream = await client.chat.completions.create(
                model="gpt-4o", messages=QUESTION, stream=True, stream_options={"include_usage": True}
            )
            runs.append([chunk.model_dump() async for chunk in stream])
            await asyncio.to_thread(httptrack.flush)
            forget_memory(redis_url)
        await client.close()
        return runs

    live, replayed = asyncio.run(main())
    assert len(seen) == 1
    assert replayed == live and len(live) > 5
    original, hit = read_rows(db)
    assert (original["stream"], hit["stream"], hit["cached"]) == (1, 1, 1)
    assert hit["response_text"] == original["response_text"]


def test_ollama_stream_and_embeddings_from_redis(db: Path, redis_url: str) -> None:
    seen: list[RecordedRequest] = []
    client = ollama.Client(transport=tracking(mock_transport(httpx, record=seen), db, redis_url))
    live = [p.model_dump() for p in client.chat(model="llama3.2", messages=QUESTION, stream=True)]
    first = client.embed(model="nomic-embed-text", input=["Paris", "France"])
    httptrack.flush()
    forget_memory(redis_url)
    replayed = [p.model_dump() for p in client.chat(model="llama3.2", messages=QUESTION, stream=True)]
    second = client.embed(model="nomic-embed-text", input=["Paris", "France"])
    assert replayed == live and len(live) > 3
    assert second.model_dump() == first.model_dump()
    assert len(seen) == 2
    rows = read_rows(db)
    assert [(r["operation"], r["cached"]) for r in rows] == [
        ("chat", 0),
        ("embeddings", 0),
        ("chat", 1),
        ("embeddings", 1),
    ]
    client_ = server(redis_url)
    embeddings_key = ENTRY_PREFIX + rows[1]["cache_key"]
    assert client_.pttl(embeddings_key) > 6 * 86400_000  # embeddings: a week
    client_.close()


_PROCESS = textwrap.dedent(
    """
    import json, sys, httpx, httpx2, ollama, openai, httptrack
    from httptrack._fake import mock_transport

    url, db, role = sys.argv[1:]
    seen = []
    question = [{"role": "user", "content": "What is the capital of France?"}]
    statuses = []
    chat = openai.OpenAI(api_key="sk-test-a", http_client=httpx2.Client(
        transport=httptrack.TrackingTransport(mock_transport(httpx2, record=seen), db=db, cache_url=url)))
    raw = chat.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=question)
    statuses.append(raw.headers["x-httptrack-cache"])
    with chat.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=question, stream=True) as stream:
        statuses.append(stream.headers["x-httptrack-cache"])
        text = "".join(c.choices[0].delta.content or "" for c in stream.parse() if c.choices)
    local = ollama.Client(transport=httptrack.TrackingTransport(
        mock_transport(httpx, record=seen), db=db, cache_url=url))
    local.embed(model="nomic-embed-text", input=["Paris"])
    httptrack.flush()
    print(json.dumps({"requests": len(seen), "statuses": statuses, "text": text,
                      "answer": raw.parse().choices[0].message.content}))
    """
)


def run_process(url: str, db: Path, role: str) -> dict[str, Any]:
    child = subprocess.run(
        [sys.executable, "-c", _PROCESS, url, str(db), role],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.returncode == 0, child.stderr
    return dict(json.loads(child.stdout))


def test_process_b_is_answered_from_process_a_calls(tmp_path: Path, redis_url: str) -> None:
    """Two processes with their own logs (two machines): B sends nothing, A's answers (a
    plain one, a stream, embeddings) come from Redis; the salt is the one A created."""
    a = run_process(redis_url, tmp_path / "a.db", "a")
    b = run_process(redis_url, tmp_path / "b.db", "b")
    assert a["requests"] == 3 and a["statuses"] == ["MISS", "MISS"]
    assert b["requests"] == 0 and b["statuses"] == ["HIT", "HIT"]
    assert (b["answer"], b["text"]) == (a["answer"], a["text"]) and a["text"]
    rows_a, rows_b = read_rows(tmp_path / "a.db"), read_rows(tmp_path / "b.db")
    assert [r["cached"] for r in rows_a] == [0, 0, 0] and [r["cached"] for r in rows_b] == [1, 1, 1]
    assert [r["cache_key"] for r in rows_a] == [r["cache_key"] for r in rows_b]
    assert len(entry_keys(redis_url)) == 3


# -- modes, generation, salt ---------------------------------------------------------------------


def answer_handler(seen: list[Any]) -> Any:
    def handler(request: Any) -> Any:
        seen.append(request)
        body = {
            "id": f"chatcmpl-{len(seen)}",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"answer {len(seen)}"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 14, "completion_tokens": 2, "total_tokens": 16},
        }
        return httpx2.Response(200, json=body)

    return handler


def ask(client: Any, headers: dict[str, str] | None = None) -> tuple[str | None, str]:
    response = client.post(
        CHAT_URL,
        json={"model": "gpt-4o-mini", "messages": QUESTION},
        headers={"authorization": "Bearer sk-a", **(headers or {})},
    )
    httptrack.flush()
    return response.headers.get("x-httptrack-cache"), response.json()["choices"][0]["message"]["content"]


def test_modes_replay_and_refresh(db: Path, redis_url: str) -> None:
    seen: list[Any] = []
    inner = httpx2.MockTransport(answer_handler(seen))
    with httpx2.Client(transport=tracking(inner, db, redis_url)) as client:
        assert ask(client) == ("MISS", "answer 1")
    with httpx2.Client(transport=tracking(inner, db, redis_url, cache="replay")) as client:
        forget_memory(redis_url)
        assert ask(client) == ("HIT", "answer 1")
        with pytest.raises(httptrack.CacheMiss, match="no cached response"):
            client.post(
                CHAT_URL, json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}
            )
    with httpx2.Client(transport=tracking(inner, db, redis_url, cache="refresh")) as client:
        assert ask(client) == (None, "answer 2")
    with httpx2.Client(transport=tracking(inner, db, redis_url, cache="off")) as client:
        assert ask(client) == (None, "answer 3")
    assert len(seen) == 3
    with httpx2.Client(transport=tracking(inner, db, redis_url)) as client:
        forget_memory(redis_url)
        assert ask(client) == ("HIT", "answer 2")  # refresh replaced it in Redis


def test_an_answer_replaced_elsewhere_is_forgotten_from_memory(db: Path, redis_url: str) -> None:
    """Two stores on one server are two processes: a ``refresh`` in one bumps the
    generation, and the other drops what it remembers at its next check."""
    seen: list[Any] = []
    inner = httpx2.MockTransport(answer_handler(seen))
    with httpx2.Client(transport=tracking(inner, db, redis_url)) as client:
        assert ask(client) == ("MISS", "answer 1")
    other = RedisStore(redis_url)  # another process
    key = read_rows(db)[0]["cache_key"]
    assert other.get(key) is not None and len(other.memory) == 1
    with httpx2.Client(transport=tracking(inner, db, redis_url, cache="refresh")) as client:
        assert ask(client) == (None, "answer 2")
    assert server(redis_url).get(GENERATION_KEY) == b"1"
    other._generation_due = 0.0  # its once-a-second check is due
    entry = other.get(key)
    assert entry is not None and b"answer 2" in b"".join(entry.chunks)
    own = shared_redis_store(redis_url)
    mine = own.get(key)
    assert mine is not None and b"answer 2" in b"".join(mine.chunks)  # not the copy it replaced
    other.close()


def test_the_salt_is_made_once_and_a_flush_is_noticed(redis_url: str) -> None:
    one, two = RedisStore(redis_url), RedisStore(redis_url)
    assert one.salt() == two.salt() == server(redis_url).get(SALT_KEY)
    server(redis_url).flushall()
    two.salt()
    three = RedisStore(redis_url)
    fresh = three.salt()  # made anew by the next process
    assert fresh != one.salt()
    one._generation_due = 0.0
    one.get("0" * 64)
    assert one.salt() == fresh  # adopted at the next check: the processes share keys again
    for store in (one, two, three):
        store.close()


def test_a_damaged_entry_is_a_miss_and_is_dropped(db: Path, redis_url: str) -> None:
    seen: list[Any] = []
    inner = httpx2.MockTransport(answer_handler(seen))
    with httpx2.Client(transport=tracking(inner, db, redis_url)) as client:
        ask(client)
        (key,) = entry_keys(redis_url)
        server(redis_url).set(key, b"HTC\x01 not an entry", px=60_000)
        forget_memory(redis_url)
        assert ask(client) == ("MISS", "answer 2")
    assert fault_counts()["cache_corrupt"] == 1
    assert len(seen) == 2


def test_an_entry_over_the_cap_is_not_stored(
    db: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_redis, "MAX_ENTRY_BYTES", 200)
    seen: list[Any] = []
    with httpx2.Client(
        transport=tracking(httpx2.MockTransport(answer_handler(seen)), db, redis_url)
    ) as client:
        ask(client)
        assert ask(client) == ("MISS", "answer 2")
    assert entry_keys(redis_url) == []


def test_the_environment_variable_selects_redis(
    db: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPTRACK_CACHE_URL", redis_url)
    settings = httptrack.Settings()
    assert settings.cache_url == redis_url
    transport = httptrack.TrackingTransport(httpx2.MockTransport(answer_handler([])), db=db, cache=True)
    assert isinstance(transport._tracker.cache.store, RedisStore)


@pytest.mark.parametrize(
    "url",
    ["http://localhost:6379", "redis://", "localhost:6379", "redis://host:notaport/0"],
)
def test_a_bad_cache_url_is_refused_when_the_settings_are_made(url: str) -> None:
    with pytest.raises(httptrack.SettingsError, match="cache_url"):
        httptrack.Settings(cache_url=url)


def test_the_password_is_never_shown(redis_url: str) -> None:
    url = "redis://app:s3cret-pass@127.0.0.1:1/0?password=s3cret-q"
    settings = httptrack.Settings(cache_url=url)
    assert "s3cret" not in repr(settings) and "app:[redacted]@127.0.0.1:1" in repr(settings)
    assert "s3cret" not in repr(RedisStore(url))
    with pytest.raises(httptrack.SettingsError) as refused:
        httptrack.Settings(cache_url="http://app:s3cret-pass@host/0")
    assert "s3cret" not in str(refused.value)


# -- an outage: no cache, never a failed call ----------------------------------------------------


@pytest.fixture
def own_redis(tmp_path: Path) -> Any:
    """A server of this test's own, to stop and start."""
    own = RedisServer(tmp_path / "own-redis")
    try:
        own.start()
    except Exception as exc:
        need_redis(str(exc))
    yield own
    own.stop()


def test_an_outage_degrades_to_no_cache_and_recovers(
    db: Path, own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_redis, "BREAKER_SECONDS", 3600.0)  # the test says when time is up
    url = f"redis://default:s3cret-pass@127.0.0.1:{own_redis.port}/0"
    seen: list[Any] = []
    inner = httpx2.MockTransport(answer_handler(seen))
    caplog.set_level(logging.DEBUG, logger="httptrack")
    # No password is configured on the server: Redis 7 takes AUTH default <anything>.
    with httpx2.Client(transport=tracking(inner, db, url)) as client:
        assert ask(client) == ("MISS", "answer 1")
        forget_memory(url)
        assert ask(client) == ("HIT", "answer 1")
        own_redis.stop()  # mid-run
        forget_memory(url)
        statuses = [ask(client)[0] for _ in range(3)]
        assert statuses == ["MISS", "MISS", "MISS"]  # every call went out and succeeded
        assert len(seen) == 4
        store = shared_redis_store(url)
        assert store.broken is not None and "ConnectionError" in store.broken
        # The breaker: one failure, then Redis left alone (no waiting on a dead server).
        counts = fault_counts()
        assert counts.get("cache_read", 0) + counts.get("cache_write", 0) == 1
        own_redis.start()
        store._skip_until = 1.0  # the breaker's time is up
        assert ask(client) == ("MISS", "answer 5")  # the restarted server is empty
        assert store.broken is None
        forget_memory(url)
        assert ask(client) == ("HIT", "answer 5")
    rows = read_rows(db)
    assert len(rows) == 7 and all(r["status"] == "success" for r in rows)
    logged = "\n".join(r.getMessage() + str(r.exc_info or "") for r in caplog.records)
    assert "Redis response cache at redis://default:[redacted]@127.0.0.1" in logged
    assert "s3cret" not in logged


def test_a_server_that_never_was_is_no_cache(db: Path, caplog: pytest.LogCaptureFixture) -> None:
    from redis_server import _free_port

    url = f"redis://:s3cret-pass@127.0.0.1:{_free_port()}/0"
    seen: list[Any] = []

    async def main() -> list[str | None]:
        transport = tracking(httpx2.MockTransport(answer_handler(seen)), db, url, asynchronous=True)
        async with httpx2.AsyncClient(transport=transport) as client:
            statuses = []
            for _ in range(2):
                response = await client.post(
                    CHAT_URL,
                    json={"model": "gpt-4o-mini", "messages": QUESTION},
                    headers={"authorization": "Bearer sk-a"},
                )
                statuses.append(response.headers.get("x-httptrack-cache"))
                await asyncio.to_thread(httptrack.flush)
            return statuses

    assert asyncio.run(main()) == ["MISS", "MISS"]
    assert len(seen) == 2 and fault_counts().get("cache_open", 0) >= 1
    assert "s3cret" not in caplog.text


# -- the CLI ------------------------------------------------------------------------------------


def test_cli_stats_and_clear_on_redis(db: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from httptrack.cli import main

    seen: list[Any] = []
    with httpx2.Client(
        transport=tracking(httpx2.MockTransport(answer_handler(seen)), db, redis_url)
    ) as client:
        ask(client)
        client.post(CHAT_URL, json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "2"}]})
        httptrack.flush()
    runner = CliRunner()
    result = runner.invoke(main, ["cache", "stats", "--cache-url", redis_url, "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert (stats["entries"], stats["eviction_policy"], stats["hits"]) == (2, "volatile-lru", 0)
    assert stats["size_limit"] == 64 * 1024 * 1024
    monkeypatch.setenv("HTTPTRACK_CACHE_URL", redis_url)
    text = runner.invoke(main, ["cache", "stats", "--db", str(db)])
    assert text.exit_code == 0 and "Entries        2" in text.output and redis_url in text.output
    cleared = runner.invoke(main, ["cache", "clear", "--json"])
    assert cleared.exit_code == 0 and json.loads(cleared.output)["removed"] == 2
    assert entry_keys(redis_url) == [] and server(redis_url).get(SALT_KEY) is not None
    pruned = runner.invoke(main, ["cache", "prune"])
    assert pruned.exit_code == 0 and "Redis expires entries itself" in pruned.output
    assert runner.invoke(main, ["cache", "path"]).output.strip() == redis_url


# -- the storage seam's leases and change feed (single-flight, the membership filter) -------------


def entry(answer: str, ttl: float = 3600.0) -> Any:
    from httptrack.cache._entry import CacheEntry

    return CacheEntry(status=200, headers=(), chunks=(answer.encode(),), figures={}, created=0.0, ttl=ttl)


def test_a_lease_is_taken_once_across_processes_and_expires(redis_url: str) -> None:
    one, two = RedisStore(redis_url), RedisStore(redis_url)  # two processes
    assert one.acquire("k1", 60) is True
    assert two.acquire("k1", 60) is False and one.acquire("k1", 60) is False
    assert two.held("k1") and not two.held("k2")
    two.release("k1")  # not its lease: left to its holder
    assert one.held("k1")
    one.release("k1")
    assert not two.held("k1") and two.acquire("k1", 60) is True
    assert one.acquire("k3", 0.001) is True
    deadline = time.monotonic() + 5
    while one.held("k3") and time.monotonic() < deadline:
        time.sleep(0.001)
    assert not one.held("k3") and two.acquire("k3", 60) is True  # expired by itself
    assert server(redis_url).get(ENTRY_PREFIX + "k1") is None  # a lease is not an entry
    for store in (one, two):
        store.close()


def test_changes_since_lists_every_key_stored_by_any_process(redis_url: str) -> None:
    one, two = RedisStore(redis_url), RedisStore(redis_url)
    assert one.put_many([("a", entry("A")), ("b", entry("B"))]) == 2
    listed = two.changes_since(None)
    assert listed is not None
    keys, cursor = listed
    assert sorted(keys) == ["a", "b"]
    assert two.changes_since(cursor) == ([], cursor)
    one.put_many([("c", entry("C"))])
    one.put_many([("d", entry("D", ttl=0.001))])
    listed = two.changes_since(cursor)
    assert listed is not None and listed[0] == ["c", "d"]
    # A new process: every live key (d has expired: Redis dropped it, the list forgot it).
    deadline = time.monotonic() + 5
    while server(redis_url).exists(ENTRY_PREFIX + "d") and time.monotonic() < deadline:
        time.sleep(0.001)
    fresh = RedisStore(redis_url).changes_since(None)
    assert fresh is not None and sorted(fresh[0]) == ["a", "b", "c"]
    # A cursor the stream was trimmed past: every live key again.
    server(redis_url).xtrim(_redis.ADDED_KEY, maxlen=0)
    one.put_many([("e", entry("E"))])
    again = two.changes_since(listed[1])
    assert again is not None and sorted(again[0]) == ["a", "b", "c", "e"]
    for store in (one, two):
        store.close()


def test_leases_and_changes_while_redis_is_down(own_redis: RedisServer) -> None:
    store = RedisStore(own_redis.url)
    assert store.acquire("k", 60) is True
    own_redis.stop()
    assert store.acquire("k", 60) is True  # nobody to wait for
    assert store.held("k") is False
    assert store.changes_since(None) is None
    store.release("k")
    assert store.broken is not None
    store.close()


_RACER = textwrap.dedent(
    """
    import json, os, sys, time, httpx2, openai, httptrack

    url, db, go, calls_file = sys.argv[1:]
    answer = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": f"from {os.getpid()}"},
                           "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 14, "completion_tokens": 3, "total_tokens": 17}}

    def provider(request):
        with open(calls_file, "a") as file:
            file.write(f"{os.getpid()}\\n")
        time.sleep(1.0)  # a slow model: the others ask while this one is in flight
        return httpx2.Response(200, json=answer)

    transport = httptrack.TrackingTransport(httpx2.MockTransport(provider), db=db, cache_url=url)
    client = openai.OpenAI(api_key="sk-a", max_retries=0, http_client=httpx2.Client(transport=transport))
    deadline = time.monotonic() + 60
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.005)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "the same new question"}])
    httptrack.flush()
    print(json.dumps({"status": raw.headers.get("x-httptrack-cache"),
                      "answer": raw.parse().choices[0].message.content}))
    """
)


def test_identical_requests_from_three_processes_at_once_are_sent_once(
    tmp_path: Path, redis_url: str
) -> None:
    """Single-flight across processes through Redis: one process takes the lease
    (``SET NX PX``) and asks the provider; the others wait for its answer in Redis."""
    go, calls = tmp_path / "go", tmp_path / "calls"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, redis_url, str(tmp_path / f"{n}.db"), str(go), str(calls)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for n in range(3)
    ]
    go.write_text("go")
    results = []
    for racer in racers:
        out, err = racer.communicate(timeout=120)
        assert racer.returncode == 0, err
        results.append(json.loads(out))
    assert len(calls.read_text().split()) == 1, results  # one request reached the provider
    assert sorted(r["status"] for r in results) == ["HIT", "HIT", "MISS"]
    assert len({r["answer"] for r in results}) == 1
    assert server(redis_url).keys(_redis.LEASE_PREFIX + "*") == []  # released


def test_another_api_key_misses_and_no_key_reaches_redis(db: Path, redis_url: str) -> None:
    seen: list[Any] = []
    inner = httpx2.MockTransport(answer_handler(seen))
    with httpx2.Client(transport=tracking(inner, db, redis_url)) as client:
        for key in ("sk-alice-0123456789", "sk-bob-0123456789", "sk-alice-0123456789"):
            client.post(
                CHAT_URL,
                json={"model": "gpt-4o-mini", "messages": QUESTION},
                headers={"authorization": f"Bearer {key}"},
            )
            httptrack.flush()
    assert len(seen) == 2  # bob's request missed alice's answer; alice's second hit hers
    client_ = server(redis_url)
    for name in client_.scan_iter():
        kind = client_.type(name)
        value = client_.get(name) if kind == b"string" else repr(client_.dump(name)).encode()
        assert b"sk-alice" not in name + value and b"sk-bob" not in name + value, name
    client_.close()


def test_a_full_redis_pauses_storing_and_reads_go_on(db: Path, own_redis: RedisServer) -> None:
    """Under ``noeviction`` a full Redis refuses writes (OOM): storing pauses (a
    ``cache_write`` fault, no traceback), the calls succeed, what is stored is still read."""
    url = own_redis.url
    seen: list[Any] = []
    inner = httpx2.MockTransport(answer_handler(seen))
    with httpx2.Client(transport=tracking(inner, db, url)) as client:
        assert ask(client) == ("MISS", "answer 1")
        admin = server(url)
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", "1")
        other = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "another"}]}
        for _ in range(2):
            assert (
                client.post(CHAT_URL, json=other, headers={"authorization": "Bearer sk-a"}).status_code == 200
            )
            httptrack.flush()
        assert fault_counts().get("cache_write") == 1  # paused after the first refusal
        store = shared_redis_store(url)
        assert store.broken is None
        forget_memory(url)
        assert ask(client) == ("HIT", "answer 1")  # reads go on
        admin.close()
    assert len(seen) == 3


def test_a_long_answer_is_stored_compressed_and_replayed_whole(db: Path, redis_url: str) -> None:
    """Entries go to Redis in the cache's own format, zstd-compressed from 1 KiB (the
    server's memory holds a fraction of the answer), and come back byte for byte."""
    text = "Paris is the capital of France. " * 200
    body = {
        "id": "chatcmpl-long",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 14, "completion_tokens": 1400, "total_tokens": 1414},
    }
    seen: list[Any] = []

    def handler(request: Any) -> Any:
        seen.append(request)
        return httpx2.Response(200, json=body)

    with httpx2.Client(transport=tracking(httpx2.MockTransport(handler), db, redis_url)) as client:
        first = client.post(CHAT_URL, json={"model": "gpt-4o-mini", "messages": QUESTION}).content
        httptrack.flush()
        forget_memory(redis_url)
        second = client.post(CHAT_URL, json={"model": "gpt-4o-mini", "messages": QUESTION})
    assert second.headers["x-httptrack-cache"] == "HIT" and second.content == first and len(seen) == 1
    (key,) = entry_keys(redis_url)
    stored = server(redis_url).get(key)
    assert stored is not None and stored.startswith(b"HTC\x02")
    plain = encode_entry(decode_entry(stored), compress_above=None)
    assert len(stored) < len(plain) - len(first) * 3 // 4  # the body took a fraction of its size
