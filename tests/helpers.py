"""What the tests share that is not a fixture: the provider samples, figures, fakes and
row readers. Fixtures live in conftest.py."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import httpx2
import pytest

import httptrack
from httptrack.log._bodies import COMPRESSED_COLUMNS, body_text

if TYPE_CHECKING:
    from httptrack._exchange import Exchange

#: The recorded real exchanges: ../shared/provider-samples beside the checkout (the source,
#: and where new samples arrive), else the copy kept in tests/fixtures so that a plain clone
#: runs every test too.
_SHARED_SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "provider-samples"


VENDORED_SAMPLES = Path(__file__).resolve().parent / "fixtures" / "provider-samples"


SAMPLES = _SHARED_SAMPLES if _SHARED_SAMPLES.is_dir() else VENDORED_SAMPLES


LIBS = pytest.mark.parametrize("lib", [httpx, httpx2], ids=["httpx", "httpx2"])


def genai_price(
    provider_id: str,
    model: str,
    *,
    input_tokens: int,
    output_tokens: int,
    cache_read: int = 0,
    cache_write: int = 0,
    batch: bool = False,
    at: datetime | None = None,
) -> float:
    """What genai-prices itself says a call costs (what rows are checked against), at ``at``
    (default now: prices can depend on the date and the time of day); a batch request at half
    price."""
    import genai_prices

    usage = genai_prices.Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
    )
    total = genai_prices.calc_price(
        usage, model, provider_id=provider_id, genai_request_timestamp=at
    ).total_price
    return float(total / 2 if batch else total)


#: The token figures an exchange's expected.json states (samples and provider fixtures).
FIGURES = (
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)


def split(data: bytes, size: int) -> list[bytes]:
    """Small arbitrary pieces: split mid-line, mid-event and mid-UTF-8 character."""
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


#: genai-prices' provider id for each httptrack provider (the tests' own table: the oracle
#: for rows' costs). Local Ollama, vLLM and generic hosts have no price list.
PRICED_AS = {
    "openai": "openai",
    "azure_openai": "azure",
    "anthropic": "anthropic",
    "gemini": "google",
    "vertex_ai": "google",
    "mistral": "mistral",
    "groq": "groq",
    "deepseek": "deepseek",
    "together": "together",
    "openrouter": "openrouter",
    "xai": "x-ai",
    "fireworks": "fireworks",
    "perplexity": "perplexity",
}


def check_cost(row: dict[str, Any], expected: dict[str, Any]) -> None:
    """A replayed exchange's cost: what expected.json states, else genai-prices' own figure
    for the row's usage (cache reads and writes at their prices, reasoning as output); a
    refused call with no usage 0; local Ollama 0; a model genai-prices does not know NULL,
    with the model named in the reason."""
    if "cost_usd" in expected and expected["cost_usd"] is None:  # unknown, and the row says why
        assert row["cost_usd"] is None
        assert row["cost_note"], row
        return
    if "cost_usd" in expected:
        stated = expected["cost_usd"]
        provider_id = PRICED_AS.get(expected["provider"])
        if provider_id is not None and stated and row["input_tokens"] is not None:
            # expected.json states the figure at the standard price. A price that depends on
            # the time of day (DeepSeek's off-peak hours, 16:30-00:30 UTC) is in force at the
            # row's own time: scale the stated figure by genai-prices' ratio of the two.
            started = datetime.fromisoformat(row["started_at"].replace("Z", "+00:00"))
            figures = {
                "input_tokens": row["input_tokens"],
                "output_tokens": row["output_tokens"] or 0,
                "cache_read": row["cached_input_tokens"] or 0,
                "cache_write": row["cache_write_tokens"] or 0,
            }
            try:
                then = genai_price(provider_id, expected["model"], **figures, at=started)
                standard = genai_price(
                    provider_id, expected["model"], **figures, at=started.replace(hour=12, minute=0)
                )
            except LookupError:
                pass
            else:
                if standard and then != standard:
                    stated = stated * then / standard
        assert row["cost_usd"] == pytest.approx(stated, rel=1e-12, abs=0)
        return
    if expected["status"] == "error" and row["input_tokens"] is None:
        assert row["cost_usd"] == 0
        return
    provider_id = PRICED_AS.get(expected["provider"])
    if provider_id is None:
        if expected["provider"] == "ollama" and row["host"].split(":")[0] in ("localhost", "127.0.0.1"):
            assert row["cost_usd"] == 0
        return
    try:
        price = genai_price(
            provider_id,
            expected["model"],
            input_tokens=row["input_tokens"],
            output_tokens=row["output_tokens"] or 0,
            cache_read=row["cached_input_tokens"] or 0,
            cache_write=row["cache_write_tokens"] or 0,
        )
    except LookupError:  # genai-prices does not know this model: NULL with the reason
        assert row["cost_usd"] is None
        assert expected["model"].lower() in (row["cost_note"] or "").lower(), row["cost_note"]
        return
    assert row["cost_usd"] == pytest.approx(price, rel=1e-12, abs=1e-15)


def make_exchange(**overrides: Any) -> Exchange:
    """An openai chat call's Exchange as the transport makes it at the request (nothing
    received yet), with any of its constructor's arguments overridden."""
    from httptrack._context import Attribution
    from httptrack._exchange import Exchange
    from httptrack._settings import Settings
    from httptrack.providers import provider_by_name

    options: dict[str, Any] = {
        "provider": provider_by_name("openai"),
        "operation": "chat",
        "settings": Settings(),
        "sink": None,
        "method": "POST",
        "scheme": "https",
        "host": "api.openai.com",
        "port": None,
        "path": "/v1/chat/completions",
        "query": "",
        "request_headers": [(b"content-type", b"application/json")],
        "request_body": b'{"model": "gpt-4o-mini"}',
        "attribution": Attribution(),
        "control": None,
    }
    return Exchange(**{**options, **overrides})


