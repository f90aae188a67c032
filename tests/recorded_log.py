"""A call log filled the way users fill it: real HTTP calls through ``TrackingTransport``
to the built-in fake provider (OpenAI on httpx2, Anthropic on httpx2, Ollama on httpx),
with attribution, streams, embeddings and errors. Shared by the CLI, API and datasette
tests."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import httpx2

import httptrack
from httptrack._fake import mock_transport

OPENAI = "https://api.openai.com/v1"
ANTHROPIC = "https://api.anthropic.com/v1"
OLLAMA = "http://localhost:11434/api"
OPENAI_HEADERS = {"authorization": "Bearer sk-test-not-real"}
ANTHROPIC_HEADERS = {"x-api-key": "sk-ant-test-not-real", "anthropic-version": "2023-06-01"}


def _ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def record_calls(db: Path) -> list[str]:
    """Make the standard calls, oldest first; returns their ids in that order.

    0  alice/summarizer, session s-1: OpenAI chat, gpt-4o-mini ("capital of France")
    1  alice/summarizer, session s-1: OpenAI chat streamed with usage ("tell me about Lyon")
    2  bob/support: Anthropic message, claude-haiku-4-5 ("refund policy for damaged umbrellas")
    3  bob/support: Anthropic message streamed, claude-sonnet-4-6 ("shipping delays in winter")
    4  carol/indexer: Ollama embeddings, nomic-embed-text
    5  carol/indexer: Ollama chat streamed, llama3.2 ("quantum umbrellas")
    6  alice/summarizer: OpenAI error 404 (missing-model)
    7  bob (no service): OpenAI error 429 (rate-limited)
    """
    options: dict[str, Any] = {"db": db, "cache": False}
    openai = httpx2.Client(
        transport=httptrack.TrackingTransport(mock_transport(httpx2), **options), headers=OPENAI_HEADERS
    )
    anthropic = httpx2.Client(
        transport=httptrack.TrackingTransport(mock_transport(httpx2), **options), headers=ANTHROPIC_HEADERS
    )
    ollama = httpx.Client(transport=httptrack.TrackingTransport(mock_transport(httpx), **options))
    ids: list[str] = []

    def keep(reply: Any) -> None:
        ids.append(reply.headers["x-httptrack-call-id"])

    with openai, anthropic, ollama:
        with httptrack.attribute(user="alice", service="summarizer", session="s-1"):
            keep(
                openai.post(
                    f"{OPENAI}/chat/completions",
                    json={"model": "gpt-4o-mini", "messages": _ask("What is the capital of France?")},
                )
            )
            with openai.stream(
                "POST",
                f"{OPENAI}/chat/completions",
                json={
                    "model": "gpt-4o-mini",
                    "messages": _ask("Tell me about Lyon"),
                    "stream": True,
                    "stream_options": {"include_usage": True},
                },
            ) as reply:
                reply.read()
                keep(reply)
        with httptrack.attribute(user="bob", service="support"):
            keep(
                anthropic.post(
                    f"{ANTHROPIC}/messages",
                    json={
                        "model": "claude-haiku-4-5",
                        "max_tokens": 100,
                        "messages": _ask("What is the refund policy for damaged umbrellas?"),
                    },
                )
            )
            with anthropic.stream(
                "POST",
                f"{ANTHROPIC}/messages",
                json={
                    "model": "claude-sonnet-4-6",
                    "max_tokens": 100,
                    "stream": True,
                    "messages": _ask("Explain shipping delays in winter"),
                },
            ) as reply:
                reply.read()
                keep(reply)
        with httptrack.attribute(user="carol", service="indexer"):
            keep(
                ollama.post(f"{OLLAMA}/embed", json={"model": "nomic-embed-text", "input": ["Paris", "Lyon"]})
            )
            with ollama.stream(
                "POST",
                f"{OLLAMA}/chat",
                json={"model": "llama3.2", "messages": _ask("Quantum umbrellas, briefly")},
            ) as reply:
                reply.read()
                keep(reply)
        with httptrack.attribute(user="alice", service="summarizer"):
            keep(
                openai.post(
                    f"{OPENAI}/chat/completions", json={"model": "missing-model", "messages": _ask("Hello?")}
                )
            )
        with httptrack.attribute(user="bob"):
            keep(
                openai.post(
                    f"{OPENAI}/chat/completions",
                    json={"model": "rate-limited", "messages": _ask("Hello again?")},
                )
            )
    assert httptrack.flush(10)
    return ids


def age_calls(db: Path, ages: dict[str, timedelta], *, now: datetime | None = None) -> None:
    """Move calls back in time (``started_at`` only), as if recorded that long ago, and
    roll the database up again: the transport can only record the present."""
    from httptrack.log import _rollup, _views

    now = now or datetime.now(UTC)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN")
        for call_id, age in ages.items():
            when = (now - age).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            conn.execute("UPDATE calls SET started_at = ? WHERE id = ?", [when, call_id])
        _rollup.rebuild_rollups(conn)
        _views.rebuild_search_index(conn)
        conn.execute("COMMIT")
    finally:
        conn.close()


def rows(db: Path, where: str = "1", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [
            dict(r)
            for r in conn.execute(f"SELECT * FROM calls WHERE {where} ORDER BY started_at, id", params)
        ]
    finally:
        conn.close()


def unique_prefix(call_id: str, ids: list[str]) -> str:
    """The shortest start of ``call_id`` (at least 4 characters) that no other id has. (Ids
    made in the same millisecond differ only at the end: their random part counts up.)"""
    for n in range(4, len(call_id) + 1):
        if sum(i.startswith(call_id[:n]) for i in ids) == 1:
            return call_id[:n]
    return call_id
