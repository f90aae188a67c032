"""``HTTPTRACK=1 python app.py``: unmodified programs, each in a fresh interpreter, using the
real SDKs against fake providers on 127.0.0.1 (mapped with ``HTTPTRACK_HOSTS``).

openai and anthropic run on httpx2, ollama on httpx; every program is run sync and async, and
each call it reports is matched to exactly one row. See ``autoload_helpers`` for how the
child interpreter gets the start-up hook.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from autoload_helpers import (
    BOOT_SOURCE,
    PTH_SOURCE,
    Hook,
    child_env,
    find_hook,
    installed_from_this_checkout,
    last_json_line,
    rows_in,
    run_python,
)
from click.testing import CliRunner

from httptrack import autoload as _autoload
from httptrack._fake import FakeProviderServer
from httptrack.cli import main as cli

pytestmark = pytest.mark.slow

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def hook(tmp_path_factory: pytest.TempPathFactory) -> Hook:
    return find_hook(tmp_path_factory.mktemp("emulated-site"))


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, FakeProviderServer]]:
    with (
        FakeProviderServer() as o,
        FakeProviderServer() as a,
        FakeProviderServer() as l,  # noqa: E741
        FakeProviderServer() as g,
        FakeProviderServer() as m,
    ):
        # Groq and Mistral speak OpenAI's format: the fake's OpenAI routes answer them.
        yield {"openai": o, "anthropic": a, "ollama": l, "groq": g, "mistral": m}


@pytest.fixture
def env(servers: dict[str, FakeProviderServer], tmp_path: Path) -> dict[str, str]:
    """What every program gets: where the fake providers are, and how they map to providers."""
    return child_env(
        OPENAI_URL=servers["openai"].url,
        ANTHROPIC_URL=servers["anthropic"].url,
        OLLAMA_HOST=servers["ollama"].url,
        GROQ_URL=servers["groq"].url,
        MISTRAL_URL=servers["mistral"].url,
        HTTPTRACK_HOSTS=",".join(f"127.0.0.1:{s.port}={name}" for name, s in servers.items()),
        HTTPTRACK_DB=str(tmp_path / "calls.db"),
        HTTPTRACK_CACHE="off",
    )


def program(tmp_path: Path, source: str, name: str = "app.py") -> Path:
    script = tmp_path / name
    script.write_text(textwrap.dedent(source))
    return script


# Each program prints, as its last line, a JSON list of what the SDK reported per call.
PROGRAMS = {
    "openai": """
        import asyncio, json, os, sys
        import openai

        Q = [{"role": "user", "content": "__QUESTION__"}]
        URL = os.environ["OPENAI_URL"] + "/v1"

        def report(model, usage, text, stream):
            return {"model": model, "input": usage.prompt_tokens, "output": usage.completion_tokens,
                    "text": text, "stream": stream}

        def sync():
            client = openai.OpenAI(base_url=URL, api_key="sk-test")
            r = client.chat.completions.create(model="gpt-4o-mini", messages=Q)
            out = [report("gpt-4o-mini", r.usage, r.choices[0].message.content, 0)]
            text, usage = [], None
            for chunk in client.chat.completions.create(model="gpt-4o", messages=Q, stream=True,
                                                        stream_options={"include_usage": True}):
                if chunk.choices and chunk.choices[0].delta.content:
                    text.append(chunk.choices[0].delta.content)
                usage = chunk.usage or usage
            return out + [report("gpt-4o", usage, "".join(text), 1)]

        async def asynchronous():
            client = openai.AsyncOpenAI(base_url=URL, api_key="sk-test")
            r = await client.chat.completions.create(model="gpt-4o-mini", messages=Q)
            out = [report("gpt-4o-mini", r.usage, r.choices[0].message.content, 0)]
            text, usage = [], None
            stream = await client.chat.completions.create(model="gpt-4o", messages=Q, stream=True,
                                                          stream_options={"include_usage": True})
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    text.append(chunk.choices[0].delta.content)
                usage = chunk.usage or usage
            await client.close()
            return out + [report("gpt-4o", usage, "".join(text), 1)]

        print(json.dumps(sync() if sys.argv[1] == "sync" else asyncio.run(asynchronous())))
    """.replace("__QUESTION__", QUESTION),
    "anthropic": """
        import asyncio, json, os, sys
        import anthropic

        Q = [{"role": "user", "content": "__QUESTION__"}]
        URL = os.environ["ANTHROPIC_URL"]
        MODEL = "claude-haiku-4-5"

        def report(message, text, stream):
            u = message.usage
            billed = u.input_tokens + (u.cache_read_input_tokens or 0) + (u.cache_creation_input_tokens or 0)
            return {"model": MODEL, "input": billed, "output": u.output_tokens, "text": text,
                    "stream": stream}

        def sync():
            client = anthropic.Anthropic(base_url=URL, api_key="sk-ant-test")
            m = client.messages.create(model=MODEL, max_tokens=100, messages=Q)
            with client.messages.stream(model=MODEL, max_tokens=100, messages=Q) as stream:
                text = "".join(stream.text_stream)
                final = stream.get_final_message()
            return [report(m, m.content[0].text, 0), report(final, text, 1)]

        async def asynchronous():
            client = anthropic.AsyncAnthropic(base_url=URL, api_key="sk-ant-test")
            m = await client.messages.create(model=MODEL, max_tokens=100, messages=Q)
            async with client.messages.stream(model=MODEL, max_tokens=100, messages=Q) as stream:
                text = "".join([t async for t in stream.text_stream])
                final = await stream.get_final_message()
            await client.close()
            return [report(m, m.content[0].text, 0), report(final, text, 1)]

        print(json.dumps(sync() if sys.argv[1] == "sync" else asyncio.run(asynchronous())))
    """.replace("__QUESTION__", QUESTION),
    # Sync uses the module-level client ollama creates when imported (OLLAMA_HOST).
    "ollama": """
        import asyncio, json, os, sys
        import ollama

        Q = [{"role": "user", "content": "__QUESTION__"}]

        def report(last, text, stream):
            return {"model": "llama3.2", "input": last.prompt_eval_count, "output": last.eval_count,
                    "text": text, "stream": stream}

        def sync():
            r = ollama.chat(model="llama3.2", messages=Q)
            parts = list(ollama.chat(model="llama3.2", messages=Q, stream=True))
            text = "".join(p.message.content for p in parts)
            return [report(r, r.message.content, 0), report(parts[-1], text, 1)]

        async def asynchronous():
            client = ollama.AsyncClient(host=os.environ["OLLAMA_HOST"])
            r = await client.chat(model="llama3.2", messages=Q)
            parts = [p async for p in await client.chat(model="llama3.2", messages=Q, stream=True)]
            text = "".join(p.message.content for p in parts)
            return [report(r, r.message.content, 0), report(parts[-1], text, 1)]

        print(json.dumps(sync() if sys.argv[1] == "sync" else asyncio.run(asynchronous())))
    """.replace("__QUESTION__", QUESTION),
    # groq (on httpx) and mistralai (on httpx2): plain calls; their streams carry usage where
    # the fake's OpenAI stream does not (x_groq, the last chunk), so they are left to the SDK tests.
    "groq": """
        import asyncio, json, os, sys
        import groq

        Q = [{"role": "user", "content": "__QUESTION__"}]

        def report(r):
            return {"model": "llama-3.3-70b-versatile", "input": r.usage.prompt_tokens,
                    "output": r.usage.completion_tokens, "text": r.choices[0].message.content, "stream": 0}

        def sync():
            client = groq.Groq(base_url=os.environ["GROQ_URL"], api_key="gsk-test")
            return [report(client.chat.completions.create(model="llama-3.3-70b-versatile", messages=Q))]

        async def asynchronous():
            client = groq.AsyncGroq(base_url=os.environ["GROQ_URL"], api_key="gsk-test")
            r = await client.chat.completions.create(model="llama-3.3-70b-versatile", messages=Q)
            await client.close()
            return [report(r)]

        print(json.dumps(sync() if sys.argv[1] == "sync" else asyncio.run(asynchronous())))
    """.replace("__QUESTION__", QUESTION),
    "mistral": """
        import asyncio, json, os, sys
        from mistralai.client import Mistral

        Q = [{"role": "user", "content": "__QUESTION__"}]

        def report(r):
            return {"model": "mistral-small-latest", "input": r.usage.prompt_tokens,
                    "output": r.usage.completion_tokens, "text": r.choices[0].message.content, "stream": 0}

        def sync():
            client = Mistral(api_key="mistral-test", server_url=os.environ["MISTRAL_URL"])
            return [report(client.chat.complete(model="mistral-small-latest", messages=Q))]

        async def asynchronous():
            client = Mistral(api_key="mistral-test", server_url=os.environ["MISTRAL_URL"])
            return [report(await client.chat.complete_async(model="mistral-small-latest", messages=Q))]

        print(json.dumps(sync() if sys.argv[1] == "sync" else asyncio.run(asynchronous())))
    """.replace("__QUESTION__", QUESTION),
}

ENDPOINTS = {
    "openai": "/v1/chat/completions",
    "anthropic": "/v1/messages",
    "ollama": "/api/chat",
    "groq": "/openai/v1/chat/completions",
    "mistral": "/v1/chat/completions",
}


def assert_rows_match(
    rows: list[dict[str, Any]],
    reported: list[dict[str, Any]],
    provider: str,
    host: str,
    *,
    user: str | None = None,
    service: str | None = None,
) -> None:
    assert len(rows) == len(reported), rows
    for row, call in zip(rows, reported, strict=True):
        assert (row["provider"], row["operation"], row["endpoint"], row["host"]) == (
            provider,
            "chat",
            ENDPOINTS[provider],
            host,
        )
        assert (row["model"], row["stream"], row["status"], row["http_status"]) == (
            call["model"],
            call["stream"],
            "success",
            200,
        )
        assert (row["input_tokens"], row["output_tokens"]) == (call["input"], call["output"])
        assert row["total_tokens"] == call["input"] + call["output"]
        assert row["tokens_estimated"] == 0
        assert row["response_text"] == call["text"]
        assert (row["user"], row["service"]) == (user, service)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("provider", ["openai", "anthropic", "ollama", "groq", "mistral"])
def test_unmodified_program_is_tracked(
    hook: Hook,
    env: dict[str, str],
    servers: dict[str, FakeProviderServer],
    tmp_path: Path,
    provider: str,
    mode: str,
) -> None:
    script = program(tmp_path, PROGRAMS[provider])
    env.update(HTTPTRACK="1", HTTPTRACK_USER="ci-bot", HTTPTRACK_SERVICE="nightly")
    result = run_python(hook, script, mode, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    reported = last_json_line(result.stdout)
    assert_rows_match(
        rows_in(tmp_path / "calls.db"),
        reported,
        provider,
        f"127.0.0.1:{servers[provider].port}",
        user="ci-bot",
        service="nightly",
    )


@pytest.mark.parametrize("value", [None, "0", "off", ""])
def test_without_the_variable_nothing_is_recorded_or_imported(
    hook: Hook, env: dict[str, str], tmp_path: Path, value: str | None
) -> None:
    script = program(
        tmp_path,
        textwrap.dedent(PROGRAMS["openai"]) + 'print(sorted(m for m in sys.modules if "httptrack" in m))\n',
    )
    if value is not None:
        env["HTTPTRACK"] = value
    result = run_python(hook, script, "sync", env=env)
    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert len(json.loads(lines[0])) == 2  # the program did its two calls
    assert lines[1] == "[]"  # nothing of httptrack was even imported
    assert not (tmp_path / "calls.db").exists()


def test_startup_imports_only_the_boot_module_until_httpx_is_imported(
    hook: Hook, env: dict[str, str], tmp_path: Path
) -> None:
    script = program(
        tmp_path,
        """
        import sys

        def state():
            finders = [type(f).__name__ for f in sys.meta_path if type(f).__module__ == "_httptrack_boot"]
            return sorted(m for m in sys.modules if "httptrack" in m and m != "httptrack._boot"), finders

        print(state())
        import httpx2
        print(state(), hasattr(httpx2.Client._transport_for_url, "__httptrack_original__"))
        import httpx
        print(state(), hasattr(httpx.AsyncClient._transport_for_url, "__httptrack_original__"))
    """,
    )
    result = run_python(hook, script, env={**env, "HTTPTRACK": "1"})
    assert (result.returncode, result.stderr) == (0, "")
    before, after_httpx2, after_both = result.stdout.splitlines()
    assert before == "(['_httptrack_boot'], ['_Finder'])"
    assert (
        after_httpx2.startswith("(['_httptrack_boot', 'httptrack', ")
        and "'httptrack.autoload'" in after_httpx2
    )
    assert after_httpx2.endswith("['_Finder']) True")  # still waiting for httpx
    assert after_both.endswith(", []) True")  # both patched: the finder has left sys.meta_path


def test_program_with_its_own_tracking_transport_gets_one_row_per_call(
    hook: Hook, env: dict[str, str], tmp_path: Path
) -> None:
    script = program(
        tmp_path,
        """
        import json, os, sys
        import httpx, httpx2, ollama, openai
        import httptrack

        OWN = sys.argv[1]

        class Retrying(httpx.BaseTransport):  # the app's own wrapper around its tracking transport
            def __init__(self, transport):
                self.transport = transport
            def handle_request(self, request):
                return self.transport.handle_request(request)

        client = openai.OpenAI(base_url=os.environ["OPENAI_URL"] + "/v1", api_key="sk-test",
                               http_client=httpx2.Client(transport=httptrack.TrackingTransport(db=OWN)))
        a = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "one"}])
        own = Retrying(httptrack.TrackingTransport(db=OWN))
        local = ollama.Client(host=os.environ["OLLAMA_HOST"], transport=own)
        b = local.chat(model="llama3.2", messages=[{"role": "user", "content": "two"}])
        print(json.dumps([a.usage.prompt_tokens, b.prompt_eval_count]))
    """,
    )
    own = tmp_path / "own.db"
    result = run_python(hook, script, str(own), env={**env, "HTTPTRACK": "1"})
    assert (result.returncode, result.stderr) == (0, "")
    tokens = last_json_line(result.stdout)
    rows = rows_in(own)
    assert [(r["provider"], r["input_tokens"]) for r in rows] == [
        ("openai", tokens[0]),
        ("ollama", tokens[1]),
    ]
    assert rows_in(tmp_path / "calls.db") == []  # the app's own transports recorded them, once


@pytest.mark.parametrize("call", ["install", "uninstall"])
def test_code_overrides_the_variable(hook: Hook, env: dict[str, str], tmp_path: Path, call: str) -> None:
    # install()/uninstall() before httpx is imported: the pending HTTPTRACK=1 start-up stands down.
    code = tmp_path / "code.db"
    arguments = f"db={str(code)!r}" if call == "install" else ""
    script = program(
        tmp_path, f"import httptrack\nhttptrack.{call}({arguments})\n" + textwrap.dedent(PROGRAMS["ollama"])
    )
    result = run_python(hook, script, "sync", env={**env, "HTTPTRACK": "1"})
    assert (result.returncode, result.stderr) == (0, "")
    assert rows_in(tmp_path / "calls.db") == []
    assert len(rows_in(code)) == (2 if call == "install" else 0)


def test_broken_configuration_warns_once_and_leaves_the_program_untouched(
    hook: Hook, env: dict[str, str], tmp_path: Path
) -> None:
    # The program uses both libraries: httpx2 (openai) and httpx (ollama).
    script = program(tmp_path, PROGRAMS["openai"].replace("import openai", "import openai, ollama"))
    untracked = run_python(hook, script, "sync", env=env)
    broken = run_python(
        hook, script, "sync", env={**env, "HTTPTRACK": "1", "HTTPTRACK_MAX_BODY_BYTES": "abc"}
    )
    assert (broken.returncode, broken.stdout) == (0, untracked.stdout)
    assert broken.stderr == (
        "httptrack: HTTPTRACK_MAX_BODY_BYTES: expected a size in bytes such as 10485760 or "
        "10MiB, got 'abc'; this program runs untracked\n"
    )
    assert not (tmp_path / "calls.db").exists()


def test_a_call_log_that_cannot_be_written_warns_once_and_the_program_runs_untracked(
    hook: Hook, env: dict[str, str], tmp_path: Path
) -> None:
    script = program(tmp_path, PROGRAMS["ollama"])
    untracked = run_python(hook, script, "sync", env=env)
    (tmp_path / "a-file").write_text("not a folder")
    for db, why in [
        (tmp_path / "a-file" / "calls.db", f"{tmp_path / 'a-file'} is not a folder"),
        (tmp_path, "it is not a file"),
    ]:
        result = run_python(hook, script, "sync", env={**env, "HTTPTRACK": "1", "HTTPTRACK_DB": str(db)})
        assert (result.returncode, result.stdout) == (0, untracked.stdout)
        assert result.stderr == (
            f"httptrack: HTTPTRACK_DB: cannot write the call log {db} ({why}); this program runs untracked\n"
        )


def test_a_response_cache_that_cannot_be_written_warns_once_and_calls_are_tracked_without_it(
    hook: Hook, env: dict[str, str], tmp_path: Path
) -> None:
    script = program(tmp_path, PROGRAMS["ollama"])
    (tmp_path / "a-file").write_text("not a folder")
    cache_dir = tmp_path / "a-file" / "cache"
    result = run_python(
        hook,
        script,
        "sync",
        env={**env, "HTTPTRACK": "1", "HTTPTRACK_CACHE": "on", "HTTPTRACK_CACHE_DIR": str(cache_dir)},
    )
    assert result.returncode == 0
    assert result.stderr == (
        f"httptrack: HTTPTRACK_CACHE_DIR: cannot write the response cache {cache_dir} ({tmp_path / 'a-file'} is not a folder); "
        "calls are tracked without the cache\n"
    )
    rows = rows_in(tmp_path / "calls.db")
    assert len(rows) == 2 and {r["cached"] for r in rows} == {0}


def test_a_damaged_call_log_is_one_line_on_stderr_not_a_traceback(
    hook: Hook, env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "calls.db").write_bytes(b"this is not a SQLite database" * 10)
    script = program(tmp_path, PROGRAMS["ollama"])
    result = run_python(hook, script, "sync", env={**env, "HTTPTRACK": "1"})
    assert result.returncode == 0
    assert len(last_json_line(result.stdout)) == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "file is not a database" in result.stderr and "Traceback" not in result.stderr


def test_unknown_value_of_httptrack_warns_once(hook: Hook, env: dict[str, str], tmp_path: Path) -> None:
    script = program(tmp_path, PROGRAMS["ollama"])
    result = run_python(hook, script, "sync", env={**env, "HTTPTRACK": "please"})
    assert result.returncode == 0
    assert len(last_json_line(result.stdout)) == 2
    assert result.stderr == (
        "httptrack: HTTPTRACK: expected on/off (1/0, true/false), got 'please'; this program runs untracked\n"
    )
    assert not (tmp_path / "calls.db").exists()


def test_httptrack_that_cannot_be_imported_warns_once(
    hook: Hook, env: dict[str, str], tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    (broken / "httptrack").mkdir(parents=True)
    (broken / "httptrack" / "__init__.py").write_text("raise ImportError('half-upgraded install')\n")
    script = program(tmp_path, PROGRAMS["ollama"])
    result = run_python(hook, script, "sync", env={**env, "HTTPTRACK": "1", "PYTHONPATH": str(broken)})
    assert result.returncode == 0
    assert len(last_json_line(result.stdout)) == 2
    assert result.stderr == (
        "httptrack: could not load httptrack (ImportError: half-upgraded install); "
        "this program runs untracked\n"
    )


def test_pth_line_without_its_module_warns_once(tmp_path: Path) -> None:
    # The .pth alone (its module gone): site.py must not print a traceback, the program runs.
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "httptrack.pth").write_bytes(PTH_SOURCE.read_bytes())
    result = run_python(
        Hook([sys.executable, "-S"], None, None),
        program(
            tmp_path,
            f"""
        import site
        site.addsitedir({str(folder)!r})
        print("ran")
    """,
        ),
        env=child_env(HTTPTRACK="1", PYTHONPATH=None),
    )
    assert (result.returncode, result.stdout) == (0, "ran\n")
    assert result.stderr == (
        "httptrack: the start-up hook is missing (No module named '_httptrack_boot'); "
        "reinstall httptrack. This program runs untracked\n"
    )


def test_the_pth_line_names_autoloads_entry_point() -> None:
    # _boot names nothing of httptrack (no import cycle): the .pth line tells it what to call
    # once httpx is imported, as a string that no type checker follows; this test does.
    entries = re.findall(r"_httptrack_boot\.start\('([\w.]+):(\w+)'\)", PTH_SOURCE.read_text())
    assert entries == [("httptrack.autoload", "start_from_environment")]
    module, function = entries[0]
    assert getattr(importlib.import_module(module), function) is _autoload.start_from_environment


def test_pth_line_older_than_its_module_warns_once(tmp_path: Path) -> None:
    # A .pth from before the entry point was named in it, beside this module.
    folder = tmp_path / "site"
    folder.mkdir()
    old_line = re.sub(r"start\('[^']*'\)", "start()", PTH_SOURCE.read_text())
    (folder / "httptrack.pth").write_text(old_line)
    (folder / "_httptrack_boot.py").write_bytes(BOOT_SOURCE.read_bytes())
    result = run_python(
        Hook([sys.executable, "-S"], None, None),
        program(
            tmp_path,
            f"""
        import site, sys
        site.addsitedir({str(folder)!r})
        print(sys.modules["_httptrack_boot"]._hooks)
    """,
        ),
        env=child_env(HTTPTRACK="1"),
    )
    assert (result.returncode, result.stdout) == (0, "{}\n")
    assert result.stderr == (
        "httptrack: the start-up hook is out of date; reinstall httptrack. This program runs untracked\n"
    )


def test_environment_proxy_keeps_working(
    hook: Hook, env: dict[str, str], servers: dict[str, FakeProviderServer], tmp_path: Path
) -> None:
    # llm.invalid cannot resolve: the call only succeeds through HTTP_PROXY (the fake server,
    # which answers absolute-form requests as a proxy would forward them).
    proxy = servers["openai"]
    proxy.clear_requests()
    script = program(
        tmp_path,
        """
        import json, openai
        client = openai.OpenAI(base_url="http://llm.invalid/v1", api_key="sk-test", max_retries=0)
        r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        print(json.dumps([r.usage.prompt_tokens, r.usage.completion_tokens]))
    """,
    )
    result = run_python(
        hook,
        script,
        env={**env, "HTTPTRACK": "1", "HTTP_PROXY": proxy.url, "HTTPTRACK_HOSTS": "llm.invalid=openai"},
    )
    assert (result.returncode, result.stderr) == (0, "")
    tokens = last_json_line(result.stdout)
    (request,) = proxy.requests
    assert request.headers["host"] == "llm.invalid"
    (row,) = rows_in(tmp_path / "calls.db")
    assert (row["host"], row["provider"], row["input_tokens"], row["output_tokens"]) == (
        "llm.invalid",
        "openai",
        *tokens,
    )


def test_httpx2_alias_httpx(hook: Hook, env: dict[str, str], tmp_path: Path) -> None:
    # An app that makes `import httpx` mean httpx2: ollama (an httpx SDK) then runs on httpx2.
    script = program(
        tmp_path,
        """
        import json, os
        import httpx2
        httpx2.alias_httpx()
        import httpx, ollama
        assert httpx is httpx2
        HI = [{"role": "user", "content": "hi"}]
        r = ollama.Client(host=os.environ["OLLAMA_HOST"]).chat(model="llama3.2", messages=HI)
        url = os.environ["OPENAI_URL"] + "/v1/chat/completions"
        plain = httpx.post(url, json={"model": "gpt-4o-mini", "messages": HI}).json()
        print(json.dumps([r.prompt_eval_count, plain["usage"]["prompt_tokens"]]))
    """,
    )
    result = run_python(hook, script, env={**env, "HTTPTRACK": "1"})
    assert (result.returncode, result.stderr) == (0, "")
    tokens = last_json_line(result.stdout)
    rows = rows_in(tmp_path / "calls.db")
    assert [(r["provider"], r["input_tokens"]) for r in rows] == [
        ("ollama", tokens[0]),
        ("openai", tokens[1]),
    ]


# -- httptrack run ------------------------------------------------------------------------------


def test_httptrack_run(
    hook: Hook, env: dict[str, str], servers: dict[str, FakeProviderServer], tmp_path: Path
) -> None:
    script = program(tmp_path, PROGRAMS["openai"])
    db = tmp_path / "run.db"
    hosts = f"127.0.0.1:{servers['openai'].port}=openai"
    command = [
        sys.executable,
        "-c",
        "from httptrack.cli import main; main()",
        "run",
        "--db",
        str(db),
        "--user",
        "carol",
        "--service",
        "batch",
        "--hosts",
        hosts,
        "--cache",
        "off",
        "--",
        *hook.python,
        str(script),
        "async",
    ]
    del env["HTTPTRACK_HOSTS"], env["HTTPTRACK_DB"]
    result = subprocess.run(command, env=hook.env(env), capture_output=True, text=True, timeout=120)
    # Where no hook is installed at all (the test reproduces this checkout's), `run` rightly
    # says so; one installed from another checkout is a hook all the same.
    installed = hook.installed_in is not None or importlib.util.find_spec("_httptrack_boot") is not None
    missing = (
        "httptrack run: the start-up hook (httptrack.pth) is not installed in this Python environment; "
        "reinstall httptrack (pip install httptrack) or call httptrack.install() in the program.\n"
    )
    assert (result.returncode, result.stderr) == (0, "" if installed else missing)
    assert_rows_match(
        rows_in(db),
        last_json_line(result.stdout),
        "openai",
        f"127.0.0.1:{servers['openai'].port}",
        user="carol",
        service="batch",
    )


def test_httptrack_run_passes_the_exit_status_on(hook: Hook, tmp_path: Path) -> None:
    script = program(tmp_path, "raise SystemExit(3)")
    command = [
        sys.executable,
        "-c",
        "from httptrack.cli import main; main()",
        "run",
        "--",
        *hook.python,
        str(script),
    ]
    result = subprocess.run(command, env=hook.env(child_env()), capture_output=True, timeout=120)
    assert result.returncode == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cache", "sometimes"], "Invalid value for '--cache'"),
        (["--hosts", "llm.internal"], "hosts: expected host[:port]=provider pairs, got 'llm.internal'"),
    ],
)
def test_httptrack_run_rejects_bad_options_before_running(
    tmp_path: Path, args: list[str], message: str
) -> None:
    marker = tmp_path / "ran"
    result = CliRunner().invoke(
        cli, ["run", *args, "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')"]
    )
    assert result.exit_code == 2
    assert message in result.output
    assert not marker.exists()


def test_httptrack_run_unknown_command() -> None:
    result = CliRunner().invoke(cli, ["run", "--", "httptrack-no-such-command-here"])
    assert result.exit_code == 127
    assert "httptrack-no-such-command-here: command not found" in result.output


# -- packaging ----------------------------------------------------------------------------------


def test_startup_hook_is_installed(hook: Hook) -> None:
    """Installing httptrack (`pip install .` or `pip install -e .`) puts httptrack.pth and its
    module at the top of site-packages. (Where it did not, the tests above ran with a
    reproduction of it.)"""
    if hook.installed_in is None and not installed_from_this_checkout():
        pytest.skip("httptrack is installed from another source tree: its hook is that tree's to test")
    assert hook.installed_in is not None, (
        "httptrack.pth is not installed in this environment: reinstall httptrack (pip install -e .)"
    )
    assert (hook.installed_in / "httptrack.pth").read_bytes() == PTH_SOURCE.read_bytes()
    assert (hook.installed_in / "_httptrack_boot.py").read_bytes() == BOOT_SOURCE.read_bytes()


def test_with_a_redis_cache_the_cache_folder_is_not_needed_and_programs_share_answers(
    hook: Hook, env: dict[str, str], tmp_path: Path, redis_url: str
) -> None:
    """HTTPTRACK=1 with HTTPTRACK_CACHE_URL: no warning about a cache folder it does not use,
    and a second run of the program is answered from Redis with the first run's answers."""
    script = program(tmp_path, PROGRAMS["ollama"])
    (tmp_path / "a-file").write_text("not a folder")
    env = {
        **env,
        "HTTPTRACK": "1",
        "HTTPTRACK_CACHE": "on",
        "HTTPTRACK_CACHE_DIR": str(tmp_path / "a-file" / "cache"),
        "HTTPTRACK_CACHE_URL": redis_url,
    }
    first = run_python(hook, script, "sync", env=env)
    second = run_python(hook, script, "sync", env=env)
    assert (first.returncode, first.stderr, second.returncode, second.stderr) == (0, "", 0, "")
    assert last_json_line(second.stdout) == last_json_line(first.stdout)
    rows = rows_in(tmp_path / "calls.db")
    assert [r["cached"] for r in rows] == [0, 0, 1, 1]
