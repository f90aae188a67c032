"""Every recorded real exchange in ../shared/provider-samples, replayed through httpx and
httpx2, sync and async: the app gets the recorded bytes unchanged, chunk for chunk, and
the row holds the exact normalized figures of the sample's expected.json."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from helpers import FIGURES, check_cost, chunk_stream, load_sample, one_row, sample_names, split

import httptrack


def handler_for(lib: Any, response: dict[str, Any], chunks: list[bytes]) -> Any:
    def handler(request: Any) -> Any:
        return lib.Response(response["status"], headers=response["headers"], stream=chunk_stream(lib, chunks))

    return handler


def check_replay(
    db: Path,
    reply: Any,
    received: list[bytes],
    chunks: list[bytes],
    response: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    """The app got the recorded bytes chunk for chunk, and the one row holds the sample's
    figures, the body as received, the status and the call id the app was given."""
    assert reply.status_code == response["status"]
    assert received == [c for c in chunks if c]
    assert b"".join(received) == response["body_text"].encode()
    row = one_row(db)
    check_row(row, expected)
    assert row["id"] == reply.headers["x-httptrack-call-id"]
    assert row["response_body"] == response["body_text"]
    assert row["http_status"] == response["status"]
    check_cost(row, expected)


def check_row(row: dict[str, Any], expected: dict[str, Any]) -> None:
    assert row["provider"] == expected["provider"]
    assert row["operation"] == expected["operation"]
    # expected.json names the model the provider answered with when it says one, else the
    # model requested: that is `response_model`, falling back to `model`.
    assert (row["response_model"] or row["model"]) == expected["model"]
    assert bool(row["stream"]) is expected["stream"]
    assert row["status"] == expected["status"]
    assert row["error_code"] == expected["error_code"]
    if all(expected[f] is None for f in FIGURES) and row["tokens_estimated"] == 1:
        # The sample carries no usage: a local count, flagged, is the right answer.
        assert row["input_tokens"] > 0 and row["output_tokens"] > 0
        assert row["total_tokens"] == row["input_tokens"] + row["output_tokens"]
        return
    for figure in FIGURES:
        assert row[figure] == expected[figure], figure
    assert row["tokens_estimated"] == 0


@pytest.mark.parametrize("name", sample_names())
@pytest.mark.parametrize("lib", [httpx, httpx2], ids=["httpx", "httpx2"])
@pytest.mark.parametrize("piece", [7, 4096])
def test_sample_sync(name: str, lib: Any, piece: int, db: Path) -> None:
    request, response, expected = load_sample(name)
    body = response["body_text"].encode()
    chunks = split(body, piece)
    transport = httptrack.TrackingTransport(
        lib.MockTransport(handler_for(lib, response, chunks)), db=db, cache=False, include_usage=False
    )
    with lib.Client(transport=transport) as client:
        sent = client.build_request(
            request["method"], request["url"], headers=request["headers"], content=json.dumps(request["body"])
        )
        reply = client.send(sent, stream=True)
        try:
            received = list(reply.iter_raw())
        finally:
            reply.close()
    check_replay(db, reply, received, chunks, response, expected)


@pytest.mark.parametrize("name", sample_names())
@pytest.mark.parametrize("lib", [httpx, httpx2], ids=["httpx", "httpx2"])
def test_sample_async(name: str, lib: Any, db: Path) -> None:
    request, response, expected = load_sample(name)
    body = response["body_text"].encode()
    chunks = split(body, 13)

    async def run() -> tuple[Any, list[bytes]]:
        inner = lib.MockTransport(handler_for(lib, response, chunks))
        transport = httptrack.AsyncTrackingTransport(inner, db=db, cache=False, include_usage=False)
        async with lib.AsyncClient(transport=transport) as client:
            sent = client.build_request(
                request["method"],
                request["url"],
                headers=request["headers"],
                content=json.dumps(request["body"]),
            )
            reply = await client.send(sent, stream=True)
            try:
                return reply, [chunk async for chunk in reply.aiter_raw()]
            finally:
                await reply.aclose()

    reply, received = asyncio.run(run())
    check_replay(db, reply, received, chunks, response, expected)
