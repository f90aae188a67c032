"""Secret probes (issue 14): every credential a call carried or minted, searched for byte by
byte in everything httptrack writes: the database with its ``-wal`` and ``-shm`` (every file
in the log's folder), every file of the cache folder, ``httptrack export`` (JSON lines and
CSV) and ``httptrack show --json``.

Each probe drives a real SDK over an in-memory transport with credentials of its own. A
credential is ``<prefix><core><tail>``: the core (letters and digits, the same in every
encoding) is what is searched for, so a value stored raw, URL-encoded or JSON-escaped (or
cut down to its middle) is found; the tail (``+``, ``/``, ``=``) makes those encodings
differ, so a scrubber that knows only the raw value misses them. Each probe also checks
that what should be stored is (a test that finds nothing because nothing was written proves
nothing), and that the app got every byte and every error as the provider sent it.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sqlite3
import stat
import textwrap
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus

import anthropic
import groq
import httpx
import httpx2
import openai
import pytest
from anthropic.lib.credentials import InMemoryConfig, WorkloadIdentityCredentials
from autoload_helpers import child_env, find_hook, run_python
from click.testing import CliRunner
from helpers import as_text

import httptrack
from httptrack.cli import main as cli
from httptrack.log import _bodies

Handler = Callable[[Any], Any]
FORM = "application/x-www-form-urlencoded"
CHAT = [{"role": "user", "content": "Which key do I use?"}]


def credential(tag: str, prefix: str = "sk-") -> str:
    """A fake credential no other probe uses: ``prefix`` + a core of letters and digits
    (``tag`` and 12 random hex digits) + a tail whose encodings differ from it."""
    return f"{prefix}{core_of(tag)}+x/y="


def core_of(tag: str) -> str:
    return f"PROBE{tag}{_run_token}"


_run_token = secrets.token_hex(6)


def forms(value: str) -> set[bytes]:
    """The ways a credential may be written: raw, URL-encoded (both styles), JSON-escaped
    (Python's and with ``\\/``), and its core alone (which each of them contains)."""
    core = value[value.index("PROBE") :].split("+")[0] if "PROBE" in value else value
    texts = {
        value,
        quote(value, safe=""),
        quote_plus(value),
        json.dumps(value)[1:-1],
        json.dumps(value)[1:-1].replace("/", "\\/"),
        core,
    }
    return {t.encode() for t in texts}


class Probe:
    """Where one probe's tracked calls are written, and the search through all of it."""

    def __init__(self, tmp_path: Path) -> None:
        self.log_dir = tmp_path / "log"
        self.db = self.log_dir / "calls.db"
        self.cache_dir = tmp_path / "cache"

    def transport(self, lib: Any, handler: Handler, **options: Any) -> Any:
        return httptrack.TrackingTransport(
            lib.MockTransport(handler), db=self.db, cache_dir=self.cache_dir, **options
        )

    def client(self, lib: Any, handler: Handler, **options: Any) -> Any:
        return lib.Client(transport=self.transport(lib, handler, **options))

    def rows(self) -> list[dict[str, Any]]:
        assert httptrack.flush(10)
        conn = sqlite3.connect(self.db)
        conn.row_factory = sqlite3.Row
        try:
            return [as_text(dict(r)) for r in conn.execute("SELECT * FROM calls ORDER BY id")]
        finally:
            conn.close()

    def places(self) -> dict[str, bytes]:
        """Everything httptrack wrote, by where: each file of the log's folder and of the
        cache folder, the exports, and ``show --json`` of each call."""
        ids = [row["id"] for row in self.rows()]
        assert ids, "no call was recorded"
        found: dict[str, bytes] = {}
        for folder in (self.log_dir, self.cache_dir):
            if folder.exists():
                for path in sorted(folder.rglob("*")):
                    if path.is_file():
                        found[str(path.relative_to(folder.parent))] = path.read_bytes()
        for fmt in ("jsonl", "csv"):
            found[f"export --format {fmt}"] = run_cli("export", "--format", fmt, "--db", self.db)
        for call_id in ids:
            found[f"show {call_id} --json"] = run_cli("show", call_id, "--json", "--headers", "--db", self.db)
        return found

    def check(self, credentials: Iterable[str], *, stored: Iterable[str] = ()) -> None:
        """No form of any credential anywhere; each of ``stored`` somewhere in the database
        and in both exports (what should be kept was kept, and searched)."""
        places = self.places()
        database = b"".join(data for where, data in places.items() if where.startswith("log/"))
        for text in stored:
            assert text.encode() in database, f"{text!r} is not in the database"
            for fmt in ("jsonl", "csv"):
                assert text.encode() in places[f"export --format {fmt}"], f"{text!r} is not exported as {fmt}"
        leaks = [
            f"{value!r} as {form.decode()!r} in {where}"
            for value in credentials
            for form in sorted(forms(value))
            for where, data in places.items()
            if form in data
        ]
        assert not leaks, "credentials were stored:\n" + "\n".join(leaks)


def run_cli(*args: Any) -> bytes:
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout_bytes


@pytest.fixture
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Probe:
    # Bodies as plain text in the database file, so that searching its bytes finds any
    # credential in them (compressed, it would not be there to find).
    monkeypatch.setattr(_bodies, "COMPRESS_MIN_BYTES", 1 << 40)
    return Probe(tmp_path)


def json_response(
    lib: Any, status: int, body: Any, *, slashes: bool = False, headers: dict[str, str] | None = None
) -> Any:
    """A JSON response; ``slashes``: written as some servers do, every ``/`` as ``\\/``."""
    text = json.dumps(body)
    if slashes:
        text = text.replace("/", "\\/")
    return lib.Response(
        status, headers={"content-type": "application/json", **(headers or {})}, content=text.encode()
    )


def sse_response(lib: Any, events: list[str]) -> Any:
    return lib.Response(200, headers={"content-type": "text/event-stream"}, content="".join(events).encode())


def chat_completion(content: str, model: str = "gpt-4o-mini") -> dict[str, Any]:
    return {
        "id": "chatcmpl-probe",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14},
    }


