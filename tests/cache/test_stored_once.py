"""One copy of an answer's bytes: the cache folder stores an answer whose call's row holds
its exact bytes by reference to that row (``cache/_rows``), and reads them back from the
log when the entry is read from the folder. Answers the row does not hold exactly (a
``redact`` hook, content-encoding, bodies not stored) keep their bytes in the folder. A row
that is gone, or no longer holds those bytes, is a miss, never an error or a damaged answer.
Driven through the real openai SDK over an in-memory provider."""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from helpers import read_rows

import httptrack
from httptrack._fake import RecordedRequest, mock_transport
from httptrack._faults import fault_counts
from httptrack.cache._entry import _MAGIC_ROW
from httptrack.cache._store import shared_store
from httptrack.log._maintenance import prune

ROOT = Path(__file__).resolve().parents[2]
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def sdk(db: Path, cache_dir: Path, inner: Any, **options: Any) -> openai.OpenAI:
    transport = httptrack.TrackingTransport(inner, db=db, cache_dir=cache_dir, **options)
    return openai.OpenAI(api_key="sk-test-a", max_retries=0, http_client=httpx2.Client(transport=transport))


def blobs(cache_dir: Path) -> list[bytes]:
    """What the folder holds, entry by entry, as stored."""
    disk = shared_store(cache_dir)._open()
    return [disk.get(key) for key in disk.iterkeys()]


def forget_memory(cache_dir: Path) -> None:
    """The next lookup reads the folder (as another process would)."""
    shared_store(cache_dir).memory.clear()


def ask(client: openai.OpenAI, stream: bool = False) -> tuple[str, bytes]:
    """``(x-httptrack-cache, the body's bytes as the app got them)``: an event stream's
    too, read to its end."""
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=QUESTION, stream=stream
    )
    return raw.headers["x-httptrack-cache"], raw.http_response.read()


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "stream"])
def test_an_answer_is_stored_once_and_served_from_its_row(db: Path, cache_dir: Path, stream: bool) -> None:
    seen: list[RecordedRequest] = []
    client = sdk(db, cache_dir, mock_transport(httpx2, record=seen))
    status, body = ask(client, stream)
    httptrack.flush()
    assert status == "MISS"
    (blob,) = blobs(cache_dir)
    assert blob[:4] == _MAGIC_ROW  # a reference: the bytes are the row's
    answer = json.loads(body)["choices"][0]["message"]["content"] if not stream else None
    assert body not in blob and (answer is None or answer.encode() not in blob)
    forget_memory(cache_dir)
    assert ask(client, stream) == ("HIT", body)
    assert len(seen) == 1
    httptrack.flush()
    original, hit = sorted(read_rows(db), key=lambda row: row["cached"])
    assert hit["cached"] == 1 and hit["cost_saved_usd"] == original["cost_usd"] > 0
    for column in (
        "input_tokens",
        "output_tokens",
        "response_text",
        "finish_reason",
        "stream",
        "response_bytes",
    ):
        assert hit[column] == original[column], column
    assert not fault_counts()


_CHILD = textwrap.dedent(
    """
    import json, sys, httpx2, openai, httptrack

    db, cache_dir, stream = sys.argv[1], sys.argv[2], sys.argv[3] == "1"

    def refuse(request):
        raise AssertionError("replay mode sent a request")

    transport = httptrack.TrackingTransport(
        httpx2.MockTransport(refuse), db=db, cache_dir=cache_dir, cache="replay"
    )
    client = openai.OpenAI(api_key="sk-test-a", max_retries=0, http_client=httpx2.Client(transport=transport))
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "What is the capital of France?"}],
        stream=stream,
    )
    print(json.dumps([raw.headers["x-httptrack-cache"], raw.http_response.read().decode(),
                      httptrack.fault_counts()]))
    """
)


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "stream"])
def test_another_process_is_served_the_rows_bytes(db: Path, cache_dir: Path, stream: bool) -> None:
    client = sdk(db, cache_dir, mock_transport(httpx2))
    _, body = ask(client, stream)
    httptrack.flush()
    assert [blob[:4] for blob in blobs(cache_dir)] == [_MAGIC_ROW]
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(db), str(cache_dir), "1" if stream else "0"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr
    status, served, faults = json.loads(child.stdout)
    assert (status, served.encode(), faults) == ("HIT", body, {})


def test_a_redacted_body_keeps_its_bytes_in_the_folder(db: Path, cache_dir: Path) -> None:
    """The row holds the body as a redact hook left it: the entry keeps the bytes the
    provider sent, and a hit from the folder serves them exactly."""
    client = sdk(db, cache_dir, mock_transport(httpx2), redact=lambda text: text.replace("France", "[place]"))
    status, body = ask(client)
    httptrack.flush()
    assert status == "MISS" and b"France" in body
    (row,) = read_rows(db)
    assert "[place]" in row["response_body"] and "France" not in row["response_body"]
    (blob,) = blobs(cache_dir)
    assert blob[:4] != _MAGIC_ROW
    forget_memory(cache_dir)
    assert ask(client) == ("HIT", body)
    assert not fault_counts()


