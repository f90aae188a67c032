"""A call log filled the way users fill it: real HTTP calls through ``TrackingTransport``
to the built-in fake provider (OpenAI on httpx2, Anthropic on httpx2, Ollama on httpx),
with attribution, streams, embeddings and errors. Shared by the CLI, API and datasette
tests."""

from __future__ import annotations

import json
import math
import random
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from helpers import as_text

import httptrack
from httptrack._fake import mock_transport
from httptrack.log import _views
from httptrack.log._schema import COLUMN_NAMES, READ_INDEXES
from httptrack.log._sqlite import Store

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


@contextmanager
def transaction(db: Path) -> Iterator[sqlite3.Connection]:
    """A connection to ``db`` inside one transaction, committed at the end; closed after."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN")
        yield conn
        conn.execute("COMMIT")
    finally:
        conn.close()


def age_calls(db: Path, ages: dict[str, timedelta], *, now: datetime | None = None) -> None:
    """Move calls back in time (``started_at`` only), as if recorded that long ago, and
    roll the database up again: the transport can only record the present."""
    from httptrack.log import _rollup, _views

    now = now or datetime.now(UTC)
    with transaction(db) as conn:
        for call_id, age in ages.items():
            when = (now - age).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            conn.execute("UPDATE calls SET started_at = ? WHERE id = ?", [when, call_id])
        _rollup.rebuild_rollups(conn)
        _views.rebuild_search_index(conn)


def rows(db: Path, where: str = "1", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [
            as_text(dict(r))
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


def expected_stats(selected: list[dict[str, Any]]) -> dict[str, Any]:
    """What ``stats`` must say about these rows, computed here from scratch."""

    def total(key: str) -> Any:
        values = [r[key] for r in selected if r[key] is not None]
        return sum(values) if values else None

    timed = [r["latency_ms"] for r in selected if r["latency_ms"] is not None and not r["cached"]]
    errors = sum(r["status"] == "error" for r in selected)
    return {
        "calls": len(selected),
        "errors": errors,
        "error_rate": round(errors / len(selected), 4),
        "cache_hits": sum(bool(r["cached"]) for r in selected),
        "input_tokens": total("input_tokens"),
        "output_tokens": total("output_tokens"),
        "total_tokens": total("total_tokens"),
        "cached_input_tokens": total("cached_input_tokens"),
        "cost_usd": None if total("cost_usd") is None else round(total("cost_usd"), 9),
        "cost_saved_usd": total("cost_saved_usd"),
        "unpriced": sum(r["cost_usd"] is None and r["status"] == "success" for r in selected),
        "avg_latency_ms": round(sum(timed) / len(timed), 1) if timed else None,
        "p50": nearest_rank(timed, 0.5) if timed else None,
        "p95": nearest_rank(timed, 0.95) if timed else None,
    }


def check_stats(got: dict[str, Any], selected: list[dict[str, Any]]) -> None:
    want = expected_stats(selected)
    p50, p95 = want.pop("p50"), want.pop("p95")
    # Rounded sums of floats added in another order (per day, per batch) may land either
    # side of a tie (an average of exactly x.x5 ms): equal to within the last rounded digit.
    for key, digit in (("avg_latency_ms", 0.1), ("cost_usd", 1e-9)):
        exact = want.pop(key)
        if exact is None:
            assert got[key] is None
        else:
            assert got[key] == pytest.approx(exact, rel=1e-9, abs=digit * 1.0001), key
    assert {k: got[k] for k in want} == want
    # Latency percentiles come from 2%-wide histogram buckets: within 1% of the exact value.
    for estimate, exact in ((got["p50_latency_ms"], p50), (got["p95_latency_ms"], p95)):
        if exact is None:
            assert estimate is None
        else:
            assert abs(estimate - exact) <= 0.01 * exact + 0.0001, (estimate, exact)


def record_overlapping_calls(db: Path) -> tuple[str, str]:
    """A stream that starts first and ends last, and a call made meanwhile: the stream is
    written (gets its rowid) after the call that started after it. Returns (stream, call)."""
    import httpx2

    from httptrack._fake import mock_transport

    transport = httptrack.TrackingTransport(mock_transport(httpx2), db=db, cache=False)
    url = "https://api.openai.com/v1/chat/completions"

    def ask(text: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": text}]

    with httpx2.Client(transport=transport, headers={"authorization": "Bearer sk-x"}) as client:
        with client.stream(
            "POST", url, json={"model": "gpt-4o-mini", "messages": ask("overlap stream"), "stream": True}
        ) as stream:
            time.sleep(0.01)  # the next call starts a few ms later
            call = client.post(url, json={"model": "gpt-4o-mini", "messages": ask("overlap call")})
            assert httptrack.flush(10)  # ... and is written while the stream is still open
            stream.read()
    assert httptrack.flush(10)
    return stream.headers["x-httptrack-call-id"], call.headers["x-httptrack-call-id"]


V2_OBJECTS = {
    "calls_fts",
    "calls_rollup",
    "calls_rollup_latency",
    "httptrack_state",
    "idx_calls_usage",
    *_views.VIEWS,
}


V3_OBJECTS = {"calls_rollup_detail", "calls_rollup_detail_latency"}
V4_OBJECTS = set(READ_INDEXES)
V5_OBJECTS = {"calls_rollup_combo"}
ALL_OBJECTS = V2_OBJECTS | V3_OBJECTS | V4_OBJECTS | V5_OBJECTS


def downgrade_to_v5(db: Path) -> None:
    """Make ``db`` what schema version 5 left: the indexes m006 drops there."""
    with transaction(db) as conn:
        conn.execute("CREATE INDEX IF NOT EXISTS idx_calls_started_at ON calls (started_at)")
        conn.execute("CREATE INDEX IF NOT EXISTS idx_calls_day ON calls (date(started_at))")
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm006_fewer_write_indexes'")
        conn.execute("PRAGMA user_version = 5")


def downgrade_to_v1(db: Path) -> None:
    """Make ``db`` what schema version 1 left: the ``calls`` table and its indexes only."""
    downgrade_to_v5(db)
    with transaction(db) as conn:
        for name, kind in conn.execute(
            f"SELECT name, type FROM sqlite_master WHERE name IN ({', '.join('?' * len(ALL_OBJECTS))})",
            sorted(ALL_OBJECTS),
        ).fetchall():
            conn.execute(f"DROP {kind.upper()} IF EXISTS {name}")
        conn.execute(
            "DELETE FROM _sqlite_migrations WHERE name IN ('m002_call_log_views', 'm003_detail_rollup', "
            "'m004_read_indexes', 'm005_combo_rollup')"
        )
        conn.execute("PRAGMA user_version = 1")


def downgrade_to_v4(db: Path) -> None:
    """Make ``db`` what schema version 4 left: no combination rollup."""
    downgrade_to_v5(db)
    with transaction(db) as conn:
        for name in sorted(V5_OBJECTS):
            conn.execute(f"DROP TABLE IF EXISTS {name}")
        conn.execute("DELETE FROM httptrack_state WHERE key = 'rollup_combo_rowid'")
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm005_combo_rollup'")
        conn.execute("PRAGMA user_version = 4")


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


SEARCH_WORDS = [
    "refund",
    "policy",
    "invoice",
    "order",
    "shipping",
    "delay",
    "summary",
    "meeting",
    "notes",
    "python",
    "error",
    "cache",
]


def write_log(path: Path, n: int = 400) -> None:
    """``n`` calls: ties in cost (many 0), NULL costs and latencies, a few providers and
    users, prompts of a few words; started_at not in the order written (long calls)."""
    rng = random.Random(23)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    index = {name: i for i, name in enumerate(COLUMN_NAMES)}
    rows = []
    for i in range(n):
        row: list[Any] = [None] * len(COLUMN_NAMES)
        started = start + timedelta(seconds=i * 60 - rng.choice([0, 0, 0, 300]))
        error = rng.random() < 0.1
        values = {
            "id": f"01K{i:023d}",
            "started_at": started.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "provider": rng.choice(["openai", "openai", "anthropic", "ollama"]),
            "model": rng.choice(["m1", "m2", "m3"]),
            "operation": "chat",
            "status": "error" if error else "success",
            "user": rng.choice(["u0", "u0", "u0", "u1", "u2", None]),
            "service": rng.choice(["a", "b"]),
            "cached": 0,
            "cost_usd": None if error else rng.choice([0.0, 0.0, 0.5, 1.0, rng.random()]),
            "latency_ms": None if rng.random() < 0.05 else rng.choice([100.0, 200.0, rng.uniform(1, 999)]),
            "total_tokens": None if error else rng.choice([10, 20, rng.randrange(1000)]),
            "request_body": json.dumps(
                {"messages": [{"role": "user", "content": " ".join(rng.choices(SEARCH_WORDS, k=6))}]}
            ),
            "response_text": " ".join(rng.choices(SEARCH_WORDS, k=4)),
        }
        for key, value in values.items():
            row[index[key]] = value
        rows.append(tuple(row))
    store = Store(path)
    for at in range(0, n, 50):
        store.write(rows[at : at + 50])
    store.catch_up()
    store.close()