def anthropic_message(text: str) -> dict[str, Any]:
    return {
        "id": "msg_probe",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 9, "output_tokens": 5},
    }


def bearer(request: Any) -> str:
    return str(request.headers.get("authorization", "")).removeprefix("Bearer ")


# -- a key echoed in an error ------------------------------------------------------------------


def incorrect_key(key: str) -> dict[str, Any]:
    """OpenAI's answer to a wrong key, which quotes it."""
    return {
        "error": {
            "message": f"Incorrect API key provided: {key}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }


def test_a_key_echoed_in_an_openai_401_body(probe: Probe) -> None:
    key = credential("oai401")
    client = openai.OpenAI(
        api_key=key,
        max_retries=0,
        http_client=probe.client(
            httpx2, lambda r: json_response(httpx2, 401, incorrect_key(bearer(r)), slashes=True)
        ),
    )
    with pytest.raises(openai.AuthenticationError) as raised:
        client.chat.completions.create(model="gpt-4o-mini", messages=CHAT)  # type: ignore[arg-type]
    assert key in str(raised.value)  # the app's error, as the provider sent it
    (row,) = probe.rows()
    assert row["http_status"] == 401 and row["error_code"] == "invalid_api_key"
    probe.check([key], stored=["Incorrect API key provided", "platform.openai.com"])


def test_a_key_echoed_in_an_anthropic_401_body(probe: Probe) -> None:
    key = credential("ant401", "sk-ant-api03-")

    def reject(request: Any) -> Any:
        sent = request.headers.get("x-api-key") or bearer(request)
        error = {"type": "authentication_error", "message": f"invalid x-api-key: {sent}"}
        return json_response(httpx2, 401, {"type": "error", "error": error})

    client = anthropic.Anthropic(api_key=key, max_retries=0, http_client=probe.client(httpx2, reject))
    with pytest.raises(anthropic.AuthenticationError) as raised:
        client.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=CHAT)  # type: ignore[arg-type]
    assert key in str(raised.value)
    (row,) = probe.rows()
    assert row["http_status"] == 401
    probe.check([key], stored=["invalid x-api-key", "authentication_error"])


def test_a_key_echoed_in_a_groq_401_body_over_httpx(probe: Probe) -> None:
    key = credential("groq401", "gsk_")
    client = groq.Groq(
        api_key=key,
        max_retries=0,
        http_client=probe.client(httpx, lambda r: json_response(httpx, 401, incorrect_key(bearer(r)))),
    )
    with pytest.raises(groq.AuthenticationError):
        client.chat.completions.create(model="llama-3.1-8b-instant", messages=CHAT)  # type: ignore[arg-type]
    (row,) = probe.rows()
    assert row["provider"] == "groq" and row["http_status"] == 401
    probe.check([key], stored=["Incorrect API key provided"])


def test_a_key_echoed_in_an_openai_sse_error_event(probe: Probe) -> None:
    key = credential("oaisse")

    def stream(request: Any) -> Any:
        first = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
                 "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]}  # fmt: skip
        return sse_response(
            httpx2,
            [f"data: {json.dumps(first)}\n\n", f"data: {json.dumps(incorrect_key(bearer(request)))}\n\n"],
        )

    client = openai.OpenAI(api_key=key, max_retries=0, http_client=probe.client(httpx2, stream))
    with pytest.raises(openai.APIError) as raised:
        for _ in client.chat.completions.create(model="gpt-4o-mini", messages=CHAT, stream=True):  # type: ignore[arg-type]
            pass
    assert key in str(raised.value)
    (row,) = probe.rows()
    assert row["status"] == "error" and row["stream"] == 1
    probe.check([key], stored=["Incorrect API key provided", "Hel"])


def test_a_key_echoed_in_an_anthropic_sse_error_event(probe: Probe) -> None:
    key = credential("antsse", "sk-ant-api03-")

    def stream(request: Any) -> Any:
        sent = request.headers.get("x-api-key") or bearer(request)
        start = {"type": "message_start", "message": {**anthropic_message(""), "content": []}}
        error = {
            "type": "error",
            "error": {"type": "authentication_error", "message": f"key {sent} was revoked"},
        }
        return sse_response(
            httpx2,
            [
                f"event: message_start\ndata: {json.dumps(start)}\n\n",
                f"event: error\ndata: {json.dumps(error)}\n\n",
            ],
        )

    client = anthropic.Anthropic(api_key=key, max_retries=0, http_client=probe.client(httpx2, stream))
    with pytest.raises(anthropic.APIStatusError):
        with client.messages.stream(model="claude-haiku-4-5", max_tokens=10, messages=CHAT) as events:  # type: ignore[arg-type]
            for _ in events:
                pass
    (row,) = probe.rows()
    assert row["status"] == "error"
    probe.check([key], stored=["was revoked", "authentication_error"])


# -- keys sent in other places -----------------------------------------------------------------


def test_keys_sent_inside_the_request_json(probe: Probe) -> None:
    """Gateways take the upstream provider's key in the body: ``api_key``, ``apiKey``, or a
    nested provider block. The rest of the request (the messages) is kept."""
    keys = [credential("bodysnake"), credential("bodycamel"), credential("bodynested", "sk-ant-")]
    seen: list[Any] = []

    def answer(request: Any) -> Any:
        seen.append(json.loads(request.read()))
        return json_response(httpx2, 200, chat_completion("Use the gateway."))

    client = openai.OpenAI(api_key=credential("bodyheader"), http_client=probe.client(httpx2, answer))
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=CHAT,  # type: ignore[arg-type]
        extra_body={
            "api_key": keys[0],
            "apiKey": keys[1],
            "provider": {"name": "anthropic", "api_key": keys[2]},
        },
    )
    assert seen[0]["api_key"] == keys[0]  # sent as the app asked
    (row,) = probe.rows()
    assert row["status"] == "success"
    probe.check(keys, stored=["Which key do I use?", "Use the gateway."])