def test_a_content_encoded_answer_keeps_its_bytes_in_the_folder(db: Path, cache_dir: Path) -> None:
    """The row holds the decoded text; the entry keeps the gzip bytes and header as sent."""
    answer = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
    }
    packed = gzip.compress(json.dumps(answer).encode())
    sent: list[Any] = []

    def handler(request: Any) -> Any:
        sent.append(request)
        headers = {"content-type": "application/json", "content-encoding": "gzip"}
        # A raw stream, as a real connection gives it (``content=`` would be decoded).
        return httpx2.Response(200, headers=headers, stream=httpx2.ByteStream(packed))

    client = sdk(db, cache_dir, httpx2.MockTransport(handler))
    first = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    httptrack.flush()
    (blob,) = blobs(cache_dir)
    assert blob[:4] != _MAGIC_ROW
    forget_memory(cache_dir)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=QUESTION)
    assert raw.headers["x-httptrack-cache"] == "HIT" and raw.headers["content-encoding"] == "gzip"
    assert raw.parse().choices[0].message.content == first.choices[0].message.content == "Paris."
    assert len(sent) == 1


@pytest.mark.parametrize("bodies_only", [False, True], ids=["row-pruned", "body-pruned"])
def test_an_entry_whose_row_was_pruned_is_a_miss(db: Path, cache_dir: Path, bodies_only: bool) -> None:
    seen: list[RecordedRequest] = []
    client = sdk(db, cache_dir, mock_transport(httpx2, record=seen))
    _, body = ask(client)
    httptrack.flush()
    result = prune(db, datetime.now(UTC) + timedelta(days=1), bodies_only=bodies_only)
    assert (result.bodies_only, result.calls) == (bodies_only, 1)
    forget_memory(cache_dir)
    assert ask(client) == ("MISS", body)  # sent again, not an error
    assert len(seen) == 2
    httptrack.flush()
    assert [blob[:4] for blob in blobs(cache_dir)] == [_MAGIC_ROW]  # the new answer's row
    forget_memory(cache_dir)
    assert ask(client) == ("HIT", body)
    assert len(seen) == 2 and not fault_counts()


def test_an_entry_whose_log_is_gone_is_a_miss(db: Path, cache_dir: Path, tmp_path: Path) -> None:
    seen: list[RecordedRequest] = []
    client = sdk(db, cache_dir, mock_transport(httpx2, record=seen))
    ask(client)
    httptrack.flush()
    # Another log, same cache folder: the first log deleted (a temporary one, say).
    other = sdk(tmp_path / "other.db", cache_dir, mock_transport(httpx2, record=seen))
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    forget_memory(cache_dir)
    assert ask(other)[0] == "MISS"
    assert len(seen) == 2 and not fault_counts()


def test_a_row_that_no_longer_holds_the_answer_is_never_served(db: Path, cache_dir: Path) -> None:
    seen: list[RecordedRequest] = []
    client = sdk(db, cache_dir, mock_transport(httpx2, record=seen))
    _, body = ask(client)
    httptrack.flush()
    tampered = body.replace(b"France", b"Rennes")
    assert tampered != body and len(tampered) == len(body)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE calls SET response_body = ?", (tampered.decode(),))
    forget_memory(cache_dir)
    assert ask(client) == ("MISS", body)  # the provider's answer, not the row's
    assert len(seen) == 2


def test_a_log_that_cannot_be_read_is_a_miss_and_the_entry_kept(
    db: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from httptrack.cache import _rows

    seen: list[RecordedRequest] = []
    client = sdk(db, cache_dir, mock_transport(httpx2, record=seen))
    _, body = ask(client)
    httptrack.flush()

    def locked(path: str) -> Any:
        raise _rows.RowUnreadable("database is locked")

    replay = sdk(db, cache_dir, mock_transport(httpx2, record=seen), cache="replay")
    with monkeypatch.context() as patch:
        patch.setattr(_rows, "_connection", locked)
        forget_memory(cache_dir)
        with pytest.raises(httptrack.CacheMiss):
            ask(replay)
        assert fault_counts()["cache_busy"] == 1
    forget_memory(cache_dir)
    assert ask(replay) == ("HIT", body)  # kept: read once the log can be
    assert len(seen) == 1


def test_an_answer_whose_row_is_not_written_yet_keeps_its_bytes(
    db: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log cannot be written (locked, full): the row waits in memory and the spool,
    so the entry cannot point at it and keeps the answer itself."""
    from httptrack._errors import LogUnavailable
    from httptrack.log import _sqlite

    def unavailable(self: Any, rows: Any) -> Any:
        raise LogUnavailable("the log is locked")

    seen: list[RecordedRequest] = []
    client = sdk(db, cache_dir, mock_transport(httpx2, record=seen))
    with monkeypatch.context() as patch:
        patch.setattr(_sqlite.Store, "write", unavailable)
        _, body = ask(client)
        assert httptrack.flush(timeout=5) is False
        (blob,) = blobs(cache_dir)
        assert blob[:4] != _MAGIC_ROW
        forget_memory(cache_dir)
        assert ask(client) == ("HIT", body)
    assert httptrack.flush() is True
    assert len(read_rows(db)) == 2 and len(seen) == 1


def test_the_folder_keeps_whole_answers_when_the_log_is_postgres(log_db: Any, cache_dir: Path) -> None:
    """Only a SQLite log is read back by the folder's entries; over a Postgres log they
    keep their bytes (and a Redis cache always does: see test_redis)."""
    seen: list[RecordedRequest] = []
    client = sdk(log_db, cache_dir, mock_transport(httpx2, record=seen))
    _, body = ask(client)
    httptrack.flush()
    (blob,) = blobs(cache_dir)
    assert (blob[:4] == _MAGIC_ROW) == isinstance(log_db, Path)
    forget_memory(cache_dir)
    assert ask(client) == ("HIT", body)
    assert len(seen) == 1 and not fault_counts()
