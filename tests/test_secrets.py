"""No credential, in any header or query parameter, is ever written to the database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
from conftest import read_rows

import httptrack
from httptrack._fake import mock_transport

SECRETS = {
    "openai": "sk-proj-SECRETopenaiKEY0123456789",
    "anthropic": "sk-ant-SECRETanthropicKEY0123456789",
    "azure": "SECRETazureKEY0123456789abcdef",
    "google_header": "AIzaSECRETgoogleHEADERkey012345",
    "google_query": "AIzaSECRETgoogleQUERYkey0123456",
    "cookie": "session=SECRETcookieVALUE0123456789",
    "set_cookie": "SECRETsetCOOKIE0123456789",
    "custom": "SECRETcustomTOKEN0123456789",
}


def all_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


def test_no_credential_reaches_the_database_or_the_cache(db: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    transport = httptrack.TrackingTransport(mock_transport(httpx2), db=db, cache_dir=cache_dir)
    oai = openai.OpenAI(api_key=SECRETS["openai"], http_client=httpx2.Client(transport=transport))
    oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    ant = anthropic.Anthropic(api_key=SECRETS["anthropic"], http_client=httpx2.Client(transport=transport))
    ant.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}])

    def gemini(request: Any) -> Any:
        body = {
            "candidates": [{"content": {"parts": [{"text": "hi"}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 1},
            "modelVersion": "gemini-2.5-flash",
        }
        return httpx.Response(200, json=body, headers={"set-cookie": f"NID={SECRETS['set_cookie']}; Path=/"})

    with httpx.Client(
        transport=httptrack.TrackingTransport(httpx.MockTransport(gemini), db=db, cache_dir=cache_dir)
    ) as c:
        url = "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
        c.post(
            url,
            params={"key": SECRETS["google_query"]},
            json={"contents": [{"parts": [{"text": "hi"}]}]},
            headers={
                "x-goog-api-key": SECRETS["google_header"],
                "cookie": SECRETS["cookie"],
                "x-custom-auth-token": SECRETS["custom"],
            },
        )
        c.post(
            "https://api.openai.com/v1/chat/completions",
            json={"model": "gpt-4o"},
            headers={"api-key": SECRETS["azure"]},
        )
    rows = read_rows(db)
    assert len(rows) == 4
    data = all_bytes(db)
    for name, secret in SECRETS.items():
        assert secret.encode() not in data, name
    # Every answer was stored in the cache (with its key, made from the credential) ...
    assert sum(1 for r in rows if r["cache_key"]) == 4
    cached = [path for path in cache_dir.rglob("*") if path.is_file()]
    assert cached
    stored = b"".join(path.read_bytes() for path in cached)
    for row in rows:
        assert row["response_body"].encode() in stored, row["provider"]
    # ... and no credential is anywhere in the cache folder.
    for name, secret in SECRETS.items():
        assert secret.encode() not in stored, name
    gemini_row = rows[2]
    assert gemini_row["url"].endswith("?key=%5Bredacted%5D") or "key=[redacted]" in gemini_row["url"]
    headers = json.loads(gemini_row["request_headers"])
    assert headers["x-goog-api-key"] == "[redacted]"
    assert headers["cookie"] == "[redacted]"
    assert json.loads(gemini_row["response_headers"])["set-cookie"] == "[redacted]"
    assert json.loads(rows[0]["request_headers"])["authorization"] == "[redacted]"
    ant_headers = json.loads(
        rows[1]["request_headers"]
    )  # this SDK version sends Authorization, older x-api-key
    assert ant_headers.get("x-api-key", ant_headers.get("authorization")) == "[redacted]"


def test_no_credential_reaches_a_log_line_or_an_error_message(tmp_path: Path, caplog: Any) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    blocked = tmp_path / "a-file"
    blocked.write_text("a file where folders should be")
    secret_key, secret_token = "AIzaSECRETinQUERY0123456789", "sk-SECRETinHEADER0123456789"

    def broken(request: Any) -> Any:  # a payload no parser understands
        return httpx.Response(200, headers={"content-type": "application/json"}, content=b"{not json")

    url = "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    transport = httptrack.TrackingTransport(httpx.MockTransport(broken), db=blocked / "calls.db",
                                            cache_dir=blocked / "cache")  # fmt: skip
    with httpx.Client(transport=transport) as client:
        for _ in range(2):
            client.post(url, params={"key": secret_key}, headers={"authorization": f"Bearer {secret_token}"},
                        json={"contents": []})  # fmt: skip
    httptrack.flush(5)
    replaying = httptrack.TrackingTransport(httpx.MockTransport(broken), db=tmp_path / "ok.db", cache="replay",
                                            cache_dir=tmp_path / "cache")  # fmt: skip
    with httpx.Client(transport=replaying) as client:
        try:
            client.post(url, params={"key": secret_key}, headers={"authorization": f"Bearer {secret_token}"},
                        json={"contents": []})  # fmt: skip
        except httptrack.CacheMiss as miss:
            message = str(miss)
        else:  # pragma: no cover
            raise AssertionError("replay mode sent a request")
    httptrack.flush(5)
    ours = [r for r in caplog.records if r.name.startswith("httptrack")]
    assert ours, "the faults above should have been logged"
    text = "\n".join(r.getMessage() + (str(r.exc_info[1]) if r.exc_info else "") for r in ours) + message
    assert "generativelanguage.googleapis.com" in message
    for secret in (secret_key, secret_token):
        assert secret not in text


def test_no_credential_reaches_the_error_message_of_a_failed_call(db: Path) -> None:
    """An exception's words may quote the URL (``key=``) or a header: the row's
    ``error_message`` has neither, while the app gets the exception as it was raised."""
    secret_key, secret_token = "AIzaSECRETinQUERY0123456789", "sk-SECRETinHEADER0123456789"

    def refuse(request: Any) -> Any:
        raise httpx.ConnectError(f"cannot reach {request.url} with {request.headers['authorization']}")

    url = "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    transport = httptrack.TrackingTransport(httpx.MockTransport(refuse), db=db, cache=False)
    with httpx.Client(transport=transport) as client:
        try:
            client.post(url, params={"key": secret_key}, headers={"authorization": f"Bearer {secret_token}"})
        except httpx.ConnectError as exc:
            raised = str(exc)
    assert secret_key in raised and secret_token in raised  # the app's own error, unchanged
    (row,) = read_rows(db)
    assert row["error_code"] == "httpx.ConnectError"
    assert row["error_message"] == (
        "cannot reach https://generativelanguage.googleapis.com/v1beta/models/"
        "gemini-2.5-flash:generateContent?key=[redacted] with [redacted]"
    )
    assert secret_key.encode() not in all_bytes(db) and secret_token.encode() not in all_bytes(db)


def test_rate_limit_figures_are_kept_not_redacted(db: Path) -> None:
    """``x-ratelimit-remaining-tokens`` is a count of tokens, not a credential: a person
    reading a 429 needs it."""
    limits = {
        "x-ratelimit-limit-tokens": "30000",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "6s",
        "x-ratelimit-remaining-requests": "499",
        "anthropic-ratelimit-input-tokens-remaining": "0",
        "retry-after": "6",
    }

    def limited(request: Any) -> Any:
        body = {"error": {"message": "Rate limit reached", "type": "tokens", "code": "rate_limit_exceeded"}}
        return httpx2.Response(429, json=body, headers={**limits, "x-session-token": SECRETS["custom"]})

    transport = httptrack.TrackingTransport(httpx2.MockTransport(limited), db=db, cache=False)
    client = openai.OpenAI(
        api_key=SECRETS["openai"], http_client=httpx2.Client(transport=transport), max_retries=0
    )
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    (row,) = read_rows(db)
    headers = json.loads(row["response_headers"])
    assert {name: headers[name] for name in limits} == limits
    assert headers["x-session-token"] == "[redacted]"  # a token that is a credential still is
    assert SECRETS["custom"].encode() not in all_bytes(db)
