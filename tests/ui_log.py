"""A varied call log made the way users make one: the real SDKs (openai, anthropic, groq,
ollama) through ``TrackingTransport`` to the built-in fake provider, with attribution,
sessions, system prompts and tool calls, streams, reasoning and embeddings, httptrack's
cache (hits), and failures (429, 500, 529, a stream cut by the network, one the app
abandoned). Spread over ten days with one day left empty. Shared by the browser tests of
the datasette pages and by ``scripts/ui_screenshots.py``."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anthropic
import groq
import httpx
import httpx2
import ollama
import openai

import httptrack
from httptrack._fake import mock_handler

#: Days (before today) on which calls are placed; day 4 has none, so charts show a zero.
DAYS = (9, 8, 7, 6, 5, 3, 2, 1, 0)
EMPTY_DAY = 4

SYSTEM = "You are a concise assistant for an online umbrella shop. Answer in two sentences."
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@dataclass
class UiLog:
    """What was recorded, by role: the ids the tests look up."""

    db: Path
    ids: dict[str, str] = field(default_factory=dict)
    all_ids: list[str] = field(default_factory=list)


#: OpenAI answers a request for ``gpt-4o`` with a dated model, as the real API does.
DATED = {"gpt-4o": "gpt-4o-2024-08-06"}


def _openai_like(lib: Any) -> Any:
    """The fake provider, except that a request naming the tool ``get_weather`` whose last
    message is the user's gets an OpenAI reply calling that tool (the fake answers text),
    and a successful answer (not streamed) of a ``DATED`` model names the dated one."""
    fake = mock_handler(lib)

    def handler(request: Any) -> Any:
        body = bytes(request.content)
        data = json.loads(body) if body.startswith(b"{") else {}
        calls_tool = b'"get_weather"' in body and request.url.path.endswith("/chat/completions")
        if calls_tool and data["messages"][-1]["role"] == "user":
            return lib.Response(200, json=_weather_call(DATED.get(data["model"], data["model"])))
        response = fake(request)
        if data.get("model") in DATED and response.status_code == 200 and not data.get("stream"):
            answer = json.loads(response.read())
            answer["model"] = DATED[data["model"]]
            return lib.Response(200, json=answer, headers={"x-request-id": "req_fake0001"})
        return response

    return handler


def behave(how: str) -> dict[str, str]:
    """The fake provider's header for a failure (``rate-limited``, ``server-error`` ...)."""
    return {"x-fake-behavior": how}


def _weather_call(model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-tool0001",
        "object": "chat.completion",
        "created": 1735689600,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_w1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Lyon"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 61, "completion_tokens": 17, "total_tokens": 78},
    }


@contextmanager
def _clients(db: Path, cache_dir: Path) -> Iterator[dict[str, Any]]:
    options: dict[str, Any] = {"db": db, "cache": True, "cache_dir": cache_dir}

    def http2() -> httpx2.Client:
        return httpx2.Client(
            transport=httptrack.TrackingTransport(httpx2.MockTransport(_openai_like(httpx2)), **options)
        )

    clients = {
        "openai": openai.OpenAI(api_key="sk-test-not-real", http_client=http2(), max_retries=0),
        "anthropic": anthropic.Anthropic(api_key="sk-ant-test-not-real", http_client=http2(), max_retries=0),
        "groq": groq.Groq(
            api_key="gsk-test-not-real",
            http_client=httpx.Client(
                transport=httptrack.TrackingTransport(httpx.MockTransport(mock_handler(httpx)), **options)
            ),
            max_retries=0,
        ),
        "ollama": ollama.Client(
            host="http://localhost:11434",
            transport=httptrack.TrackingTransport(httpx.MockTransport(mock_handler(httpx)), **options),
        ),
    }
    try:
        yield clients
    finally:
        for name in ("openai", "anthropic", "groq"):
            clients[name].close()
        clients["ollama"]._client.close()


