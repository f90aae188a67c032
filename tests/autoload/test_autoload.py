"""``httptrack.install()`` / ``uninstall()`` in this process, and the import hook beneath
``HTTPTRACK=1``. Whole programs run under the variable are in ``test_autoload_programs``."""

from __future__ import annotations

import ast
import asyncio
import functools
import importlib
import importlib.resources
import json
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import httpx2
import openai
import pytest
from autoload_helpers import PTH_SOURCE
from helpers import LIBS, read_rows

import httptrack
from httptrack import SettingsError, _settings
from httptrack import autoload as _autoload
from httptrack._fake import FakeProviderServer, mock_transport
from httptrack._streams import UsageChunkFilter
from httptrack.autoload import _AutoTrackingTransport, installed_settings
from httptrack.providers import provider_by_name

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "What is the capital of France?"}]}
CLIENT_CLASSES = (httpx.Client, httpx.AsyncClient, httpx2.Client, httpx2.AsyncClient)
#: The import-hook module in use: `httptrack._boot` in a source tree, `_httptrack_boot` in a wheel.
_boot = _autoload._boot()


@pytest.fixture(autouse=True)
def _uninstall_after() -> Iterator[None]:
    yield
    httptrack.uninstall()


@pytest.fixture(scope="module")
def server() -> Iterator[FakeProviderServer]:
    with FakeProviderServer() as s:
        yield s


def install(db: Path, server: FakeProviderServer, **options: Any) -> None:
    httptrack.install(db=db, cache=False, hosts={f"127.0.0.1:{server.port}": "openai"}, **options)


# -- which clients are tracked ------------------------------------------------------------------


@LIBS
def test_clients_created_before_and_after_install(lib: Any, server: FakeProviderServer, db: Path) -> None:
    before = lib.Client(base_url=server.url)
    install(db, server)
    with lib.Client(base_url=server.url) as after:
        first = before.post("/v1/chat/completions", json=BODY)
        second = after.post("/v1/chat/completions", json=BODY)
    rows = read_rows(db)
    assert [r["id"] for r in rows] == [
        first.headers["x-httptrack-call-id"],
        second.headers["x-httptrack-call-id"],
    ]
    assert [(r["provider"], r["model"], r["input_tokens"]) for r in rows] == [
        ("openai", "gpt-4o-mini", first.json()["usage"]["prompt_tokens"])
    ] * 2

    httptrack.uninstall()
    third = before.post("/v1/chat/completions", json=BODY)
    before.close()
    assert third.json() == first.json()
    assert "x-httptrack-call-id" not in third.headers
    assert len(read_rows(db)) == 2


@LIBS
def test_async_clients_created_before_and_after_install(
    lib: Any, server: FakeProviderServer, db: Path
) -> None:
    async def main() -> list[Any]:
        before = lib.AsyncClient(base_url=server.url)
        install(db, server)
        async with lib.AsyncClient(base_url=server.url) as after:
            replies = [await before.post("/v1/chat/completions", json=BODY)]
            async with after.stream(
                "POST", "/v1/chat/completions", json={**BODY, "stream": True}
            ) as response:
                replies.append(b"".join([chunk async for chunk in response.aiter_bytes()]))
        await before.aclose()
        return replies

    plain, streamed = asyncio.run(main())
    rows = read_rows(db)
    assert [(r["stream"], r["status"]) for r in rows] == [(0, "success"), (1, "success")]
    assert rows[0]["response_body"] == plain.text
    # httptrack asked this stream for its usage chunk and kept that chunk from the app: the
    # row holds what the provider sent, the app got the rest, byte for byte.
    recorded = rows[1]["response_body"].encode()
    assert b'"choices":[],"usage":{' in recorded and b'"usage":{' not in streamed
    usage_filter = UsageChunkFilter(provider_by_name("openai").is_usage_chunk)
    assert usage_filter.feed(recorded) + usage_filter.flush() == streamed


def test_sdk_client_created_before_install(server: FakeProviderServer, db: Path) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-test")  # e.g. a module-level default
    install(db, server)
    with client, httptrack.attribute(user="alice"):
        reply = client.chat.completions.create(**BODY)
    (row,) = read_rows(db)
    assert (row["user"], row["response_id"], row["input_tokens"], row["output_tokens"]) == (
        "alice",
        reply.id,
        reply.usage.prompt_tokens,
        reply.usage.completion_tokens,
    )


