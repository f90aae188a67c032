"""Faults in httptrack's own work never reach the app: the same bytes, status and exceptions
as without httptrack; each fault kind is logged once and counted."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from helpers import LIBS, chunk_stream, one_row, read_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import httptrack

CHAT = "https://api.openai.com/v1/chat/completions"

ODD_PAYLOADS = {
    "invalid json": (b'{"id": "x", "usage": {"prompt_tokens": 3,', "application/json"),
    "binary": (bytes(range(256)) * 4, "application/octet-stream"),
    "html error page": (b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html"),
    "truncated sse": (
        b'data: {"choices": [{"delta": {"content": "hi"}}]}\n\ndata: {"choi',
        "text/event-stream",
    ),
    "absurd numbers": (
        json.dumps(
            {
                "model": "gpt-4o",
                "usage": {"prompt_tokens": -5, "completion_tokens": 1e308, "total_tokens": "many"},
            }
        ).encode(),
        "application/json",
    ),
    "wrong types": (
        json.dumps({"model": ["not", "a", "string"], "choices": "nope", "usage": [1, 2]}).encode(),
        "application/json",
    ),
    "empty": (b"", "application/json"),
    "json array": (b"[1, 2, 3]", "application/json"),
    "sse of garbage": (b"data: \xff\xfe\x00\n\nevent: ??\ndata: {]\n\n", "text/event-stream"),
}


@LIBS
@pytest.mark.parametrize("name", sorted(ODD_PAYLOADS))
def test_payloads_no_parser_understands(lib: Any, name: str, db: Path) -> None:
    body, content_type = ODD_PAYLOADS[name]
    pieces = [body[i : i + 5] for i in range(0, len(body), 5)] or [b""]

    def handler(request: Any) -> Any:
        return lib.Response(200, headers={"content-type": content_type}, stream=chunk_stream(lib, pieces))

    transport = httptrack.TrackingTransport(lib.MockTransport(handler), db=db, cache=False)
    with lib.Client(transport=transport) as client:
        reply = client.post(CHAT, json={"model": "gpt-4o", "stream": content_type == "text/event-stream"})
    assert reply.status_code == 200
    assert reply.content == body  # the app's view is untouched
    row = one_row(db)
    assert (row["provider"], row["http_status"]) == ("openai", 200)
    for figure in ("input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens"):
        assert row[figure] is None or (isinstance(row[figure], int) and row[figure] >= 0)


def test_html_error_page_is_recorded_as_an_error_with_its_text(db: Path) -> None:
    page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"

    def handler(request: Any) -> Any:
        return httpx.Response(502, headers={"content-type": "text/html"}, content=page)

    with httpx.Client(
        transport=httptrack.TrackingTransport(httpx.MockTransport(handler), db=db, cache=False)
    ) as c:
        reply = c.post(CHAT, json={"model": "gpt-4o"})
    assert (reply.status_code, reply.content) == (502, page)
    row = one_row(db)
    assert (row["status"], row["error_code"], row["error_message"]) == ("error", "http_502", page.decode())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.binary(max_size=3000),
    cut=st.integers(min_value=1, max_value=64),
    content_type=st.sampled_from(
        ["application/json", "text/event-stream", "application/x-ndjson", "text/plain"]
    ),
    host=st.sampled_from(
        ["api.openai.com", "api.anthropic.com", "localhost:11434", "generativelanguage.googleapis.com"]
    ),
)
def test_fuzzed_responses_never_break_the_call(
    tmp_path_factory: Any, body: bytes, cut: int, content_type: str, host: str
) -> None:
    db = tmp_path_factory.mktemp("fuzz") / "calls.db"
    pieces = [body[i : i + cut] for i in range(0, len(body), cut)] or [b""]

    def handler(request: Any) -> Any:
        return httpx2.Response(
            200, headers={"content-type": content_type}, stream=chunk_stream(httpx2, pieces)
        )

    transport = httptrack.TrackingTransport(httpx2.MockTransport(handler), db=db, cache=False)
    with httpx2.Client(transport=transport) as client:
        reply = client.post(f"http://{host}/v1/chat/completions", json={"model": "m", "stream": True})
    assert reply.content == body
    assert len(read_rows(db)) == 1
    assert httptrack.fault_counts().get("record", 0) == 0  # a row, not a crash in the recorder


def test_a_full_disk_stops_recording_not_calling(db: Path) -> None:
    body = json.dumps({"model": "gpt-4o-mini", "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
    transport = httptrack.TrackingTransport(
        httpx.MockTransport(lambda r: httpx.Response(200, text=body)), db=db, cache=False
    )
    with httpx.Client(transport=transport) as client:
        client.post(CHAT, json={"model": "gpt-4o-mini"})
        assert len(read_rows(db)) == 1
        # Make the database "full": SQLite refuses to grow it past its current size.
        conn = sqlite3.connect(db)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.close()
        from httptrack.log import _sqlite as _store
        from httptrack.record import _writer

        _writer.writer().close_connections()
        original = _store.connect

        def full(path: Any, **kw: Any) -> sqlite3.Connection:
            c = original(path, **kw)
            c.execute(f"PRAGMA max_page_count={pages}")
            return c

        _store.connect = full  # type: ignore[assignment]
        try:
            big = os.urandom(100_000).hex()  # bodies are stored compressed: one that does not shrink
            for _ in range(3):
                assert client.post(CHAT, json={"model": "gpt-4o-mini", "pad": big}).text == body
            httptrack.flush(5)
        finally:
            _store.connect = original  # type: ignore[assignment]
            _writer.writer().close_connections()
    assert httptrack.fault_counts().get("database", 0) >= 1
    # Once there is room again the waiting rows are written: nothing lost.
    assert len(read_rows(db)) == 4


def test_a_corrupted_database_never_breaks_the_call(db: Path) -> None:
    db.write_bytes(b"this is not a database" * 100)
    transport = httptrack.TrackingTransport(
        httpx.MockTransport(lambda r: httpx.Response(200, text="{}")), db=db, cache=False
    )
    with httpx.Client(transport=transport) as client:
        for _ in range(3):
            assert client.post(CHAT, json={"model": "gpt-4o"}).status_code == 200
    httptrack.flush(5)
    assert httptrack.fault_counts().get("database", 0) >= 1


def test_redact_hook_scrubs_bodies_before_they_are_stored(db: Path) -> None:
    import re

    def no_emails(text: str) -> str:
        return re.sub(r"[\w.]+@[\w.]+", "[email]", text)

    reply_body = json.dumps(
        {
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"content": "Write to bob@example.com"}}],
            "usage": {"prompt_tokens": 4, "completion_tokens": 4},
        }
    )
    transport = httptrack.TrackingTransport(
        httpx.MockTransport(lambda r: httpx.Response(200, text=reply_body)),
        db=db,
        cache=False,
        redact=no_emails,
    )
    with httpx.Client(transport=transport) as client:
        client.post(CHAT, json={"model": "gpt-4o-mini", "messages": [{"content": "mail alice@example.com"}]})
    row = one_row(db)
    assert "alice@example.com" not in row["request_body"] and "[email]" in row["request_body"]
    assert "bob@example.com" not in row["response_body"] and row["response_text"] == "Write to [email]"
    assert row["input_tokens"] == 4  # figures are read before redaction
    assert b"@example.com" not in db.read_bytes()


def test_a_failing_redact_hook_stores_no_body(db: Path) -> None:
    def broken(text: str) -> str:
        raise ValueError("bug in the user's hook")

    transport = httptrack.TrackingTransport(
        httpx.MockTransport(lambda r: httpx.Response(200, text="{}")), db=db, cache=False, redact=broken
    )
    with httpx.Client(transport=transport) as client:
        assert client.post(CHAT, json={"model": "gpt-4o-mini", "messages": "private"}).status_code == 200
    row = one_row(db)
    assert "private" not in (row["request_body"] or "")
    assert httptrack.fault_counts()["redact"] == 1


@pytest.mark.slow
def test_many_processes_writing_one_database_lose_nothing(db: Path) -> None:
    script = textwrap.dedent("""
        import json, sys, httpx, httptrack
        body = json.dumps({"model": "gpt-4o-mini", "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
        t = httptrack.TrackingTransport(httpx.MockTransport(lambda r: httpx.Response(200, text=body)),
                                        db=sys.argv[1], cache=False)
        with httpx.Client(transport=t) as client, httptrack.attribute(user=sys.argv[2]):
            for _ in range(int(sys.argv[3])):
                client.post("https://api.openai.com/v1/chat/completions", json={"model": "gpt-4o-mini"})
    """)
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(db), f"p{i}", "2000"], env={**os.environ})
        for i in range(4)
    ]
    for p in procs:
        assert p.wait(timeout=300) == 0
    conn = sqlite3.connect(db)
    counts = dict(conn.execute("SELECT user, count(*) FROM calls GROUP BY user").fetchall())
    assert counts == {f"p{i}": 2000 for i in range(4)}
    assert conn.execute("SELECT count(DISTINCT id) FROM calls").fetchone()[0] == 8000


def _chat_client(db: Path) -> tuple[str, httpx.Client]:
    """A chat answer, and a client whose calls get it through a tracking transport (cache off)."""
    body = json.dumps({"model": "gpt-4o-mini", "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
    transport = httptrack.TrackingTransport(
        httpx.MockTransport(lambda r: httpx.Response(200, text=body)), db=db, cache=False
    )
    return body, httpx.Client(transport=transport)


def test_a_stuck_writer_never_grows_memory_without_limit(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from httptrack.record import _writer

    monkeypatch.setattr(_writer, "MAX_QUEUED_BYTES", 1_000_000)
    body, client = _chat_client(db)
    writer = _writer.writer()
    dropped = writer.dropped
    with client:
        client.post(CHAT, json={"model": "gpt-4o-mini"})
        httptrack.flush()
        with writer._lock:  # the writer is stuck (a disk that does not answer)
            for _ in range(30):  # 30 calls of ~100 kB: three times the bound
                assert client.post(CHAT, json={"model": "gpt-4o-mini", "pad": "x" * 100_000}).text == body
            assert writer._queued_bytes <= 1_000_000
    assert writer.dropped - dropped == 21  # 9 calls fit under the bound
    assert len(read_rows(db)) == 1 + 9
    assert httptrack.fault_counts()["queue_full"] == 21
    assert writer._queued_bytes == 0


def test_calls_wait_a_moment_for_a_writer_that_falls_behind(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller that never waits (cache hits in a loop) would starve the writer of the GIL:
    past BACKLOG_CALLS queued calls, each new call waits for the writer's next transaction,
    at most BACKLOG_WAIT seconds; nothing is dropped, every call is answered."""
    from httptrack.record import _writer

    monkeypatch.setattr(_writer, "BACKLOG_CALLS", 5)
    body, client = _chat_client(db)
    writer = _writer.writer()
    dropped = writer.dropped
    with client:
        client.post(CHAT, json={"model": "gpt-4o-mini"})
        assert httptrack.flush()
        waits = writer.backlog_waits
        with writer._lock:  # the writer cannot drain: the queue only grows
            for n in range(8):
                assert client.post(CHAT, json={"model": "gpt-4o-mini", "n": n}).text == body
            # Calls 5 to 8 found 5, 6, 7 and 8 calls queued (theirs included): each waited.
            assert writer.backlog_waits - waits == 4
        assert httptrack.flush()
        waits = writer.backlog_waits
        for n in range(4):  # the writer keeps up: no call waits
            client.post(CHAT, json={"model": "gpt-4o-mini", "m": n})
        assert writer.backlog_waits == waits
    assert writer.dropped == dropped
    assert len(read_rows(db)) == 1 + 8 + 4


def test_rows_waiting_for_an_unwritable_database_are_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from httptrack.record import _writer

    monkeypatch.setattr(_writer, "MAX_PENDING_BYTES", 300_000)
    db = tmp_path / "not-a-dir" / "calls.db"
    (tmp_path / "not-a-dir").write_text("a file where the folder should be")
    transport = httptrack.TrackingTransport(
        httpx.MockTransport(lambda r: httpx.Response(200, text="{}")), db=db, cache=False
    )
    writer = _writer.writer()
    dropped = writer.dropped
    with httpx.Client(transport=transport) as client:
        for _ in range(10):
            client.post(CHAT, json={"model": "gpt-4o-mini", "pad": "x" * 100_000})
            httptrack.flush()
    pending = writer._logs[db].pending
    assert 1 <= len(pending) <= 3 and writer.dropped - dropped == 10 - len(pending)
    assert httptrack.fault_counts()["pending_full"] == 10 - len(pending)
    assert httptrack.fault_counts()["rows_dropped"] == 10 - len(pending)  # every one counted