def test_a_body_key_echoed_in_the_answer_is_scrubbed_by_value(probe: Probe) -> None:
    key = credential("bodyecho")

    def reject(request: Any) -> Any:
        sent = json.loads(request.read())["api_key"]
        return json_response(
            httpx2, 401, {"error": {"message": f"upstream refused {sent}", "code": "bad_key"}}
        )

    client = openai.OpenAI(api_key="sk-gateway", max_retries=0, http_client=probe.client(httpx2, reject))
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt-4o-mini", messages=CHAT, extra_body={"api_key": key})  # type: ignore[arg-type]
    probe.check([key], stored=["upstream refused"])


def test_keys_in_custom_headers_echoed_back(probe: Probe) -> None:
    keys = {
        "x-gateway-token": credential("hdrtoken"),
        "x-portkey-api-key": credential("hdrportkey"),
        "x-team-secret": credential("hdrsecret"),
    }

    def echo(request: Any) -> Any:
        said = ", ".join(f"{name}={request.headers[name]}" for name in keys)
        return json_response(httpx2, 403, {"error": {"message": f"forbidden with {said}", "code": "forbidden"}},
                             headers={"x-debug-echo": said})  # fmt: skip

    client = openai.OpenAI(api_key="sk-x", max_retries=0, http_client=probe.client(httpx2, echo))
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="gpt-4o-mini", messages=CHAT, extra_headers=keys)  # type: ignore[arg-type]
    probe.check(keys.values(), stored=["forbidden with x-gateway-token="])