def read_rows(db: Path | str, where: str = "1", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Every ``calls`` row (oldest first), after flushing the writer. ``db`` may be a
    ``postgresql://`` URL (the ``log_db`` fixture): rows come back as SQLite gives them."""
    assert httptrack.flush(10)
    if isinstance(db, str):
        from httptrack._errors import LogError
        from httptrack.log._pgreader import open_reader
        from httptrack.log._url import DatabaseURL

        try:
            reader = open_reader(DatabaseURL(db))
        except LogError:  # no calls table: nothing was ever written
            return []
        try:
            return [dict(r) for r in reader.execute(f"SELECT * FROM calls WHERE {where} ORDER BY id", params)]
        finally:
            reader.close()
    if not db.exists():
        return []
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        rows = [dict(r) for r in conn.execute(f"SELECT * FROM calls WHERE {where} ORDER BY id", params)]
    finally:
        conn.close()
    return [as_text(row) for row in rows]


def as_text(row: dict[str, Any]) -> dict[str, Any]:
    """A ``calls`` row read with plain SQL, its compressed bodies (bytes) as the text they are."""
    for column in COMPRESSED_COLUMNS:
        if column in row:
            row[column] = body_text(row[column])
    return row


def one_row(db: Path | str) -> dict[str, Any]:
    rows = read_rows(db)
    assert len(rows) == 1, rows
    return rows[0]


def responder(
    lib: Any,
    body: bytes | list[bytes],
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    seen: list[Any] | None = None,
) -> Callable[[Any], Any]:
    """A MockTransport handler answering every request with ``body`` (a list = chunks)."""
    chunks = body if isinstance(body, list) else [body]

    def handler(request: Any) -> Any:
        if seen is not None:
            seen.append(request)
        return lib.Response(
            status, headers=headers or {"content-type": "application/json"}, stream=chunk_stream(lib, chunks)
        )

    return handler


class ChunkStream:
    """A response stream (sync and async) yielding fixed chunks, recording closes."""

    def __init__(self, chunks: list[bytes], fail_after: int | None = None) -> None:
        self.chunks = chunks
        self.fail_after = fail_after
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        for i, chunk in enumerate(self.chunks):
            if self.fail_after is not None and i == self.fail_after:
                raise httpx.ReadError("connection reset mid-stream")
            yield chunk

    async def __aiter__(self) -> Any:
        for chunk in self:
            yield chunk

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


def chunk_stream(lib: Any, chunks: list[bytes], fail_after: int | None = None) -> ChunkStream:
    """A ``ChunkStream`` that is also ``lib``'s sync and async byte stream type."""
    kind = type("LibChunkStream", (ChunkStream, lib.SyncByteStream, lib.AsyncByteStream), {})
    return kind(chunks, fail_after)  # type: ignore[no-any-return]


def load_sample(name: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    folder = SAMPLES / name
    return tuple(
        json.loads((folder / f).read_text()) for f in ("request.json", "response.json", "expected.json")
    )  # type: ignore[return-value]


def sample_names() -> list[str]:
    return sorted(p.name for p in SAMPLES.iterdir() if (p / "expected.json").exists())


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return pieces
