"""A valid stream split anywhere yields the same row.

Every streamed exchange we hold (../shared/provider-samples and tests/fixtures/providers) is
fed through the transport's tee in pieces cut at random places — mid-line, mid-event,
mid-UTF-8 character — and must give exactly the row the unsplit stream gives, with the app
receiving the same bytes.
"""

from __future__ import annotations

import json
import sqlite3
from functools import cache
from pathlib import Path
from typing import Any

import httpx2
from helpers import SAMPLES, chunk_stream, split_at
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import httptrack

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "providers"
COMPARED = (
    "provider", "operation", "model", "response_model", "stream", "status", "outcome", "error_code",
    "input_tokens", "output_tokens", "total_tokens", "cached_input_tokens", "cache_write_tokens",
    "reasoning_tokens", "tokens_estimated", "cost_usd", "finish_reason", "response_id", "response_text",
)  # fmt: skip


def _streams() -> dict[str, Path]:
    folders = [p.parent for p in SAMPLES.glob("*/expected.json")] + [
        p.parent for p in FIXTURES.glob("*/*/expected.json")
    ]
    found = {}
    for folder in folders:
        if json.loads((folder / "expected.json").read_text()).get("stream"):
            found[str(folder.relative_to(folder.parents[1]))] = folder
    return dict(sorted(found.items()))


STREAMS = _streams()


def _load(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    folder = STREAMS[name]
    return json.loads((folder / "request.json").read_text()), json.loads(
        (folder / "response.json").read_text()
    )


def _run(name: str, pieces: list[bytes], db: Path) -> tuple[bytes, dict[str, Any]]:
    request, response = _load(name)

    def handler(sent: Any) -> Any:
        return httpx2.Response(
            response["status"], headers=response["headers"], stream=chunk_stream(httpx2, pieces)
        )

    transport = httptrack.TrackingTransport(httpx2.MockTransport(handler), db=db, cache=False, include_usage=False,
                                            hosts=request.get("hosts") or None)  # fmt: skip
    content = (
        request["body_text"].encode() if "body_text" in request else json.dumps(request.get("body")).encode()
    )
    with httpx2.Client(transport=transport) as client:
        reply = client.send(client.build_request(request["method"], request["url"], headers=request["headers"],
                                                 content=content), stream=True)  # fmt: skip
        try:
            received = b"".join(reply.iter_raw())
        finally:
            reply.close()
    assert httptrack.flush(10)
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        (row,) = conn.execute("SELECT * FROM calls ORDER BY id DESC LIMIT 1").fetchall()
    finally:
        conn.close()
    return received, {k: row[k] for k in COMPARED}


@cache
def _reference(name: str, folder: Path) -> dict[str, Any]:
    _, response = _load(name)
    body = response["body_text"].encode()
    received, row = _run(name, [body], folder / "reference.db")
    assert received == body
    return row


def test_there_are_streams_of_every_format() -> None:
    formats = set()
    for name in STREAMS:
        _, response = _load(name)
        content_type = response["headers"].get("content-type", "")
        formats.add(
            "sse" if "event-stream" in content_type else "ndjson" if "ndjson" in content_type else "other"
        )
    assert {"sse", "ndjson", "other"} <= formats  # "other": Gemini's JSON array
    assert len(STREAMS) >= 20


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(sorted(STREAMS)),
    cuts=st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=60),
)
def test_a_stream_split_anywhere_gives_the_same_row(
    tmp_path_factory: Any, name: str, cuts: list[int]
) -> None:
    folder = tmp_path_factory.mktemp("fuzz", numbered=True)
    _, response = _load(name)
    body = response["body_text"].encode()
    pieces = split_at(body, cuts)
    received, row = _run(name, pieces, folder / "calls.db")
    assert received == body
    assert row == _reference(name, tmp_path_factory.getbasetemp())