def test_azure_query_keys_in_the_url_exports_and_cache(probe: Probe) -> None:
    """Azure API Management takes ``?subscription-key=``; some deployments ``?api-key=``.
    The answer is cached (so the cache's own record of the request is searched too)."""
    header_key, subscription_key, query_key = credential("azhdr"), credential("azsub"), credential("azquery")
    sent: list[Any] = []

    def answer(request: Any) -> Any:
        sent.append(request)
        return json_response(httpx2, 200, chat_completion("Paris.", "gpt-4o"))

    client = openai.AzureOpenAI(
        api_key=header_key,
        azure_endpoint="https://probe.openai.azure.com",
        api_version="2024-10-21",
        default_query={"subscription-key": subscription_key},
        http_client=probe.client(httpx2, answer),
    )
    for _ in range(2):
        reply = client.chat.completions.create(
            model="gpt-4o",
            messages=CHAT,  # type: ignore[arg-type]
            extra_query={"api-key": query_key},
        )
        assert reply.choices[0].message.content == "Paris."
        assert httptrack.flush(10)  # the writer stores the answer in the cache
    assert dict(parse_qsl(sent[0].url.query.decode()))["subscription-key"] == subscription_key
    assert len(sent) == 1, "the second call should have been served from the cache"
    rows = probe.rows()
    assert [r["cached"] for r in rows] == [0, 1]
    assert "subscription-key=" in rows[0]["url"] and "api-version=2024-10-21" in rows[0]["url"]
    probe.check([header_key, subscription_key, query_key], stored=["Paris.", "probe.openai.azure.com"])


@pytest.mark.parametrize(
    "name",
    ["subscription-key", "Subscription-Key", "subscription_key", "x-api-key", "apikey", "client_secret"],
)
def test_secret_query_names_are_redacted(probe: Probe, name: str) -> None:
    value = credential("qname" + "".join(c for c in name if c.isalnum()))
    with probe.client(httpx, lambda r: json_response(httpx, 200, chat_completion("ok"))) as client:
        client.post(
            "https://api.openai.com/v1/chat/completions",
            params={name: value, "api-version": "1"},
            json={"model": "gpt-4o-mini", "messages": CHAT},
        )
    (row,) = probe.rows()
    assert "api-version=1" in row["url"]
    probe.check([value], stored=["api-version=1"])


def test_an_answer_echoing_the_key_is_not_served_with_it_and_stored_without_it(probe: Probe) -> None:
    """A 200 whose text quotes the key: the app gets it as sent, every time; the log keeps
    the rest of the answer; the cache serves it scrubbed (changing the answer) never, and
    with the key never."""
    key = credential("echo200")
    sent: list[Any] = []

    def echo(request: Any) -> Any:
        sent.append(request)
        return json_response(httpx2, 200, chat_completion(f"Your key is {bearer(request)}, keep it safe."))

    client = openai.OpenAI(api_key=key, http_client=probe.client(httpx2, echo))
    for _ in range(2):
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=CHAT)  # type: ignore[arg-type]
        assert reply.choices[0].message.content == f"Your key is {key}, keep it safe."
        assert httptrack.flush(10)
    rows = probe.rows()
    assert all(r["status"] == "success" for r in rows)
    probe.check([key], stored=["Your key is ", ", keep it safe.", "Which key do I use?"])


# -- credential-minting endpoints --------------------------------------------------------------