@LIBS
def test_custom_transport_and_mounts_keep_working(lib: Any, db: Path) -> None:
    # The app's own transports (here the fake provider in-process) receive every request;
    # the app gets the same bytes with and without tracking.
    def call(client: Any, url: str) -> Any:
        return client.post(
            url, json=BODY, headers={"anthropic-version": "2023-06-01"} if "anthropic" in url else {}
        )

    openai_url, anthropic_url = (
        "https://api.openai.com/v1/chat/completions",
        "https://api.anthropic.com/v1/messages",
    )
    plain = lib.Client(transport=mock_transport(lib))
    mounted = lib.Client(mounts={"https://api.anthropic.com": mock_transport(lib)})
    expected = [call(plain, openai_url).content, call(mounted, anthropic_url).content]
    httptrack.install(db=db, cache=False)
    assert [call(plain, openai_url).content, call(mounted, anthropic_url).content] == expected
    assert [r["provider"] for r in read_rows(db)] == ["openai", "anthropic"]


@LIBS
def test_environment_proxy_keeps_working(
    lib: Any, server: FakeProviderServer, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", server.url)  # llm.invalid cannot resolve: only the proxy can answer
    client = lib.Client()
    own = (client._transport, dict(client._mounts))
    server.clear_requests()
    httptrack.install(db=db, cache=False, hosts="llm.invalid=openai")
    with client:
        response = client.post("http://llm.invalid/v1/chat/completions", json=BODY)
    assert response.status_code == 200
    assert [r.headers["host"] for r in server.requests] == ["llm.invalid"]
    assert (client._transport, dict(client._mounts)) == own  # the client itself is never modified
    (row,) = read_rows(db)
    assert (row["host"], row["provider"], row["status"]) == ("llm.invalid", "openai", "success")


def test_requests_to_other_hosts_pass_through(db: Path) -> None:
    httptrack.install(db=db)
    with httpx2.Client(
        transport=httpx2.MockTransport(lambda request: httpx2.Response(200, text="hello"))
    ) as client:
        response = client.get("https://example.org/")
    assert (response.text, "x-httptrack-call-id" in response.headers) == ("hello", False)
    assert read_rows(db) == []


# -- never twice ----------------------------------------------------------------------------------


class Wrapping:
    """An app's transport around another one (retries, logging ...)."""

    def __init__(self, inner: Any) -> None:
        self.options = {"retries": 2, "next": inner}

    def handle_request(self, request: Any) -> Any:
        return self.options["next"].handle_request(request)

    def close(self) -> None:
        self.options["next"].close()


@LIBS
def test_the_apps_own_tracking_transport_wins(
    lib: Any, server: FakeProviderServer, db: Path, tmp_path: Path
) -> None:
    own = tmp_path / "own.db"

    def tracking() -> httptrack.TrackingTransport:
        return httptrack.TrackingTransport(db=own, cache=False, hosts={f"127.0.0.1:{server.port}": "openai"})

    bound, closed, partial, slotted = tracking(), tracking(), tracking(), tracking()
    clients = [
        lib.Client(transport=tracking()),
        lib.Client(mounts={f"http://127.0.0.1:{server.port}": tracking()}),
        lib.Client(transport=Wrapping(Wrapping(tracking()))),
        lib.Client(transport=lib.MockTransport(bound.handle_request)),  # a bound method
        lib.Client(transport=lib.MockTransport(lambda request: closed.handle_request(request))),  # a closure
        lib.Client(transport=lib.MockTransport(functools.partial(forward_to, partial))),
        lib.Client(transport=Slotted(slotted)),
    ]
    install(db, server)
    ids = []
    for client in clients:
        ids.append(client.post(f"{server.url}/v1/chat/completions", json=BODY).headers["x-httptrack-call-id"])
        client.close()
    for transport in (bound, closed, partial):  # their clients' MockTransport does not close them
        transport.close()
    assert [r["id"] for r in read_rows(own)] == ids
    assert read_rows(db) == []


def forward_to(transport: Any, request: Any) -> Any:
    return transport.handle_request(request)


class Slotted:
    """A wrapper with ``__slots__`` (no ``__dict__`` to look in)."""

    __slots__ = ("inner",)

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def handle_request(self, request: Any) -> Any:
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class Registry:
    """Holds the app's transport where autoload does not look: a call is still one row."""

    transports: ClassVar[dict[str, Any]] = {}


@LIBS
def test_an_own_tracking_transport_autoload_cannot_see_still_gives_one_row(
    lib: Any, server: FakeProviderServer, db: Path, tmp_path: Path
) -> None:
    own = tmp_path / "own.db"
    Registry.transports["t"] = httptrack.TrackingTransport(
        db=own, cache=False, hosts={f"127.0.0.1:{server.port}": "openai"}
    )

    def handler(request: Any) -> Any:  # reaches the transport through a global lookup
        return Registry.transports["t"].handle_request(request)

    install(db, server)
    with lib.Client(transport=lib.MockTransport(handler)) as client:
        reply = client.post(f"{server.url}/v1/chat/completions", json=BODY, headers={"X-Httptrack-User": "u"})
    Registry.transports.pop("t").close()
    # Recorded once, by autoload (whose wrapper saw the call first), with the call's user.
    (row,) = read_rows(db)
    assert (row["id"], row["user"]) == (reply.headers["x-httptrack-call-id"], "u")
    assert read_rows(own) == []
    assert "x-httptrack-user" not in server.requests[-1].headers


def test_another_call_made_while_autoload_handles_one_is_tracked_on_its_own(
    server: FakeProviderServer, db: Path, tmp_path: Path
) -> None:
    """A custom transport that, while handling the app's call, makes another call through a
    client with the app's own tracking transport (fetching a token, say): that other call is
    recorded by the app's transport, in its database; the app's call once, by autoload."""
    own = tmp_path / "own.db"
    hosts = {f"127.0.0.1:{server.port}": "openai"}
    helper = httpx2.Client(transport=httptrack.TrackingTransport(db=own, cache=False, hosts=hosts))

    class FetchingFirst(httpx2.BaseTransport):
        def __init__(self) -> None:
            self.inner = httpx2.HTTPTransport()

        def handle_request(self, request: httpx2.Request) -> httpx2.Response:
            helper.get(f"{server.url}/v1/models")  # a call of its own, to an LLM host
            return self.inner.handle_request(request)

        def close(self) -> None:
            self.inner.close()

    install(db, server)
    with helper, httpx2.Client(transport=FetchingFirst()) as client:
        reply = client.post(f"{server.url}/v1/chat/completions", json=BODY)
    (row,) = read_rows(db)
    assert (row["id"], row["operation"]) == (reply.headers["x-httptrack-call-id"], "chat")
    (other,) = read_rows(own)
    assert other["operation"] == "models"


def test_an_own_async_tracking_transport_wins(server: FakeProviderServer, db: Path, tmp_path: Path) -> None:
    own = tmp_path / "own.db"

    async def main() -> list[str]:
        hosts = {f"127.0.0.1:{server.port}": "openai"}
        inner = httptrack.AsyncTrackingTransport(db=own, cache=False, hosts=hosts)
        clients = [
            httpx2.AsyncClient(transport=httptrack.AsyncTrackingTransport(db=own, cache=False, hosts=hosts)),
            httpx2.AsyncClient(transport=httpx2.MockTransport(inner.handle_async_request)),
        ]
        install(db, server)
        ids = []
        for client in clients:
            async with client:
                reply = await client.post(f"{server.url}/v1/chat/completions", json=BODY)
                ids.append(reply.headers["x-httptrack-call-id"])
        await inner.aclose()
        return ids

    ids = asyncio.run(main())
    assert [r["id"] for r in read_rows(own)] == ids
    assert read_rows(db) == []


def test_a_transport_forwarding_to_another_client_records_once(server: FakeProviderServer, db: Path) -> None:
    # openai's X.509 auth forwards each request to another client's transport: both clients
    # are tracked, the call must still be one row.
    pool = httpx2.Client()

    class Forwarding(httpx2.BaseTransport):
        def handle_request(self, request: httpx2.Request) -> httpx2.Response:
            return pool._transport_for_url(request.url).handle_request(request)

    install(db, server)
    with pool, httpx2.Client(transport=Forwarding()) as client:
        response = client.post(f"{server.url}/v1/chat/completions", json=BODY)
    (row,) = read_rows(db)
    assert row["id"] == response.headers["x-httptrack-call-id"]


# -- install / uninstall --------------------------------------------------------------------------


def test_install_is_idempotent_and_replaces_settings(
    server: FakeProviderServer, db: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    client = httpx2.Client(base_url=server.url)
    request.addfinalizer(client.close)
    install(db, server)
    patched = {cls: cls.__dict__["_transport_for_url"] for cls in CLIENT_CLASSES}
    install(db, server)
    assert {cls: cls.__dict__["_transport_for_url"] for cls in CLIENT_CLASSES} == patched
    client.post("/v1/chat/completions", json=BODY)
    assert len(read_rows(db)) == 1

    other = tmp_path / "other.db"
    install(other, server, user="batch")
    client.post("/v1/chat/completions", json=BODY)
    assert len(read_rows(db)) == 1
    assert [r["user"] for r in read_rows(other)] == ["batch"]
    settings = installed_settings()
    assert settings is not None and (settings.db, settings.user) == (other, "batch")


def test_uninstall_restores_every_client_class() -> None:
    originals = {cls: cls.__dict__["_transport_for_url"] for cls in CLIENT_CLASSES}
    httptrack.install()
    for cls, original in originals.items():
        assert cls.__dict__["_transport_for_url"].__httptrack_original__ is original
    httptrack.uninstall()
    httptrack.uninstall()
    assert {cls: cls.__dict__["_transport_for_url"] for cls in CLIENT_CLASSES} == originals
    assert installed_settings() is None


def test_install_again_after_another_patch(server: FakeProviderServer, db: Path) -> None:
    # A mock library patches _transport_for_url over ours, or puts back what it found when it
    # stops (respx does both): install() again tracks every call once, uninstall() stops it.
    original = httpx2.Client.__dict__["_transport_for_url"]
    install(db, server)
    ours = httpx2.Client.__dict__["_transport_for_url"]
    with httpx2.Client(base_url=server.url) as client:
        httpx2.Client._transport_for_url = lambda self, url: ours(self, url)  # type: ignore[method-assign]
        install(db, server)
        client.post("/v1/chat/completions", json=BODY)
        assert len(read_rows(db)) == 1
        httpx2.Client._transport_for_url = original  # type: ignore[method-assign]
        client.post("/v1/chat/completions", json=BODY)
        assert len(read_rows(db)) == 1  # not tracked: the patch is gone
        install(db, server)
        client.post("/v1/chat/completions", json=BODY)
        assert len(read_rows(db)) == 2
        httptrack.uninstall()
        client.post("/v1/chat/completions", json=BODY)
        assert len(read_rows(db)) == 2
    assert httpx2.Client.__dict__["_transport_for_url"] is original


def test_bad_settings_raise_from_code_and_install_nothing() -> None:
    with pytest.raises(SettingsError, match="max_body_bytes"):
        httptrack.install(max_body_bytes="abc")
    with pytest.raises(TypeError, match="install\\(\\) got an unexpected keyword argument 'database'"):
        httptrack.install(database="calls.db")
    assert installed_settings() is None
    assert not hasattr(httpx2.Client._transport_for_url, "__httptrack_original__")


def test_start_from_environment(
    monkeypatch: pytest.MonkeyPatch, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # What HTTPTRACK=1 runs when httpx or httpx2 is first imported.
    monkeypatch.setenv("HTTPTRACK_DB", str(db))
    monkeypatch.setenv("HTTPTRACK_USER", "env-user")
    _autoload.start_from_environment()
    settings = installed_settings()
    assert settings is not None and (settings.db, settings.user) == (db, "env-user")
    httptrack.uninstall()

    monkeypatch.setenv("HTTPTRACK_ENABLED", "0")  # wins over HTTPTRACK=1
    _autoload.start_from_environment()
    assert installed_settings() is None
    monkeypatch.setenv("HTTPTRACK_ENABLED", "1")
    monkeypatch.setenv("HTTPTRACK_CACHE", "sometimes")
    _autoload.start_from_environment()
    assert installed_settings() is None
    assert capsys.readouterr().err == (
        "httptrack: HTTPTRACK_CACHE: expected one of on, off, refresh, replay, got 'sometimes'; "
        "this program runs untracked\n"
    )


def test_a_tracking_fault_never_stops_the_request(
    server: FakeProviderServer, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("no tracking today")

    install(db, server)
    monkeypatch.setattr(_AutoTrackingTransport, "__init__", broken)
    with httpx2.Client() as client:
        response = client.post(f"{server.url}/v1/chat/completions", json=BODY)
    assert response.status_code == 200 and "x-httptrack-call-id" not in response.headers
    assert httptrack.fault_counts() == {"autoload": 1}
    assert read_rows(db) == []


# -- the import hook ------------------------------------------------------------------------------


@pytest.fixture
def library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The name of a package not imported yet (with a data file), removed afterwards."""
    name = f"fakelib_{uuid.uuid4().hex}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("VALUE = 42\n")
    (tmp_path / name / "data.txt").write_text("resource")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)
    _boot.cancel(_seen.append)


_seen: list[Any] = []


def finders() -> list[Any]:
    return [
        f for f in sys.meta_path if type(f).__name__ == "_Finder" and type(f).__module__ == _boot.__name__
    ]


def test_hook_runs_once_the_module_has_executed(library: str) -> None:
    seen: list[tuple[Any, ...]] = []

    def hook(module: Any) -> None:
        seen.append(
            (
                module.__name__,
                module.VALUE,
                type(module.__loader__).__name__,
                type(module.__spec__.loader).__name__,
            )
        )

    _boot.when_imported(library, hook)
    _boot.when_imported(library, hook)  # registered once
    assert len(finders()) == 1
    module = importlib.import_module(library)
    assert seen == [(library, 42, "SourceFileLoader", "SourceFileLoader")]  # the real loader, put back
    assert importlib.resources.files(module).joinpath("data.txt").read_text() == "resource"
    assert finders() == []  # nothing left to watch


def test_hook_runs_at_once_for_a_module_already_imported() -> None:
    seen: list[Any] = []
    _boot.when_imported("json", seen.append)
    assert seen == [json]


def test_cancelled_hook_never_runs(library: str) -> None:
    _boot.when_imported(library, _seen.append)
    _boot.cancel(_seen.append)
    assert finders() == []
    importlib.import_module(library)
    assert _seen == []


def test_failing_hook_warns_and_the_import_succeeds(library: str, capsys: pytest.CaptureFixture[str]) -> None:
    def hook(module: Any) -> None:
        raise RuntimeError("nope")

    _boot.when_imported(library, hook)
    assert importlib.import_module(library).VALUE == 42
    assert (
        capsys.readouterr().err
        == f"httptrack: could not hook into {library} (RuntimeError: nope); its calls are not tracked\n"
    )


def test_module_that_fails_to_import_keeps_its_hook(library: str, tmp_path: Path) -> None:
    init = tmp_path / library / "__init__.py"
    init.write_text("raise ValueError('not yet')\n")
    seen: list[Any] = []
    _boot.when_imported(library, seen.append)
    with pytest.raises(ValueError, match="not yet"):
        importlib.import_module(library)
    assert seen == []
    init.write_text("VALUE = 42\n")
    importlib.invalidate_caches()
    sys.modules.pop(library, None)
    module = importlib.import_module(library)
    assert seen == [module]


def test_the_hook_module_in_use_speaks_this_version() -> None:
    assert _boot.API == _autoload._BOOT_API


def test_on_and_off_spellings_agree_with_settings() -> None:
    assert (_boot.ON_VALUES, _boot.OFF_VALUES) == (_settings._TRUE, _settings._FALSE)
    line = PTH_SOURCE.read_text().splitlines()[1]
    match = re.search(r"\.lower\(\) in (\(.*?\)) or ", line)
    assert match is not None and frozenset(ast.literal_eval(match.group(1))) == _boot.OFF_VALUES
