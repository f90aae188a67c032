"""The fast reading of SSE streams gives exactly the rows the general reading gave.

Two fast paths: ``sse_pairs`` splits a plain SSE body without a step per line (else the
``SSEDecoder``), and ``OpenAICompatible.sse_reader`` reads a chat/completions chunk from
its text into typed fields (else ``read_event`` on the fully decoded JSON). Every recorded
stream (tests/fixtures/providers, tests/fixtures/provider-samples) and streams drawn to
reach each fallback are built into rows both ways, and the rows compared column by column.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import httpx2
import pytest
from helpers import SAMPLES, chunk_stream

import httptrack
from httptrack.providers import openai as openai_module
from httptrack.providers._base import Provider
from httptrack.record._decoders import SSEDecoder, sse_pairs
from httptrack.record._row import build_row
from httptrack.record._writer import writer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "providers"
#: Columns that differ between two builds of one exchange for reasons of their own.
_VOLATILE = {"id", "started_at", "latency_ms"}


def _recorded() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    found = []
    for folder in sorted([*FIXTURES.glob("*/*"), *SAMPLES.glob("*")]):
        if not (folder / "response.json").exists():
            continue
        request = json.loads((folder / "request.json").read_text())
        response = json.loads((folder / "response.json").read_text())
        if "event-stream" in str(response.get("headers", {}).get("content-type", "")):
            found.append((folder.name, request, response))
    return found


RECORDED = _recorded()


def _content(request: dict[str, Any]) -> bytes | None:
    if "body_text" in request:
        return str(request["body_text"]).encode()
    return None if request.get("body") is None else json.dumps(request["body"]).encode()


def _exchange(
    monkeypatch: pytest.MonkeyPatch,
    db: Path,
    request: dict[str, Any],
    status: int,
    headers: Any,
    chunks: list[bytes],
    fail_after: int | None = None,
) -> Any:
    captured: list[Any] = []
    monkeypatch.setattr(writer(), "submit", captured.append)

    def handler(sent: Any) -> Any:
        return httpx2.Response(status, headers=headers, stream=chunk_stream(httpx2, chunks, fail_after))

    options = {"db": db, "cache": False, "include_usage": False, "hosts": request.get("hosts") or None}
    with httpx2.Client(
        transport=httptrack.TrackingTransport(httpx2.MockTransport(handler), **options)
    ) as client:
        sent = client.build_request(
            request["method"], request["url"], headers=request.get("headers") or {}, content=_content(request)
        )
        reply = client.send(sent, stream=True)
        try:
            for _ in reply.iter_raw():
                pass
        except Exception:
            pass  # a stream broken off (fail_after)
        finally:
            reply.close()
    monkeypatch.undo()
    assert len(captured) == 1
    return captured[0]


def _both_ways(monkeypatch: pytest.MonkeyPatch, exchange: Any) -> tuple[dict[str, Any], dict[str, Any], int]:
    """(the row read fast, the row read the general way, chunks the fast reader read)."""
    read = [0]
    make = openai_module.chunk_reader

    def counting(take_usage: Any) -> Any:
        inner = make(take_usage)

        def reader(parsed: Any, event: Any, text: str) -> bool:
            done = inner(parsed, event, text)
            read[0] += done
            return done

        return reader

    with monkeypatch.context() as patch:
        patch.setattr(openai_module, "chunk_reader", counting)
        built = build_row(exchange)
        fast = {**built.row, "complete": built.response_complete}
    with monkeypatch.context() as patch:
        patch.setattr(Provider, "sse_reader", lambda self, parsed: None)
        patch.setattr(openai_module.OpenAICompatible, "sse_reader", lambda self, parsed: None)
        patch.setattr("httptrack.record._row.sse_pairs", _decoded)
        built = build_row(exchange)
        general = {**built.row, "complete": built.response_complete}
    return _stable(fast), _stable(general), read[0]


def _decoded(chunks: list[bytes]) -> list[tuple[str | None, str]]:
    return [(e.event, e.data) for e in SSEDecoder().decode_all(chunks)]


def _stable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in _VOLATILE}


def test_there_are_recorded_streams() -> None:
    assert len(RECORDED) >= 20


@pytest.mark.parametrize(("name", "request_", "response"), RECORDED, ids=[r[0] for r in RECORDED])
def test_every_recorded_stream_reads_the_same(
    name: str, request_: dict[str, Any], response: dict[str, Any], monkeypatch: pytest.MonkeyPatch, db: Path
) -> None:
    body = response["body_text"].encode()
    for cut in (len(body), len(body) * 2 // 3, len(body) - 3):  # whole, and cut short mid-event
        chunks = [body[: cut // 2], body[cut // 2 : cut]]
        exchange = _exchange(monkeypatch, db, request_, response["status"], response["headers"], chunks)
        fast, general, _ = _both_ways(monkeypatch, exchange)
        assert fast == general, (name, cut)
        assert sse_pairs(chunks) == _decoded(chunks), (name, cut)


def test_the_openai_chunks_are_read_fast(monkeypatch: pytest.MonkeyPatch, db: Path) -> None:
    """Not a path that never runs: the chunks of the OpenAI-style recorded streams are read
    by the fast reader."""
    total = 0
    for _, request, response in RECORDED:
        if "/chat/completions" not in request["url"]:
            continue
        exchange = _exchange(
            monkeypatch,
            db,
            request,
            response["status"],
            response["headers"],
            [response["body_text"].encode()],
        )
        total += _both_ways(monkeypatch, exchange)[2]
    assert total >= 20


# -- drawn streams: every fallback ---------------------------------------------------------

_CHUNKS: list[Any] = [
    {
        "id": "c1",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}],
    },
    {
        "id": "c1",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": None}],
    },
    {"choices": [{"index": 0, "delta": {"reasoning_content": "think", "reasoning": "more"}}]},
    {
        "choices": [
            {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{"}}]}}
        ]
    },
    {"choices": [{"index": 0, "delta": {"tool_calls": "odd"}}]},
    {"choices": [{"index": 1, "delta": {"content": "second"}, "finish_reason": "stop"}]},
    {"choices": [{"index": 0.0, "delta": {"content": "float index"}}]},
    {"choices": [{"index": None, "delta": {"content": "null index"}}]},
    {"choices": [{"index": True, "delta": {"content": "bool index"}}]},
    {"choices": [{"delta": {"content": ["a", "list"]}}]},
    {"choices": [{"delta": "text delta", "text": "t"}]},
    {"choices": [{"text": "legacy"}, {"text": ""}]},
    {"choices": [{"text": 5}]},
    {"choices": ["not an object", {"index": 0, "delta": {"content": "x"}}]},
    {"choices": "not a list"},
    {
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3},
    },
    {
        "choices": [],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 4,
            "prompt_tokens_details": {"cached_tokens": 2},
            "completion_tokens_details": {"reasoning_tokens": 1},
        },
        "service_tier": "flex",
    },
    {"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 4}, "service_tier": "default"},
    {"choices": [], "usage": [1, 2]},
    {
        "choices": [{"index": 0, "delta": {"content": "u"}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    },
    {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "cost": 0.002}},
    {"x_groq": {"id": "g"}, "choices": [{"index": 0, "delta": {"content": "g"}}]},
    {"x_groq": {"usage": {"prompt_tokens": 5, "completion_tokens": 6}}, "choices": []},
    {"x_groq": {"error": {"message": "groq failed"}}},
    {"x_groq": "odd"},
    {
        "error": {"message": "boom", "code": "server_error"},
        "usage": {"prompt_tokens": 1, "completion_tokens": 1},
    },
    {"error": None, "choices": [{"index": 0, "delta": {"content": "no error"}}]},
    {"error": {}, "choices": [{"index": 0, "delta": {"content": "empty error"}}]},
    {"type": "response.output_text.delta", "delta": "typed"},
    {"type": 7, "choices": [{"index": 0, "delta": {"content": "numeric type"}}]},
    {"model": "", "id": 5, "choices": []},
    {"model": 3},
    {"choices": [{"index": 0, "finish_reason": "length", "delta": {"content": "end"}}]},
    {"choices": [{"index": 0, "finish_reason": 1}]},
    {"choices": [{"index": 99999999999999999999999, "finish_reason": "stop"}]},
    [1, 2],
    "a string",
    None,
]
_RAW = [
    "data: [DONE]",
    "data: not json",
    "data: ",
    'data: {"x": NaN, "choices": [{"delta": {"content": "nan"}}]}',
    'data: {"model": "a", "model": "b"}',
    "event: message\ndata: " + json.dumps({"choices": [{"delta": {"content": "named"}}]}),
    ": keep-alive comment",
    "data: " + "[" * 3000 + "]" * 3000,
    'data: {"choices": [{"delta": {"content": "\\ud800 lone"}}]}',
    'data: {"choices": [{"delta": {"content": "caf\u00e9 \u2603"}}]}',
    "id: 4\ndata: " + json.dumps({"choices": [{"delta": {"content": "with id"}}]}),
    'data: {"choices":\ndata: []}',
]


@pytest.mark.parametrize("seed", range(80))
def test_drawn_streams_read_the_same(seed: int, monkeypatch: pytest.MonkeyPatch, db: Path) -> None:
    rng = random.Random(seed)
    events = ["data: " + json.dumps(rng.choice(_CHUNKS)) for _ in range(rng.randint(1, 12))]
    events += rng.sample(_RAW, rng.randint(0, 2))
    rng.shuffle(events)
    ending = rng.choice(["\n\n", "\n", "", "\n\n\n\n"])
    newline = rng.choice(["\n", "\n", "\r\n"])
    body = (("\n\n".join(events)) + ending).replace("\n", newline).encode()
    if rng.random() < 0.3:
        body = body[: rng.randint(1, len(body))]  # cut short anywhere
    request = {
        "method": "POST",
        "url": rng.choice(
            [
                "https://api.openai.com/v1/chat/completions",
                "https://api.groq.com/openai/v1/chat/completions",
                "https://api.mistral.ai/v1/chat/completions",
            ]
        ),
        "headers": {"content-type": "application/json"},
        "body": {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "n": rng.choice([1, 2]),
        },
    }
    if rng.random() < 0.5:
        request["body"]["stream_options"] = {"include_usage": True}  # complete only once the usage came
    cut = rng.randint(0, len(body))
    chunks = [body[:cut], body[cut:]]
    fail_after = rng.choice([None, None, 1])  # broken off: a provisional usage is re-counted
    exchange = _exchange(
        monkeypatch, db, request, 200, {"content-type": "text/event-stream"}, chunks, fail_after
    )
    fast, general, _ = _both_ways(monkeypatch, exchange)
    assert fast == general
    assert sse_pairs(chunks) == _decoded(chunks)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xef\xbb\xbfdata: a\n\n",
        b"data: a\r\rdata: b\r\n\r\n",
        b"data: a\n\n\ndata: b\n\n",
        b"event: x\n\n",
        b"event: x\ndata: 1\ndata: 2\n\n",
        b"data:a\n\n",
        b"data: a\n",
        b"event: e\ndata: a",
        b"data: \xe2\x82\n\ndata: b",
        b"retry: 5\ndata: a\n\n",
    ],
)
def test_sse_pairs_as_the_decoder(body: bytes) -> None:
    for cut in range(len(body) + 1):
        chunks = [body[:cut], body[cut:]]
        assert sse_pairs(chunks) == _decoded(chunks)


def _sse(*chunks: Any) -> bytes:
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)


_TEXT = {"choices": [{"index": 0, "delta": {"content": "a longer answer than three tokens"}}]}
_RUNNING = {**_TEXT, "usage": {"prompt_tokens": 9, "completion_tokens": 1}}  # continuous usage stats
_FINISH = {
    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 3},
}


@pytest.mark.parametrize(
    ("body", "fail_after"),
    [
        (_sse(_TEXT, _FINISH), None),  # usage on the finish chunk, usage asked, no [DONE]: whole
        (_sse(_TEXT, _RUNNING), None),  # a running count only: not whole
        ([_sse(_TEXT, _FINISH), b'data: {"choi'], 1),  # final figures, then broken off: kept
        ([_sse(_TEXT, _RUNNING), b'data: {"choi'], 1),  # provisional figures, broken off: counted
    ],
)
def test_final_usage_reads_the_same(
    body: Any, fail_after: int | None, monkeypatch: pytest.MonkeyPatch, db: Path
) -> None:
    request = {
        "method": "POST",
        "url": "https://api.openai.com/v1/chat/completions",
        "headers": {"content-type": "application/json"},
        "body": {
            "model": "gpt-4o-mini",
            "messages": [],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    }
    chunks = body if isinstance(body, list) else [body]
    exchange = _exchange(
        monkeypatch, db, request, 200, {"content-type": "text/event-stream"}, chunks, fail_after
    )
    fast, general, read = _both_ways(monkeypatch, exchange)
    assert read >= 2
    assert fast == general