def test_anthropic_federation_token_exchange(probe: Probe) -> None:
    """``POST /v1/oauth/token`` (jwt-bearer): the request's ``assertion``, the minted
    ``access_token`` (then sent as ``Authorization: Bearer``) and ``refresh_token``."""
    assertion = credential("jwtassert", "eyJhbGciOiJSUzI1NiJ9.")
    access, refresh = credential("fedaccess", "sk-ant-oat01-"), credential("fedrefresh", "sk-ant-ort01-")

    def api(request: Any) -> Any:
        if request.url.path == "/v1/oauth/token":
            assert json.loads(request.read())["assertion"] == assertion
            return json_response(httpx2, 200, {"access_token": access, "token_type": "Bearer", "expires_in": 600,
                                               "refresh_token": refresh, "scope": "user:inference"})  # fmt: skip
        assert bearer(request) == access
        return json_response(httpx2, 200, anthropic_message("Federated hello."))

    http = probe.client(httpx2, api)
    credentials = WorkloadIdentityCredentials(
        identity_token_provider=lambda: assertion,
        federation_rule_id="fdrl_probe",
        organization_id="00000000-0000-4000-8000-000000000000",
        http_client=http,
    )
    client = anthropic.Anthropic(credentials=credentials, http_client=http)
    message = client.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=CHAT)  # type: ignore[arg-type]
    assert message.content[0].text == "Federated hello."  # type: ignore[union-attr]
    rows = probe.rows()
    assert [r["endpoint"] for r in rows] == ["/v1/oauth/token", "/v1/messages"]
    probe.check([assertion, access, refresh], stored=["fdrl_probe", "user:inference", "Federated hello."])


def test_anthropic_refresh_token_grant(probe: Probe, tmp_path: Path) -> None:
    old_refresh = credential("oldrefresh", "sk-ant-ort01-")
    new_access, new_refresh = (
        credential("newaccess", "sk-ant-oat01-"),
        credential("newrefresh", "sk-ant-ort01-"),
    )
    id_token = credential("idtoken", "eyJraWQiOiJwcm9iZSJ9.")
    stored_creds = tmp_path / "credentials.json"
    stored_creds.write_text(json.dumps({"access_token": "sk-ant-oat01-expired", "expires_at": 1,
                                        "refresh_token": old_refresh}))  # fmt: skip
    stored_creds.chmod(0o600)

    def api(request: Any) -> Any:
        if request.url.path == "/v1/oauth/token":
            assert json.loads(request.read())["refresh_token"] == old_refresh
            return json_response(httpx2, 200, {"access_token": new_access, "refresh_token": new_refresh,
                                               "id_token": id_token, "expires_in": 3600, "token_type": "Bearer"})  # fmt: skip
        assert bearer(request) == new_access
        return json_response(httpx2, 200, anthropic_message("Refreshed hello."))

    http = probe.client(httpx2, api)
    config = {
        "authentication": {
            "type": "user_oauth",
            "client_id": "probe-client",
            "credentials_path": str(stored_creds),
        }
    }
    credentials = InMemoryConfig(config, http_client=http)
    client = anthropic.Anthropic(credentials=credentials, http_client=http)
    client.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=CHAT)  # type: ignore[arg-type]
    assert len(probe.rows()) == 2
    probe.check([old_refresh, new_access, new_refresh, id_token], stored=["probe-client", "Refreshed hello."])


@pytest.mark.parametrize("encoding", ["json", "form"])
def test_an_oauth_client_credentials_grant(probe: Probe, encoding: str) -> None:
    """The standard OAuth shapes: ``client_secret`` (and ``client_assertion``, ``password``)
    sent as JSON or as a form; ``access_token``, ``refresh_token``, ``id_token`` returned."""
    sent = {
        "client_secret": credential("clientsecret" + encoding),
        "client_assertion": credential("clientassert" + encoding, "eyJ0eXAiOiJKV1QifQ."),
        "password": credential("password" + encoding, "pw-"),
    }
    minted = {
        "access_token": credential("ccaccess" + encoding),
        "refresh_token": credential("ccrefresh" + encoding),
        "id_token": credential("ccid" + encoding, "eyJhbGciOiJFUzI1NiJ9."),
    }

    def token(request: Any) -> Any:
        return json_response(
            httpx2, 200, {**minted, "token_type": "Bearer", "expires_in": 60, "scope": "probe:read"}
        )

    body = {"grant_type": "client_credentials", "client_id": "probe-app", **sent}
    with probe.client(httpx2, token) as client:
        if encoding == "json":
            reply = client.post("https://api.anthropic.com/v1/oauth/token", json=body)
        else:
            reply = client.post(
                "https://api.anthropic.com/v1/oauth/token", data=body, headers={"content-type": FORM}
            )
        assert reply.json()["access_token"] == minted["access_token"]
    probe.check([*sent.values(), *minted.values()], stored=["probe-app", "client_credentials", "probe:read"])


