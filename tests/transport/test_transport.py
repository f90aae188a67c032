"""The transport's contract: what reaches the provider, what reaches the app, what is
recorded — for calls that succeed, fail, stop early or are not LLM calls at all."""

from __future__ import annotations

import asyncio
import gc
import gzip
import json
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from helpers import LIBS, chunk_stream, one_row, read_rows, responder

import httptrack

CHAT = "https://api.openai.com/v1/chat/completions"
CHAT_BODY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi!"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
}


def sse(*events: dict[str, Any]) -> list[bytes]:
    return [f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]


def chat_stream_chunks(n: int = 5) -> list[bytes]:
    base = {"id": "chatcmpl-2", "object": "chat.completion.chunk", "model": "gpt-4o-mini-2024-07-18"}
    events = [
        {**base, "choices": [{"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}]}
        for i in range(n)
    ]
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    events.append(
        {
            **base,
            "choices": [],
            "usage": {"prompt_tokens": 11, "completion_tokens": n, "total_tokens": 11 + n},
        }
    )
    return sse(*events)


def client_for(lib: Any, handler: Any, db: Path, **options: Any) -> Any:
    options.setdefault("cache", False)
    return lib.Client(transport=httptrack.TrackingTransport(lib.MockTransport(handler), db=db, **options))


@LIBS
def test_non_llm_hosts_pass_straight_through(lib: Any, db: Path) -> None:
    seen: list[Any] = []
    original = chunk_stream(lib, [b"plain"])

    def handler(request: Any) -> Any:
        seen.append(request)
        return lib.Response(200, stream=original)

    with client_for(lib, handler, db) as client:
        reply = client.get("https://example.com/data?key=abc", headers={"Authorization": "Bearer x"})
    assert reply.content == b"plain"
    assert "x-httptrack-call-id" not in reply.headers
    assert seen[0].headers["authorization"] == "Bearer x"
    assert str(seen[0].url) == "https://example.com/data?key=abc"
    assert read_rows(db) == []


@LIBS
def test_control_headers_are_removed_and_attribute_the_call(lib: Any, db: Path) -> None:
    seen: list[Any] = []
    with client_for(lib, responder(lib, json.dumps(CHAT_BODY).encode(), seen=seen), db) as client:
        reply = client.post(
            CHAT,
            json={
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "hi"}],
                "user": "body-user",
            },
            headers={
                "X-Httptrack-User": "alice",
                "X-Httptrack-Service": "billing",
                "X-Httptrack-Session": "s-1",
                "X-Httptrack-Property-Feature": "digest",
                "x-httptrack-property-tenant": "acme",
            },
        )
    assert reply.json() == CHAT_BODY
    assert not [h for h in seen[0].headers if h.lower().startswith("x-httptrack")]
    row = one_row(db)
    assert (row["user"], row["service"], row["session"]) == ("alice", "billing", "s-1")
    assert json.loads(row["properties"]) == {"feature": "digest", "tenant": "acme"}
    assert "x-httptrack" not in row["request_headers"]
    assert row["id"] == reply.headers["x-httptrack-call-id"]


@LIBS
def test_attribution_precedence(lib: Any, db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPTRACK_USER", "env-user")
    monkeypatch.setenv("HTTPTRACK_SERVICE", "env-service")
    body = json.dumps(CHAT_BODY).encode()
    with client_for(lib, responder(lib, body), db) as client:
        client.post(CHAT, json={"model": "m"})  # env defaults only
        client.post(CHAT, json={"model": "m", "user": "body-user"})  # body user beats the default
        with httptrack.attribute(user="ctx-user", team="core"):
            client.post(CHAT, json={"model": "m", "user": "body-user"})  # context beats the body
            client.post(
                CHAT, json={"model": "m"}, headers={"X-Httptrack-User": "hdr"}
            )  # header beats context
    rows = read_rows(db)
    assert [(r["user"], r["service"]) for r in rows] == [
        ("env-user", "env-service"),
        ("body-user", "env-service"),
        ("ctx-user", "env-service"),
        ("hdr", "env-service"),
    ]
    assert [r["properties"] for r in rows] == [None, None, '{"team": "core"}', '{"team": "core"}']


def test_attribute_nests_and_decorates(db: Path) -> None:
    seen: list[Any] = []

    @httptrack.attribute(service="reports")
    def make_call(client: Any) -> None:
        client.post(CHAT, json={"model": "m"})

    with client_for(httpx, responder(httpx, json.dumps(CHAT_BODY).encode(), seen=seen), db) as client:
        with httptrack.attribute(user="outer", session="A", a="1"):
            with httptrack.attribute(user="inner", b="2"):
                client.post(CHAT, json={"model": "m"})
            make_call(client)
        make_call(client)
    rows = read_rows(db)
    assert [(r["user"], r["service"], r["session"], r["properties"]) for r in rows] == [
        ("inner", None, "A", '{"a": "1", "b": "2"}'),
        ("outer", "reports", "A", '{"a": "1"}'),
        (None, "reports", None, None),
    ]


def test_attribution_is_isolated_between_asyncio_tasks(db: Path) -> None:
    body = json.dumps(CHAT_BODY).encode()

    async def handler(request: Any) -> Any:
        await asyncio.sleep(0.01)  # interleave the tasks
        return httpx2.Response(
            200, headers={"content-type": "application/json"}, stream=chunk_stream(httpx2, [body])
        )

    async def main() -> None:
        transport = httptrack.AsyncTrackingTransport(httpx2.MockTransport(handler), db=db, cache=False)
        async with httpx2.AsyncClient(transport=transport) as client:

            async def one(user: str) -> None:
                with httptrack.attribute(user=user):
                    for _ in range(3):
                        await client.post(CHAT, json={"model": "m", "messages": [{"content": user}]})

            await asyncio.gather(*(one(f"user-{i}") for i in range(5)))

    asyncio.run(main())
    rows = read_rows(db)
    assert len(rows) == 15
    for row in rows:
        assert json.loads(row["request_body"])["messages"][0]["content"] == row["user"]


def test_one_attribute_object_shared_by_threads_and_tasks(db: Path) -> None:
    """A module-level ``attribute`` object entered by many threads and tasks at once (each
    leaving in its own order) attributes each one's calls and leaves each context clean."""
    import threading

    shared = httptrack.attribute(service="shared")
    body = json.dumps(CHAT_BODY).encode()
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    with client_for(httpx, responder(httpx, body), db) as client:

        def worker(n: int) -> None:
            try:
                with shared:
                    with httptrack.attribute(user=f"t{n}"):
                        barrier.wait()  # all six inside the block together
                        client.post(CHAT, json={"model": "m", "messages": [{"content": f"t{n}"}]})
                    barrier.wait()
                # The context this thread started with, whatever the others did.
                assert httptrack._context.current_attribution() == httptrack._context.Attribution()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []

    async def tasks() -> list[Any]:
        async def one(n: int, delay: float) -> Any:
            with shared:
                await asyncio.sleep(delay)  # entered 0, 1, 2 ... left 2, 1, 0
                inside = httptrack._context.current_attribution().service
            return inside, httptrack._context.current_attribution().service

        return await asyncio.gather(*(one(n, 0.03 - n * 0.01) for n in range(3)))

    assert asyncio.run(tasks()) == [("shared", None)] * 3
    with shared, shared:  # re-entered (nested) in one context
        assert httptrack._context.current_attribution().service == "shared"
    assert httptrack._context.current_attribution().service is None
    rows = read_rows(db)
    assert sorted((r["user"], r["service"]) for r in rows) == [(f"t{n}", "shared") for n in range(6)]
    for row in rows:
        assert json.loads(row["request_body"])["messages"][0]["content"] == row["user"]


@LIBS
def test_http_errors_are_recorded_and_reach_the_app_unchanged(lib: Any, db: Path) -> None:
    error = {
        "error": {
            "message": "Rate limit reached",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    raw = json.dumps(error).encode()
    with client_for(
        lib,
        responder(
            lib, raw, status=429, headers={"content-type": "application/json", "x-request-id": "req_9"}
        ),
        db,
    ) as client:
        reply = client.post(CHAT, json={"model": "gpt-4o"})
    assert reply.status_code == 429
    assert reply.content == raw
    row = one_row(db)
    assert row["status"] == "error"
    assert row["http_status"] == 429
    assert row["error_code"] == "rate_limit_exceeded"
    assert row["error_message"] == "Rate limit reached"
    assert row["request_id"] == "req_9"
    assert row["cost_usd"] == 0.0
    assert row["input_tokens"] is None


@LIBS
@pytest.mark.parametrize("exc_name", ["ConnectError", "ReadTimeout"])
def test_transport_errors_are_recorded_then_raised_unchanged(lib: Any, exc_name: str, db: Path) -> None:
    raised = getattr(lib, exc_name)("boom")

    def handler(request: Any) -> Any:
        raise raised

    with client_for(lib, handler, db) as client, pytest.raises(getattr(lib, exc_name)) as info:
        client.post(CHAT, json={"model": "gpt-4o"})
    assert info.value is raised
    row = one_row(db)
    assert row["status"] == "error"
    assert row["outcome"] == "transport_error"
    assert row["error_code"] == f"{lib.__name__}.{exc_name}"
    assert row["error_message"] == "boom"
    assert row["http_status"] is None
    assert row["model"] == "gpt-4o"
    assert row["latency_ms"] >= 0


@LIBS
def test_stream_reaches_app_chunk_by_chunk_and_is_recorded(lib: Any, db: Path) -> None:
    chunks = chat_stream_chunks(4)
    handler = responder(lib, chunks, headers={"content-type": "text/event-stream"})
    with client_for(lib, handler, db) as client:
        # The app asks for the usage chunk itself (httptrack adds nothing, hides nothing).
        with client.stream(
            "POST",
            CHAT,
            json={"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True}},
        ) as reply:
            received = list(reply.iter_raw())
    assert received == chunks
    row = one_row(db)
    assert (row["stream"], row["status"], row["outcome"]) == (1, "success", "complete")
    assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == (11, 4, 15)
    assert row["response_text"] == "w0 w1 w2 w3 "
    assert row["finish_reason"] == "stop"
    assert row["ttft_ms"] is not None and 0 <= row["ttft_ms"] <= row["latency_ms"]
    assert row["response_body"] == b"".join(chunks).decode()


@LIBS
def test_stream_cut_short_by_the_app_is_recorded_with_what_arrived(lib: Any, db: Path) -> None:
    chunks = chat_stream_chunks(6)
    stream = chunk_stream(lib, chunks)

    def handler(request: Any) -> Any:
        return lib.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)

    with (
        client_for(lib, handler, db) as client,
        client.stream(
            "POST",
            CHAT,
            json={"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "count"}]},
        ) as reply,
    ):
        for i, _ in enumerate(reply.iter_raw()):
            if i == 2:
                break
    assert stream.closed
    row = one_row(db)
    assert row["outcome"] == "cut_short"
    assert row["status"] == "success"
    assert row["response_body"] == b"".join(chunks[:3]).decode()
    assert row["response_text"] == "w0 w1 w2 "
    # No usage chunk arrived: figures counted locally from what was sent and received.
    assert row["tokens_estimated"] == 1
    assert row["output_tokens"] == 7  # o200k_base: "w" "0" " w" "1" " w" "2" " "
    assert row["input_tokens"] > 0


@LIBS
def test_stream_failing_midway_is_an_error_and_the_app_sees_the_exception(lib: Any, db: Path) -> None:
    chunks = chat_stream_chunks(6)

    def handler(request: Any) -> Any:
        return lib.Response(
            200, headers={"content-type": "text/event-stream"}, stream=chunk_stream(lib, chunks, fail_after=3)
        )

    with client_for(lib, handler, db) as client, pytest.raises(httpx.ReadError):
        with client.stream("POST", CHAT, json={"model": "gpt-4o-mini", "stream": True}) as reply:
            for _ in reply.iter_raw():
                pass
    row = one_row(db)
    assert (row["status"], row["outcome"]) == ("error", "failed")
    assert row["error_code"] == "httpx.ReadError"
    assert row["response_body"] == b"".join(chunks[:3]).decode()


@LIBS
def test_unclosed_response_is_recorded_when_collected(lib: Any, db: Path) -> None:
    handler = responder(lib, chat_stream_chunks(2), headers={"content-type": "text/event-stream"})
    client = client_for(lib, handler, db)
    reply = client.send(client.build_request("POST", CHAT, json={"model": "m", "stream": True}), stream=True)
    call_id = reply.headers["x-httptrack-call-id"]
    del reply
    gc.collect()
    row = one_row(db)
    assert (row["id"], row["outcome"]) == (call_id, "cut_short")


def test_async_stream_cut_short(db: Path) -> None:
    chunks = chat_stream_chunks(6)

    async def main() -> None:
        handler = responder(httpx2, chunks, headers={"content-type": "text/event-stream"})
        transport = httptrack.AsyncTrackingTransport(httpx2.MockTransport(handler), db=db, cache=False)
        async with httpx2.AsyncClient(transport=transport) as client:
            async with client.stream("POST", CHAT, json={"model": "gpt-4o-mini", "stream": True}) as reply:
                async for _ in reply.aiter_raw():
                    break

    asyncio.run(main())
    row = one_row(db)
    assert row["outcome"] == "cut_short"
    assert row["response_body"] == chunks[0].decode()


@LIBS
def test_disabled_is_a_pure_pass_through(lib: Any, db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPTRACK_ENABLED", "0")
    seen: list[Any] = []
    stream = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with client_for(lib, responder(lib, json.dumps(CHAT_BODY).encode(), seen=seen), db) as client:
        reply = client.post(CHAT, json={"model": "m"}, headers={"X-Httptrack-User": "alice", "X-Other": "1"})
        client.post(CHAT, json=stream)
    assert reply.json() == CHAT_BODY
    assert "x-httptrack-call-id" not in reply.headers and "x-httptrack-cache" not in reply.headers
    # Nothing recorded, cached or rewritten (no include_usage added) ...
    assert json.loads(seen[1].content) == stream
    assert not db.exists()
    # ... and the headers addressed to httptrack still never reach the provider.
    assert "x-httptrack-user" not in seen[0].headers
    assert seen[0].headers["x-other"] == "1"


@LIBS
def test_gzip_bodies_are_decoded_for_the_record_not_for_the_app(lib: Any, db: Path) -> None:
    raw = gzip.compress(json.dumps(CHAT_BODY).encode())
    handler = responder(
        lib, [raw[:10], raw[10:]], headers={"content-type": "application/json", "content-encoding": "gzip"}
    )
    with client_for(lib, handler, db) as client:
        reply = client.post(CHAT, json={"model": "gpt-4o-mini"})
    assert reply.json() == CHAT_BODY  # httpx decoded the gzip as usual
    row = one_row(db)
    assert json.loads(row["response_body"]) == CHAT_BODY
    assert row["input_tokens"] == 9
    assert row["response_bytes"] == len(raw)


@LIBS
def test_bodies_over_the_cap_are_truncated_but_figures_still_read(lib: Any, db: Path) -> None:
    # A long stream: 3000 events, far over a 64 KiB cap; usage arrives in the last event.
    chunks = chat_stream_chunks(3000)
    total = sum(map(len, chunks))
    handler = responder(lib, chunks, headers={"content-type": "text/event-stream"})
    with (
        client_for(lib, handler, db, max_body_bytes=65536) as client,
        client.stream(
            "POST",
            CHAT,
            json={"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True}},
        ) as reply,
    ):
        assert sum(len(c) for c in reply.iter_raw()) == total
    row = one_row(db)
    assert row["body_truncated"] == 1
    assert (row["input_tokens"], row["output_tokens"]) == (11, 3000)
    assert row["response_body"].endswith(f"[httptrack: truncated; {total} bytes received in all]")
    assert len(row["response_body"].encode()) < 65536 + 100
    assert row["response_bytes"] == total


@LIBS
def test_a_request_body_over_the_cap_is_truncated_and_marked_and_sent_whole(lib: Any, db: Path) -> None:
    prompt = "é" + "x" * 5000  # a multi-byte character first: the cut keeps text valid
    request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}
    sent: list[Any] = []
    with client_for(
        lib, responder(lib, json.dumps(CHAT_BODY).encode(), seen=sent), db, max_body_bytes=1000
    ) as client:
        client.post(CHAT, json=request)
    whole = sent[0].content
    assert json.loads(whole) == request  # the provider got all of it
    row = one_row(db)
    assert row["body_truncated"] == 1
    stored = row["request_body"]
    assert stored.endswith(f"[httptrack: truncated; {len(whole)} bytes sent in all]")
    assert whole.decode().startswith(stored[: stored.index("[httptrack: truncated")].rstrip("\n"))
    assert len(stored.encode()) < 1000 + 100
    assert (row["input_tokens"], row["output_tokens"]) == (
        CHAT_BODY["usage"]["prompt_tokens"],
        CHAT_BODY["usage"]["completion_tokens"],
    )


@LIBS
def test_json_body_over_the_cap_still_yields_usage(lib: Any, db: Path) -> None:
    # An embeddings answer of ~3 MB: the usage sits at the very end of the JSON.
    body = {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": [0.123456] * 1024} for i in range(300)],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 4000, "total_tokens": 4000},
    }
    raw = json.dumps(body).encode()
    assert len(raw) > 2 * 1024 * 1024
    with client_for(
        lib,
        responder(lib, [raw[i : i + 65536] for i in range(0, len(raw), 65536)]),
        db,
        max_body_bytes=1024 * 1024,
    ) as client:
        reply = client.post(
            "https://api.openai.com/v1/embeddings",
            json={"model": "text-embedding-3-small", "input": ["a"] * 200},
        )
    assert reply.content == raw
    row = one_row(db)
    assert row["body_truncated"] == 1
    assert (row["operation"], row["input_tokens"], row["output_tokens"]) == ("embeddings", 4000, None)
    assert row["cost_usd"] == pytest.approx(4000 * 0.02 / 1e6, rel=1e-12)


@LIBS
def test_store_bodies_off_keeps_prompts_out_but_figures_in(
    lib: Any, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPTRACK_STORE_BODIES", "off")
    with client_for(lib, responder(lib, json.dumps(CHAT_BODY).encode()), db) as client:
        client.post(
            CHAT, json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "secret plan"}]}
        )
    row = one_row(db)
    assert (row["request_body"], row["response_body"], row["response_text"]) == (None, None, None)
    assert row["input_tokens"] == 9
    assert b"secret plan" not in db.read_bytes()


@LIBS
def test_unknown_path_on_a_known_host_still_gets_a_row(lib: Any, db: Path) -> None:
    with client_for(lib, responder(lib, b'{"object": "list", "data": []}'), db) as client:
        client.get("https://api.openai.com/v1/files")
    row = one_row(db)
    assert (row["provider"], row["operation"], row["endpoint"], row["status"]) == (
        "openai",
        "other",
        "/v1/files",
        "success",
    )
    assert row["cost_usd"] == 0.0


def test_hosts_setting_maps_self_hosted_endpoints(db: Path) -> None:
    body = json.dumps(CHAT_BODY).encode()
    with client_for(
        httpx, responder(httpx, body), db, hosts="127.0.0.1:8000=openai,llm.internal=anthropic"
    ) as c:
        c.post("http://127.0.0.1:8000/v1/chat/completions", json={"model": "gpt-4o-mini"})
        c.post("http://127.0.0.1:9000/v1/chat/completions", json={"model": "gpt-4o-mini"})  # not mapped
        c.post("http://127.0.0.1:9000/v1/jobs", json={"model": "gpt-4o-mini"})  # nor an LLM API
    rows = read_rows(db)
    # The mapped host is named as mapped; the other is recognised by its path alone.
    assert [(r["provider"], r["host"]) for r in rows] == [
        ("openai", "127.0.0.1:8000"),
        ("openai_compatible", "127.0.0.1:9000"),
    ]


def test_close_closes_the_inner_transport_and_flushes(db: Path) -> None:
    closed: list[bool] = []

    class Inner(httpx.MockTransport):
        def close(self) -> None:
            closed.append(True)

    transport = httptrack.TrackingTransport(
        Inner(responder(httpx, json.dumps(CHAT_BODY).encode())), db=db, cache=False
    )
    with httpx.Client(transport=transport) as client:
        client.post(CHAT, json={"model": "m"})
    assert closed == [True]
    assert len(read_rows(db)) == 1


def test_default_inner_transport_is_the_librarys_own() -> None:
    transport = httptrack.TrackingTransport(cache=False)
    for lib, request in (
        (httpx, httpx.Request("GET", "https://example.com")),
        (httpx2, httpx2.Request("GET", "https://example.com")),
    ):
        from httptrack._transport import _library_of

        inner = transport._default_inner(_library_of(request), "HTTPTransport")
        assert type(inner) is lib.HTTPTransport
    transport.close()


def test_bad_settings_fail_at_construction_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPTRACK_MAX_BODY_BYTES", "lots")
    with pytest.raises(httptrack.SettingsError, match="HTTPTRACK_MAX_BODY_BYTES"):
        httptrack.TrackingTransport()
    monkeypatch.delenv("HTTPTRACK_MAX_BODY_BYTES")
    with pytest.raises(httptrack.SettingsError, match="cache"):
        httptrack.TrackingTransport(cache="sometimes")
    with pytest.raises(TypeError, match="unknown option"):
        httptrack.TrackingTransport(colour="blue")


@LIBS
def test_price_file_and_overrides_price_unknown_models(
    lib: Any, db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"in-house-llm": {"input_mtok": 1.0, "output_mtok": 4.0}}))
    monkeypatch.setenv("HTTPTRACK_PRICES", str(prices))
    in_house = {**CHAT_BODY, "model": "in-house-llm"}
    unknown = {**CHAT_BODY, "model": "nobody-knows-this-model"}
    with client_for(lib, responder(lib, json.dumps(in_house).encode()), db) as client:
        client.post(CHAT, json={"model": "in-house-llm"})
    with client_for(lib, responder(lib, json.dumps(unknown).encode()), db) as client:
        client.post(CHAT, json={"model": "nobody-knows-this-model"})
    with client_for(
        lib,
        responder(lib, json.dumps(unknown).encode()),
        db,
        prices={"nobody-knows-this-model": {"input_mtok": 2.0, "output_mtok": 2.0}},
    ) as client:
        client.post(CHAT, json={"model": "nobody-knows-this-model"})
    rows = read_rows(db)
    assert rows[0]["cost_usd"] == pytest.approx((9 * 1.0 + 3 * 4.0) / 1e6, rel=1e-12)
    assert rows[1]["cost_usd"] is None  # never a silent $0
    assert "nobody-knows-this-model" in rows[1]["cost_note"]
    assert rows[2]["cost_usd"] == pytest.approx(12 * 2.0 / 1e6, rel=1e-12)