def record_ui_log(db: Path, cache_dir: Path) -> UiLog:
    """Record the log (about 60 calls) into ``db``; returns the ids of the notable calls."""
    log = UiLog(db)
    with _clients(db, cache_dir) as c:
        oai, claude, grq, olla = c["openai"], c["anthropic"], c["groq"], c["ollama"]

        def keep(role: str) -> None:
            assert httptrack.flush(10)
            log.ids[role] = _newest_id(db)

        # Background traffic: who asks what, with which model, most days.
        questions = [
            "Which umbrella survives a storm at sea?",
            "Summarise this customer review in one line",
            "Draft a polite reply about a late delivery",
            "Translate 'waterproof' into French",
        ]
        for i in range(28):
            user = ("alice", "bob", "carol", "dave")[i % 4]
            service = ("summarizer", "support", "support", "agent")[i % 4]
            question = f"{questions[i % 4]} (ticket {1000 + i})"
            with httptrack.attribute(user=user, service=service):
                if i % 4 == 0:
                    oai.chat.completions.create(
                        model="gpt-4o-mini", messages=[{"role": "user", "content": question}]
                    )
                elif i % 4 == 1:
                    claude.messages.create(
                        model="claude-haiku-4-5",
                        max_tokens=200,
                        system=SYSTEM,
                        messages=[{"role": "user", "content": question}],
                    )
                elif i % 4 == 2:
                    grq.chat.completions.create(
                        model="llama-3.1-8b-instant", messages=[{"role": "user", "content": question}]
                    )
                else:
                    oai.chat.completions.create(
                        model="gpt-4o", messages=[{"role": "user", "content": question}]
                    )

        # A conversation of two turns in one session, with a system prompt.
        with httptrack.attribute(user="alice", service="summarizer", session="chat-42"):
            first = [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": "What is the capital of France?"},
            ]
            answer = oai.chat.completions.create(model="gpt-4o-mini", messages=first)
            keep("first_turn")
            oai.chat.completions.create(
                model="gpt-4o-mini",
                messages=[
                    *first,
                    {"role": "assistant", "content": answer.choices[0].message.content},
                    {"role": "user", "content": "And does it rain much there in spring?"},
                ],
            )
            keep("second_turn")
            # The same question again: answered by httptrack's cache, nothing sent.
            oai.chat.completions.create(model="gpt-4o-mini", messages=first)
            keep("cache_hit")

        # An agent: the model calls a tool, the app answers with the tool's result.
        with httptrack.attribute(user="dave", service="agent", session="agent-7", run="nightly"):
            asked = [{"role": "user", "content": "Should I take an umbrella in Lyon today?"}]
            call = oai.chat.completions.create(model="gpt-4o", messages=asked, tools=[WEATHER_TOOL])
            keep("tool_call")
            tool_call = call.choices[0].message.tool_calls[0]
            oai.chat.completions.create(
                model="gpt-4o",
                tools=[WEATHER_TOOL],
                messages=[
                    *asked,
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": tool_call.id,
                                "type": "function",
                                "function": {
                                    "name": "get_weather",
                                    "arguments": tool_call.function.arguments,
                                },
                            }
                        ],
                    },
                    {
                        "role": "tool",
                        "tool_call_id": tool_call.id,
                        "content": '{"rain_mm": 6, "wind_kmh": 30}',
                    },
                ],
            )
            keep("tool_result")

        # Streams, reasoning, a prompt cache, embeddings, a local model.
        with httptrack.attribute(user="bob", service="support"):
            stream = oai.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "Explain our returns policy for broken umbrellas"}],
                stream=True,
                stream_options={"include_usage": True},
                extra_headers={"x-fake-delay": "0.004"},
            )
            for _ in stream:
                pass
            keep("stream")
            with claude.messages.stream(
                model="claude-sonnet-4-6",
                max_tokens=300,
                system=[{"type": "text", "text": SYSTEM * 40, "cache_control": {"type": "ephemeral"}}],
                messages=[{"role": "user", "content": "Which of our umbrellas is best for wind?"}],
                extra_headers={"x-fake-cache": "read"},
            ) as reply:
                reply.get_final_message()
            keep("prompt_cache")
        with httptrack.attribute(user="alice", service="research"):
            oai.chat.completions.create(
                model="o3-mini",
                messages=[{"role": "user", "content": "Plan a study of umbrella sales by season"}],
            )
            keep("reasoning")
        with httptrack.attribute(user="carol", service="indexer"):
            oai.embeddings.create(model="text-embedding-3-small", input=["storm umbrella", "golf umbrella"])
            olla.embed(model="nomic-embed-text", input=["Paris", "Lyon"])
            for _ in olla.chat(
                model="llama3.2",
                messages=[{"role": "user", "content": "Name three umbrella colours"}],
                stream=True,
            ):
                pass
            keep("local")

        # Failures: as the SDK raises them to the app.
        hello = [{"role": "user", "content": "Hello?"}]
        with httptrack.attribute(user="bob", service="support"):
            with contextlib.suppress(openai.RateLimitError):
                oai.chat.completions.create(
                    model="gpt-4o", messages=hello, extra_headers=behave("rate-limited")
                )
            keep("rate_limited")
            with contextlib.suppress(anthropic.APIStatusError):
                claude.messages.create(
                    model="claude-sonnet-4-6",
                    max_tokens=100,
                    messages=hello,
                    extra_headers=behave("overloaded"),
                )
            keep("overloaded")
        with httptrack.attribute(user="alice", service="summarizer"):
            summarise = [{"role": "user", "content": "Summarise the complaints of this week"}]
            with contextlib.suppress(openai.InternalServerError):
                oai.chat.completions.create(
                    model="gpt-4o-mini", messages=summarise, extra_headers=behave("server-error")
                )
            keep("server_error")
            with contextlib.suppress(openai.APIConnectionError):
                for _ in oai.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": "Write a long story about umbrellas"}],
                    stream=True,
                    extra_headers=behave("cut-stream"),
                ):
                    pass
            keep("cut_by_network")
            stream = oai.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "List every umbrella we sell"}],
                stream=True,
            )
            next(iter(stream))
            stream.close()
            keep("abandoned")
        # A model only ever failing: it must still show on the dashboard.
        with httptrack.attribute(user="erin", service="batch"):
            for _ in range(2):
                with contextlib.suppress(openai.RateLimitError):
                    oai.chat.completions.create(
                        model="gpt-4.1-nano",
                        messages=[{"role": "user", "content": "ping"}],
                        extra_headers=behave("rate-limited"),
                    )
            keep("error_only_model")
    assert httptrack.flush(10)
    log.all_ids = _ids(db)
    spread_over_days(db, log)
    return log


def _newest_id(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return str(conn.execute("SELECT max(id) FROM calls").fetchone()[0])
    finally:
        conn.close()


def _ids(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT id FROM calls ORDER BY id")]
    finally:
        conn.close()


def spread_over_days(db: Path, log: UiLog, *, now: datetime | None = None) -> None:
    """Place the background calls on the days of ``DAYS`` ago (none ``EMPTY_DAY`` days ago,
    give or take the hours of the day), keeping their order; the notable calls come last,
    within the last two hours, in the order made."""
    from recorded_log import age_calls

    now = now or datetime.now(UTC).replace(microsecond=0)
    notable = set(log.ids.values())
    background = [i for i in log.all_ids if i not in notable and i < min(notable)]
    ages: dict[str, timedelta] = {}
    for n, call_id in enumerate(background):
        day = DAYS[n * len(DAYS) // len(background)]
        ages[call_id] = timedelta(days=day, hours=n % 5, minutes=17 * n % 60)
    rest = [i for i in log.all_ids if i not in ages]
    for n, call_id in enumerate(rest):
        ages[call_id] = timedelta(minutes=2 * (len(rest) - n))
    age_calls(db, ages, now=now)