def openai_admin(probe: Probe, handler: Handler) -> openai.OpenAI:
    return openai.OpenAI(
        api_key=credential("projkey"), admin_api_key=credential("adminkey", "sk-admin-"),
        http_client=probe.client(httpx2, handler),
    )  # fmt: skip


def test_openai_admin_api_key_creation(probe: Probe) -> None:
    value = credential("newadmin", "sk-admin-")

    def create(request: Any) -> Any:
        assert request.url.path == "/v1/organization/admin_api_keys"
        return json_response(httpx2, 200, {
            "object": "organization.admin_api_key", "id": "key_probe", "name": "ci-deployer",
            "redacted_value": "sk-admin-...abcd", "value": value, "created_at": 1700000000,
            "owner": {"type": "user", "object": "organization.user", "id": "user_probe", "name": "Ada",
                      "created_at": 1700000000, "role": "owner"},
        })  # fmt: skip

    client = openai_admin(probe, create)
    assert client.admin.organization.admin_api_keys.create(name="ci-deployer").value == value
    probe.check([value, client.admin_api_key or ""], stored=["ci-deployer", "sk-admin-...abcd"])


def test_openai_service_account_keys(probe: Probe) -> None:
    account_key, extra_key = credential("svcacct", "sk-svcacct-"), credential("svcextra", "sk-svcacct-")

    def api(request: Any) -> Any:
        key = {"object": "organization.project.service_account.api_key", "name": "Secret Key",
               "created_at": 1700000000, "id": "key_svc"}  # fmt: skip
        if request.url.path.endswith("/api_keys"):
            return json_response(httpx2, 200, {**key, "value": extra_key})
        return json_response(httpx2, 200, {
            "object": "organization.project.service_account", "id": "svc_acct_probe", "name": "nightly-bot",
            "role": "member", "created_at": 1700000000, "api_key": {**key, "value": account_key},
        })  # fmt: skip

    client = openai_admin(probe, api)
    created = client.admin.organization.projects.service_accounts.create("proj_probe", name="nightly-bot")
    assert created.api_key is not None and created.api_key.value == account_key
    more = client.admin.organization.projects.service_accounts.api_keys.create(
        "svc_acct_probe", project_id="proj_probe", name="rotated"
    )
    assert more.value == extra_key
    probe.check([account_key, extra_key], stored=["nightly-bot", "svc_acct_probe"])


def test_openai_realtime_client_secrets(probe: Probe) -> None:
    value, nested = credential("rtvalue", "ek_"), credential("rtnested", "ek_")

    def create(request: Any) -> Any:
        assert request.url.path == "/v1/realtime/client_secrets"
        return json_response(httpx2, 200, {
            "value": value, "expires_at": 1700000600,
            "session": {"type": "realtime", "model": "gpt-realtime", "object": "realtime.session",
                        "client_secret": {"value": nested, "expires_at": 1700000600}},
        })  # fmt: skip

    client = openai_admin(probe, create)
    secret = client.realtime.client_secrets.create(session={"type": "realtime", "model": "gpt-realtime"})
    assert secret.value == value
    probe.check([value, nested], stored=["gpt-realtime", "realtime.session"])


def test_openai_chatkit_session(probe: Probe) -> None:
    client_secret = credential("chatkit", "ek_")

    def create(request: Any) -> Any:
        return json_response(httpx2, 200, {
            "id": "cksess_probe", "object": "chatkit.session", "client_secret": client_secret,
            "expires_at": 1700000600, "max_requests_per_1_minute": 10, "status": "active", "user": "ada",
            "workflow": {"id": "wf_probe", "version": None, "state_variables": None, "tracing": {"enabled": True}},
        })  # fmt: skip

    client = openai_admin(probe, create)
    session = client.beta.chatkit.sessions.create(user="ada", workflow={"id": "wf_probe"})
    assert session.client_secret == client_secret
    probe.check([client_secret], stored=["cksess_probe", "wf_probe"])


# -- the cache ---------------------------------------------------------------------------------


