"""Limits through the real SDKs, as their users meet them: a refused call raises the SDK's
own rate-limit error (nothing sent, one row), a budget is reserved and then settled with
the real cost (also for streams cut short), ``wait`` holds calls without blocking the event
loop, a cache hit is never limited, and the settings come from code or the environment."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anthropic
import groq
import httpx
import httpx2
import ollama
import openai
import pytest
from helpers import read_rows

import httptrack
from httptrack import Limit, Settings, SettingsError
from httptrack._fake import RecordedRequest, mock_transport
from httptrack.limits import flush_alerts

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
#: Output dear, input cheap: a reservation is mostly the stated maximum output.
PRICES = {
    "gpt-4o-mini": {"input_mtok": 1.0, "output_mtok": 100.0},
    "claude-haiku-4-5": {"input_mtok": 1.0, "output_mtok": 100.0},
}


def transport(lib: Any, db: Path, sent: list[RecordedRequest] | None = None, **options: Any) -> Any:
    options.setdefault("cache", False)
    options.setdefault("prices", PRICES)
    return httptrack.TrackingTransport(mock_transport(lib, record=sent), db=db, **options)


def async_transport(lib: Any, db: Path, sent: list[RecordedRequest] | None = None, **options: Any) -> Any:
    options.setdefault("cache", False)
    options.setdefault("prices", PRICES)
    return httptrack.AsyncTrackingTransport(mock_transport(lib, record=sent), db=db, **options)


def counters(db: Path) -> list[dict[str, Any]]:
    assert httptrack.flush(10)
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM limit_counters ORDER BY window_start, scope")]
    finally:
        conn.close()


def events(db: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM limit_events ORDER BY id")]
    finally:
        conn.close()


def reserved(db: Path) -> float:
    conn = sqlite3.connect(db)
    try:
        return float(conn.execute("SELECT total(amount) FROM limit_reservations").fetchone()[0])
    finally:
        conn.close()


# -- OpenAI ----------------------------------------------------------------------------------


def test_openai_budget_refusal_is_the_sdks_rate_limit_error(db: Path) -> None:
    sent: list[RecordedRequest] = []
    # 1000 output tokens at $100/M reserve ~$0.10 a call, which then costs ~$0.0012 (a short
    # answer): settled one by one (flush), two fit in $0.102, a third does not.
    limits = [Limit(usd=0.102, per="day", by="user")]
    client = openai.OpenAI(
        api_key="sk-test", http_client=httpx2.Client(transport=transport(httpx2, db, sent, limits=limits))
    )
    with httptrack.attribute(user="alice"):
        for _ in range(2):
            client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, max_tokens=1000)
            httptrack.flush()
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, max_tokens=1000)
    error = info.value
    assert error.status_code == 429 and error.code == "budget_exceeded" and error.type == "insufficient_quota"
    assert error.response.headers["x-should-retry"] == "false"  # the SDK did not retry ...
    assert len(sent) == 2  # ... and nothing was sent
    assert "httptrack limit usd=0.102/day by user reached for user=alice" in error.message
    assert "It resets at " in error.message and int(error.response.headers["retry-after"]) >= 1
    rows = read_rows(db)
    assert [r["status"] for r in rows] == ["success", "success", "error"]
    refused = rows[-1]
    assert (refused["http_status"], refused["error_code"], refused["cost_usd"], refused["outcome"]) == (
        429,
        "budget_exceeded",
        0.0,
        "limited",
    )
    assert refused["user"] == "alice" and "usd=0.102/day by user reached" in refused["error_message"]
    assert all(r["cost_usd"] < 0.0015 for r in rows[:2])
    # Settled: the counter holds the real costs, nothing stays reserved.
    (counter,) = counters(db)
    assert counter["used"] == pytest.approx(sum(r["cost_usd"] for r in rows))
    assert counter["scope"] == '{"user":"alice"}' and reserved(db) == 0.0
    # Bob's budget is his own.
    with httptrack.attribute(user="bob"):
        client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, max_tokens=1000)
    assert [e["kind"] for e in events(db)] == ["blocked", "exhausted"]


def test_openai_retries_a_rate_limit_after_its_retry_after(db: Path) -> None:
    """A requests limit's 429 has a Retry-After the SDK honours: its retry, a moment later,
    lands in the next window and goes through."""
    sent: list[RecordedRequest] = []
    limits = [Limit(requests=1, per=1)]
    client = openai.OpenAI(
        api_key="sk-test",
        max_retries=3,
        http_client=httpx2.Client(transport=transport(httpx2, db, sent, limits=limits)),
    )
    client.models.list()  # the SDK's and httptrack's first-call costs paid before the two calls
    time.sleep(1.01 - time.time() % 1)  # both start early in one window
    for _ in range(2):
        client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, max_tokens=5)
    rows = read_rows(db)
    assert len(sent) == 3
    assert [r["status"] for r in rows if r["outcome"] != "limited"] == ["success"] * 3
    limited = [r for r in rows if r["outcome"] == "limited"]
    assert limited and all(r["error_code"] == "rate_limited" for r in limited)
    headers = json.loads(limited[0]["response_headers"])
    assert "x-should-retry" not in headers and 1 <= int(headers["retry-after-ms"]) <= 1000


async def test_openai_async_refusal_and_stream_settlement(db: Path) -> None:
    sent: list[RecordedRequest] = []
    limits = [Limit(tokens=400, per="day"), Limit(requests=2, per="day", by="service")]
    http = httpx2.AsyncClient(transport=async_transport(httpx2, db, sent, limits=limits, service="bot"))
    client = openai.AsyncOpenAI(api_key="sk-test", http_client=http, max_retries=0)
    stream = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=QUESTION,
        max_tokens=50,
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = None
    async for chunk in stream:
        usage = chunk.usage or usage
    # Cut short: the app stops after the first chunk; the row's estimate is what is settled.
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=QUESTION, max_tokens=50, stream=True
    )
    async for _ in stream:
        break
    await stream.close()
    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, max_tokens=50)
    assert info.value.code == "rate_limited" and len(sent) == 2
    assert "requests=2/day by service reached for service=bot (2 of 2 requests)" in info.value.message
    rows = read_rows(db)
    assert [r["outcome"] for r in rows] == ["complete", "cut_short", "limited"]
    tokens = next(c for c in counters(db) if c["meter"] == "tokens/day")
    assert usage is not None and rows[0]["total_tokens"] == usage.total_tokens
    assert tokens["used"] == rows[0]["total_tokens"] + rows[1]["total_tokens"]
    assert reserved(db) == 0.0
    await http.aclose()


async def test_wait_spreads_calls_without_blocking_the_event_loop(db: Path) -> None:
    limits = [Limit(requests=2, per=0.5, action="wait")]
    http = httpx2.AsyncClient(transport=async_transport(httpx2, db, limits=limits))
    client = openai.AsyncOpenAI(api_key="sk-test", http_client=http, max_retries=0)
    ticks = 0
    done = asyncio.Event()

    async def heartbeat() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    beat = asyncio.create_task(heartbeat())
    results = await asyncio.gather(
        *(
            client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, max_tokens=5)
            for _ in range(6)
        )
    )
    done.set()
    await beat
    assert len(results) == 6
    rows = read_rows(db)
    assert [r["status"] for r in rows] == ["success"] * 6
    windows = counters(db)
    assert len(windows) >= 3 and all(w["used"] <= 2 for w in windows)
    assert sum(w["used"] for w in windows) == 6
    assert ticks >= 5  # the loop ran while calls waited (≥ 0.5 s of waiting)
    await http.aclose()


def test_a_cache_hit_is_neither_limited_nor_counted(db: Path, cache_dir: Path) -> None:
    limits = [Limit(requests=1, per="day")]
    http = httpx2.Client(transport=transport(httpx2, db, limits=limits, cache=True, cache_dir=cache_dir))
    client = openai.OpenAI(api_key="sk-test", http_client=http, max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, max_tokens=5)
    httptrack.flush()
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=QUESTION, max_tokens=5
    )
    assert raw.headers["x-httptrack-cache"] == "HIT"
    (counter,) = counters(db)
    assert counter["used"] == 1
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "new"}])


# -- Anthropic, Groq, Ollama, Gemini ---------------------------------------------------------


def test_anthropic_refusal_is_its_rate_limit_error(db: Path) -> None:
    sent: list[RecordedRequest] = []
    client = anthropic.Anthropic(
        api_key="sk-ant-test",
        http_client=httpx2.Client(transport=transport(httpx2, db, sent, limits="usd=0.011/day")),
    )
    # $0.01 of output reserved a call, ~$0.0015 spent: the second does not fit, settled or not.
    client.messages.create(model="claude-haiku-4-5", max_tokens=100, messages=QUESTION)
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(model="claude-haiku-4-5", max_tokens=100, messages=QUESTION)
    assert info.value.body["type"] == "error"  # type: ignore[index]
    assert info.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert "usd=0.011/day reached" in info.value.body["error"]["message"]  # type: ignore[index]
    assert len(sent) == 1  # x-should-retry: false, so no retries either
    assert [r["error_code"] for r in read_rows(db)] == [None, "budget_exceeded"]


async def test_anthropic_async_stream_is_settled(db: Path) -> None:
    limits = [Limit(usd=1, per="day", by="model")]
    http = httpx2.AsyncClient(transport=async_transport(httpx2, db, limits=limits))
    client = anthropic.AsyncAnthropic(api_key="sk-ant-test", http_client=http)
    async with client.messages.stream(model="claude-haiku-4-5", max_tokens=100, messages=QUESTION) as stream:
        message = await stream.get_final_message()
    (row,) = read_rows(db)
    assert row["input_tokens"] == message.usage.input_tokens
    (counter,) = counters(db)
    assert counter["scope"] == '{"model":"claude-haiku-4-5"}'
    assert counter["used"] == pytest.approx(row["cost_usd"]) and row["cost_usd"] > 0
    assert reserved(db) == 0.0
    await http.aclose()


def test_groq_refusal_is_its_rate_limit_error(db: Path) -> None:
    client = groq.Groq(
        api_key="gsk-test",
        max_retries=0,
        http_client=httpx.Client(transport=transport(httpx, db, limits="requests=0/minute")),
        base_url="https://api.groq.com",
    )
    with pytest.raises(groq.RateLimitError) as info:
        client.chat.completions.create(model="llama-3.1-8b-instant", messages=QUESTION)  # type: ignore[arg-type]
    assert info.value.body["error"]["code"] == "rate_limited"  # type: ignore[index]


def test_ollama_refusal_is_its_response_error(db: Path) -> None:
    client = ollama.Client(transport=transport(httpx, db, limits="requests=0/minute"))
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(model="llama3.2", messages=QUESTION)
    assert info.value.status_code == 429 and "httptrack limit requests=0/minute" in info.value.error


def test_gemini_shape(db: Path) -> None:
    client = httpx.Client(transport=transport(httpx, db, limits="tokens=10/minute match provider=gemini"))
    response = client.post(
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent",
        json={"contents": [{"parts": [{"text": "hi"}]}]},
    )
    assert response.status_code == 429
    error = response.json()["error"]
    assert (error["code"], error["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert "tokens=10/minute match provider=gemini" in error["message"]


# -- settings, environment, alerts ------------------------------------------------------------


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]

    def do_POST(self) -> None:
        self.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Hook", (_Hook,), {"received": received}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/secret", received
    server.shutdown()
    server.server_close()


def test_environment_limits_and_webhook(
    db: Path, monkeypatch: pytest.MonkeyPatch, hook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = hook
    monkeypatch.setenv("HTTPTRACK_LIMITS", "requests=2/day by user alert 0.5")
    monkeypatch.setenv("HTTPTRACK_ALERT_WEBHOOK", url)
    client = openai.OpenAI(
        api_key="sk-test", max_retries=0, http_client=httpx2.Client(transport=transport(httpx2, db))
    )
    with httptrack.attribute(user="carol"):
        client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, max_tokens=5)
        client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, max_tokens=5)
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, max_tokens=5)
    assert flush_alerts(30)
    assert [(p["kind"], p["fraction"], p["scope"]) for p in received] == [
        ("threshold", 0.5, {"user": "carol"}),
        ("exhausted", None, {"user": "carol"}),
    ]
    assert received[0]["text"].startswith("httptrack limit requests=2/day by user alert_at=0.5: 50% reached")
    assert url not in repr(Settings())  # the hook's URL is a secret


def test_on_alert_callback_gets_each_alert_once(db: Path) -> None:
    seen: list[dict[str, Any]] = []
    limit = Limit(usd=0.01, per="day", action="alert", alert_at=(0.1, 0.2, 0.9))
    settings = Settings(on_alert=seen.append, limits=[limit])
    client = openai.OpenAI(
        api_key="sk-test", http_client=httpx2.Client(transport=transport(httpx2, db, settings=settings))
    )
    for _ in range(4):
        client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, max_tokens=100)
    httptrack.flush()
    assert flush_alerts(10)
    cost = sum(r["cost_usd"] for r in read_rows(db))
    expected = [f for f in limit.alert_at if cost >= f * limit.amount]
    assert expected == [0.1, 0.2]  # four calls of ~$0.0015
    assert [a["fraction"] for a in seen] == expected  # once each; alert-only: nothing refused


def test_bad_limits_fail_when_the_transport_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPTRACK_LIMITS", "usd=5/fortnight")
    with pytest.raises(SettingsError, match="HTTPTRACK_LIMITS: 'usd=5/fortnight'"):
        httptrack.TrackingTransport()
    monkeypatch.delenv("HTTPTRACK_LIMITS")
    with pytest.raises(SettingsError, match="alert_webhook: expected an http"):
        httptrack.TrackingTransport(alert_webhook="slack")
    with pytest.raises(SettingsError, match="on_alert: expected a function"):
        Settings(on_alert="print")  # type: ignore[arg-type]


def test_no_limits_no_enforcer_and_import_stays_light(db: Path) -> None:
    assert httptrack.TrackingTransport(db=db)._tracker.enforcer is None
    assert (
        httptrack.TrackingTransport(db=db, limits="requests=1/day", enabled=False)._tracker.enforcer is None
    )
    assert httptrack.TrackingTransport(db=db, limits=[])._tracker.enforcer is None
    code = (
        "import sys, httptrack; assert 'httptrack.limits' not in sys.modules; "
        "httptrack.TrackingTransport(); assert 'httptrack.limits' not in sys.modules; "
        "assert httptrack.Limit(usd=1, per='day').usd == 1"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=Path(__file__).parents[2])


def test_alerts_fired_as_the_program_exits_are_delivered(tmp_path: Path) -> None:
    """The last call's settlement (the writer's exit flush) fires a threshold alert: the
    callback still gets it before the interpreter is gone."""
    out = tmp_path / "alerts.jsonl"
    script = f"""
