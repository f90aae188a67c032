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
from helpers import read_rows

import httptrack
from httptrack._fake import mock_transport
from httptrack.cache._store import shared_store

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
    # The database, its -wal and -shm, and the spool folder's files.
    return b"".join(p.read_bytes() for p in sorted(db.parent.glob(db.name + "*")) if p.is_file()) + b"".join(
        p.read_bytes() for p in db.parent.glob(db.name + "-spool/*") if p.is_file()
    )


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
    # The answers were stored in the cache (with their keys, made from the credential), but
    # for the last two (from the handler that sets a cookie) ...
    assert sum(1 for r in rows if r["cache_key"]) == 4
    cached = [path for path in cache_dir.rglob("*") if path.is_file()]
    assert cached
    stored = b"".join(path.read_bytes() for path in cached)
    keys = set(shared_store(cache_dir)._open().iterkeys())
    for i, row in enumerate(rows):
        assert (row["cache_key"] in keys) is (i < 2), row["provider"]
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
        "gemini-2.5-flash:generateContent?key=[redacted] with Bearer [redacted]"
    )
    assert secret_key.encode() not in all_bytes(db) and secret_token.encode() not in all_bytes(db)


# -- what is not a credential stays ------------------------------------------------------------

CHAT = "https://api.openai.com/v1/chat/completions"


def reply(content: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-kept",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 5},
        **extra,
    }


def test_fields_named_like_credentials_in_content_schemas_and_figures_are_kept(db: Path) -> None:
    """Only credentials are removed: a conversation that talks about passwords, a JSON schema
    with a ``password`` property, log-probabilities' ``token``, ``max_tokens``,
    ``prompt_cache_key``, a list's ``pageToken`` and a key's ``redacted_value`` stay."""
    content = 'Store it as {"password": "correct-horse-battery", "api_key": "sk-in-the-prompt-0123"}'
    request = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 12345,
        "prompt_cache_key": "user-cache-key-42",
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "login", "schema": {"properties": {"password": {"type": "string"}}}},
        },
    }
    logprobs = {"content": [{"token": "Hello-token-text", "logprob": -0.1, "top_logprobs": []}]}
    answer = reply(f"Sure: {content}", redacted_value="sk-...wxyz", logprobs=None)
    answer["choices"][0]["logprobs"] = logprobs

    def handler(request: Any) -> Any:
        return httpx.Response(200, json=answer)

    transport = httptrack.TrackingTransport(httpx.MockTransport(handler), db=db, cache=False)
    with httpx.Client(transport=transport) as client:
        client.post(CHAT, params={"pageToken": "page-token-000042"}, json=request,
                    headers={"authorization": "Bearer sk-the-real-key-0123456789"})  # fmt: skip
    (row,) = read_rows(db)
    for kept in (
        "correct-horse-battery",
        "sk-in-the-prompt-0123",
        "12345",
        "user-cache-key-42",
        '"password":{"type"',
    ):
        assert kept in row["request_body"], kept
    for kept in ("correct-horse-battery", "Hello-token-text", "sk-...wxyz"):
        assert kept in row["response_body"], kept
    assert row["response_text"] == f"Sure: {content}"
    assert "pageToken=page-token-000042" in row["url"]
    assert b"sk-the-real-key-0123456789" not in all_bytes(db)


def test_short_credential_fields_are_redacted_where_they_stand(db: Path) -> None:
    """A credential field too short to look for everywhere (``hunter2``) is redacted as the
    field's value, in JSON and in a form, and the same word elsewhere is left alone."""

    def handler(request: Any) -> Any:
        return httpx.Response(200, json={"access_token": "tok-abc", "note": "hunter2 and tok-abc"})

    transport = httptrack.TrackingTransport(httpx.MockTransport(handler), db=db, cache=False)
    with httpx.Client(transport=transport) as client:
        client.post(
            "https://api.anthropic.com/v1/oauth/token", json={"password": "hunter2", "hint": "hunter2"}
        )
        client.post(
            "https://api.anthropic.com/v1/oauth/token", data={"password": "hunter2", "hint": "hunter2"}
        )
    json_row, form_row = read_rows(db)
    assert json.loads(json_row["request_body"]) == {"password": "[redacted]", "hint": "hunter2"}
    assert form_row["request_body"] == "password=[redacted]&hint=hunter2"
    for row in (json_row, form_row):
        assert json.loads(row["response_body"]) == {
            "access_token": "[redacted]",
            "note": "hunter2 and tok-abc",
        }


def test_basic_auth_passwords_and_cookie_values_are_scrubbed_by_value(db: Path) -> None:
    password, session = "basic-PASSWORD-0123456789", "cookie-SESSION-0123456789"

    def handler(request: Any) -> Any:
        return httpx.Response(
            401, json={"error": {"message": f"bad password {password} for session {session}"}}
        )

    transport = httptrack.TrackingTransport(httpx.MockTransport(handler), db=db, cache=False)
    with httpx.Client(transport=transport) as client:
        client.post(
            CHAT,
            json={"model": "gpt-4o-mini"},
            auth=("alice", password),
            headers={"cookie": f"sid={session}"},
        )
    (row,) = read_rows(db)
    assert row["error_message"] == "bad password [redacted] for session [redacted]"
    data = all_bytes(db)
    assert password.encode() not in data and session.encode() not in data


def test_an_echoed_key_is_not_cached_when_bodies_are_not_stored(db: Path, tmp_path: Path) -> None:
    key = "sk-echoed-WITHOUT-bodies-0123456789"
    sent: list[Any] = []

    def handler(request: Any) -> Any:
        sent.append(request)
        return httpx.Response(200, json=reply(f"your key: {key}"))

    transport = httptrack.TrackingTransport(
        httpx.MockTransport(handler), db=db, cache_dir=tmp_path / "cache", store_bodies=False
    )
    with httpx.Client(transport=transport) as client:
        for _ in range(2):
            client.post(CHAT, json={"model": "gpt-4o-mini"}, headers={"authorization": f"Bearer {key}"})
            assert httptrack.flush(10)
    assert len(sent) == 2
    assert [r["cached"] for r in read_rows(db)] == [0, 0]
    stored = b"".join(p.read_bytes() for p in (tmp_path / "cache").rglob("*") if p.is_file())
    assert key.encode() not in stored


def test_an_error_text_quoting_another_url_loses_its_credential_parameters() -> None:
    from httptrack._redact import scrub_text

    text = "GET https://x.azure-api.net/a?subscription-key=abc123&api-version=1&X-Amz-Signature=f00 failed"
    assert scrub_text([], text) == (
        "GET https://x.azure-api.net/a?subscription-key=[redacted]&api-version=1&X-Amz-Signature=[redacted] failed"
    )
    assert scrub_text([], "max_tokens=5 and code=42") == "max_tokens=5 and code=42"


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