def test_a_response_that_sets_a_cookie_is_not_cached(probe: Probe) -> None:
    cookie = credential("cookie", "sess=")
    sent: list[Any] = []

    def answer(request: Any) -> Any:
        sent.append(request)
        return json_response(
            httpx2, 200, chat_completion("Crumbs."), headers={"Set-Cookie": f"{cookie}; Path=/; HttpOnly"}
        )

    client = openai.OpenAI(api_key=credential("cookiekey"), http_client=probe.client(httpx2, answer))
    for _ in range(2):
        client.chat.completions.create(model="gpt-4o-mini", messages=CHAT)  # type: ignore[arg-type]
        assert httptrack.flush(10)
    assert len(sent) == 2, "an answer that set a cookie was served from the cache"
    assert [r["cached"] for r in probe.rows()] == [0, 0]
    probe.check([cookie], stored=["Crumbs."])


def loose_modes(folder: Path) -> list[str]:
    """Anything in ``folder`` (itself included) that another local user may read: files
    beyond 0600, folders beyond 0700."""
    found = []
    for path in [folder, *sorted(folder.rglob("*"))]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode & 0o077:
            found.append(f"{path.relative_to(folder.parent)} {mode:o}")
    return found


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_a_cache_folder_that_already_existed_is_made_private(probe: Probe, umask_022: None) -> None:
    """A folder made by an earlier version (or by hand) with 0755 and 0644: after use, every
    file in it is 0600 and every folder 0700, a large answer's own file included."""
    import diskcache  # type: ignore[import-untyped]

    probe.cache_dir.mkdir(mode=0o755)
    diskcache.Cache(str(probe.cache_dir)).close()  # its cache.db as diskcache makes it: 0644
    assert loose_modes(probe.cache_dir)
    # Over diskcache's 32 KiB once compressed: stored in a file of its own, in folders of its own.
    big = base64.b64encode(os.urandom(60_000)).decode()

    client = openai.OpenAI(
        api_key=credential("modes"),
        # Bodies not in the log: the folder keeps the answer itself (else a reference to its row).
        http_client=probe.client(
            httpx2, lambda r: json_response(httpx2, 200, chat_completion(big)), store_bodies=False
        ),
    )
    for _ in range(2):
        client.chat.completions.create(model="gpt-4o-mini", messages=CHAT)  # type: ignore[arg-type]
        assert httptrack.flush(10)
    assert [r["cached"] for r in probe.rows()] == [0, 1]
    assert any(p.suffix == ".val" for p in probe.cache_dir.rglob("*")), "the answer was not stored in a file"
    assert loose_modes(probe.cache_dir) == []


def test_autoload_makes_the_cache_folder_private(tmp_path: Path, umask_022: None) -> None:
    """Under ``HTTPTRACK=1`` the start-up checks create the folders they need: private ones."""
    cache_dir, db = tmp_path / "new" / "cache", tmp_path / "log" / "calls.db"
    script = tmp_path / "app.py"
    script.write_text(
        textwrap.dedent("""\
        import httpx
        print("imported")
    """)
    )
    env = child_env(HTTPTRACK="1", HTTPTRACK_DB=str(db), HTTPTRACK_CACHE_DIR=str(cache_dir))
    done = run_python(find_hook(tmp_path / "site"), script, env=env)
    assert done.returncode == 0 and "imported" in done.stdout, done.stderr
    assert cache_dir.is_dir(), "autoload no longer creates the folder: this test checks nothing"
    assert loose_modes(cache_dir) == []


def test_probes_find_what_is_there(probe: Probe) -> None:
    """The search itself: a credential httptrack has no way to know of (a word in an
    answer) is found in the database, the cache and both exports, in each encoding."""
    word = credential("control")
    for form in forms(word):
        assert form.decode() in {word, quote(word, safe=""), quote_plus(word), json.dumps(word)[1:-1],
                                 json.dumps(word)[1:-1].replace("/", "\\/"), core_of("control")}  # fmt: skip
    client = openai.OpenAI(
        api_key=credential("controlkey"),
        # A redact hook that changes the row's copy of the answer (not the word): the cache
        # folder keeps the answer's own bytes (else it holds a reference to the row).
        http_client=probe.client(
            httpx2,
            lambda r: json_response(httpx2, 200, chat_completion(f"say {word}")),
            redact=lambda text: text.replace("assistant", "Assistant"),
        ),
    )
    client.chat.completions.create(model="gpt-4o-mini", messages=CHAT)  # type: ignore[arg-type]
    with pytest.raises(AssertionError) as failed:
        probe.check([word])
    report = str(failed.value)
    for where in ("log/calls.db", "cache/", "export --format jsonl", "export --format csv", "--json"):
        assert where in report, where
