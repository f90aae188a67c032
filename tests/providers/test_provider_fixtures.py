"""Every exchange under tests/fixtures/providers/<provider>/<name>/ replayed through httpx and
httpx2, sync and async, in small arbitrary pieces (split mid-line and mid-UTF-8): the app gets
the bytes unchanged and the row holds the exact figures of expected.json.

The fixtures are real recordings (go-vcr cassettes of public projects, curl transcripts) or
exchanges written from each provider's API reference; each expected.json says which in
``source``. Replays run with ``include_usage=False``: a recorded exchange is replayed as it
was sent, never rewritten.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from helpers import FIGURES, check_cost, chunk_stream, one_row, split

import httptrack

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "providers"


def fixture_names() -> list[str]:
    return sorted(str(p.parent.relative_to(FIXTURES)) for p in FIXTURES.glob("*/*/expected.json"))


def load(name: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    folder = FIXTURES / name
    request, response, expected = (
        json.loads((folder / f).read_text()) for f in ("request.json", "response.json", "expected.json")
    )
    return request, response, expected


def request_content(request: dict[str, Any]) -> bytes | None:
    if "body_text" in request:
        return str(request["body_text"]).encode()
    if request.get("body") is None:
        return None
    return json.dumps(request["body"]).encode()


def check_row(row: dict[str, Any], expected: dict[str, Any]) -> None:
    assert row["provider"] == expected["provider"]
    assert row["operation"] == expected["operation"]
    assert (row["response_model"] or row["model"]) == expected["model"]
    assert bool(row["stream"]) is expected["stream"]
    assert (row["status"], row["error_code"]) == (expected["status"], expected["error_code"])
    if expected.get("tokens_estimated"):
        # No (complete) usage in the payload: what it did report is kept, the rest counted
        # locally, and the row says so.
        assert row["tokens_estimated"] == 1
        for figure in FIGURES[:2]:
            if expected[figure] is not None:
                assert row[figure] == expected[figure], figure
        assert row["input_tokens"] > 0
        assert row["total_tokens"] == row["input_tokens"] + (row["output_tokens"] or 0)
    else:
        for figure in FIGURES:
            assert row[figure] == expected[figure], figure
        assert row["tokens_estimated"] == 0
    check_cost(row, expected)
    if "endpoint" in expected:
        assert row["endpoint"] == expected["endpoint"]


def transport_for(
    lib: Any,
    request: dict[str, Any],
    response: dict[str, Any],
    chunks: list[bytes],
    db: Path,
    asynchronous: bool = False,
) -> Any:
    def handler(sent: Any) -> Any:
        return lib.Response(response["status"], headers=response["headers"], stream=chunk_stream(lib, chunks))

    options = {"db": db, "cache": False, "include_usage": False, "hosts": request.get("hosts") or None}
    shell = httptrack.AsyncTrackingTransport if asynchronous else httptrack.TrackingTransport
    return shell(lib.MockTransport(handler), **options)


@pytest.mark.parametrize("name", fixture_names())
@pytest.mark.parametrize("lib", [httpx, httpx2], ids=["httpx", "httpx2"])
@pytest.mark.parametrize("piece", [5, 4096])
def test_fixture_sync(name: str, lib: Any, piece: int, db: Path) -> None:
    request, response, expected = load(name)
    body = response["body_text"].encode()
    chunks = split(body, piece)
    with lib.Client(transport=transport_for(lib, request, response, chunks, db)) as client:
        sent = client.build_request(
            request["method"], request["url"], headers=request["headers"], content=request_content(request)
        )
        reply = client.send(sent, stream=True)
        try:
            received = list(reply.iter_raw())
        finally:
            reply.close()
    assert received == [c for c in chunks if c]
    row = one_row(db)
    check_row(row, expected)
    assert row["response_body"] == response["body_text"]


@pytest.mark.parametrize("name", fixture_names())
@pytest.mark.parametrize("lib", [httpx, httpx2], ids=["httpx", "httpx2"])
def test_fixture_async(name: str, lib: Any, db: Path) -> None:
    request, response, expected = load(name)
    body = response["body_text"].encode()
    chunks = split(body, 11)

    async def run() -> bytes:
        transport = transport_for(lib, request, response, chunks, db, asynchronous=True)
        async with lib.AsyncClient(transport=transport) as client:
            sent = client.build_request(
                request["method"],
                request["url"],
                headers=request["headers"],
                content=request_content(request),
            )
            reply = await client.send(sent, stream=True)
            try:
                return b"".join([chunk async for chunk in reply.aiter_raw()])
            finally:
                await reply.aclose()

    assert asyncio.run(run()) == body
    check_row(one_row(db), expected)


def test_every_provider_family_has_fixtures() -> None:
    families = {name.split("/")[0] for name in fixture_names()}
    assert families >= {
        "openai",
        "azure_openai",
        "anthropic",
        "ollama",
        "gemini",
        "vertex_ai",
        "mistral",
        "groq",
        "deepseek",
        "together",
        "openrouter",
        "xai",
        "fireworks",
        "perplexity",
        "generic",
        "cohere",
        "cerebras",
        "zai",
        "huggingface",
        "openai_compatible",
        "anthropic_compatible",
        "gemini_compatible",
        "cohere_compatible",
    }
    for name in fixture_names():
        assert load(name)[2]["source"], name