import json, httpx2, openai, httptrack
from httptrack._fake import mock_transport

def on_alert(alert):
    with open({str(out)!r}, "a") as file:
        file.write(json.dumps(alert) + "\\n")

transport = httptrack.TrackingTransport(
    mock_transport(httpx2), db={str(tmp_path / "exit.db")!r}, cache=False, on_alert=on_alert,
    prices={{"gpt-4o-mini": {{"input_mtok": 1.0, "output_mtok": 100.0}}}},
    limits=[httptrack.Limit(usd=0.001, per="day", action="alert", alert_at=(0.5,))],
)
client = openai.OpenAI(api_key="sk-test", http_client=httpx2.Client(transport=transport))
client.chat.completions.create(model="gpt-4o-mini", messages={QUESTION!r}, max_tokens=50)
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120, cwd=Path(__file__).parents[2])
    (alert,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert (alert["kind"], alert["fraction"]) == ("threshold", 0.5)


def test_a_failed_stream_and_a_connection_error_are_settled(db: Path) -> None:
    """A stream that breaks off mid-way, and a call that gets no response at all: each
    reservation becomes what the row says (what arrived; nothing), none is left held."""
    limits = [Limit(usd=1, per="day"), Limit(tokens=10_000, per="day")]

    def unreachable(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused", request=request)

    client = openai.OpenAI(
        api_key="sk-test",
        max_retries=0,
        http_client=httpx2.Client(transport=transport(httpx2, db, limits=limits)),
    )
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=QUESTION,
        max_tokens=50,
        stream=True,
        extra_headers={"x-fake-behavior": "cut-stream"},
    )
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass
    down = openai.OpenAI(
        api_key="sk-test",
        max_retries=0,
        http_client=httpx2.Client(
            transport=httptrack.TrackingTransport(
                httpx2.MockTransport(unreachable), db=db, cache=False, limits=limits, prices=PRICES
            )
        ),
    )
    with pytest.raises(openai.APIConnectionError):
        down.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, max_tokens=50)
    rows = read_rows(db)
    assert [r["outcome"] for r in rows] == ["failed", "transport_error"]
    used = {c["meter"]: c["used"] for c in counters(db)}
    assert used["usd/day"] == pytest.approx(sum(r["cost_usd"] or 0 for r in rows)) and used["usd/day"] > 0
    assert used["tokens/day"] == sum(r["total_tokens"] or 0 for r in rows)
    assert reserved(db) == 0.0
