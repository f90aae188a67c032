"""The datasette pages as a person sees them: a real browser (Debian's ``chromium``, driven
by Playwright with the system binary; nothing is downloaded) on a 1,280×800 window, over
``httptrack ui``'s datasette served on 127.0.0.1, on the varied log of ``ui_log.py``.

Without ``/usr/bin/chromium`` (or the ``playwright`` package) these tests skip, except in CI
(``CI`` set), where a missing browser fails them: CI installs it."""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from httptrack._datasette._dashboard import BREAKDOWNS, TOP
from httptrack._format import count, duration, money, percent
from httptrack.cli import main
from httptrack.log._schema import COLUMN_NAMES

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WINDOW = {"width": 1280, "height": 800}


def _browser_missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"{reason}: CI must install it (apt-get install chromium; pip install playwright)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def server(ui_log: Any) -> Iterator[str]:
    """``httptrack ui``'s datasette over the log, on a free port of 127.0.0.1."""
    import uvicorn

    from httptrack.cli._ui import make_datasette

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = make_datasette(ui_log.db).app()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "datasette did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        _browser_missing(f"no {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _browser_missing("the playwright package is not installed (pip install playwright)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport=WINDOW)
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


def open_page(page: Any, url: str) -> None:
    response = page.goto(url)
    assert response is not None and response.status == 200, url


def no_horizontal_scroll(page: Any) -> None:
    widths = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth,"
        " document.body.scrollWidth]"
    )
    assert widths[0] <= widths[1] and widths[2] <= widths[1], widths


def on_first_screen(page: Any, selector: str) -> str:
    """The text of ``selector``, checked to be visible within the window without scrolling."""
    element = page.locator(selector).first
    assert element.is_visible(), selector
    box = element.bounding_box()
    assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= WINDOW["height"], (selector, box)
    assert box["x"] >= 0 and box["x"] + box["width"] <= WINDOW["width"], (selector, box)
    return str(element.inner_text())


def row(db: Path, call_id: str) -> dict[str, Any]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return dict(conn.execute("SELECT * FROM calls WHERE id = ?", [call_id]).fetchone())
    finally:
        conn.close()


# -- the list of calls ------------------------------------------------------------------------


def test_calls_list_fits_the_window_one_line_per_call(page: Any, server: str, ui_log: Any) -> None:
    open_page(page, f"{server}/log/calls")
    no_horizontal_scroll(page)
    listed = page.locator("#calls-list tbody tr")
    assert listed.count() == len(ui_log.all_ids)  # 50 a page; the whole log fits on one
    table = page.evaluate(
        "() => { const t = document.querySelector('#calls-list');"
        " return [t.scrollWidth, t.clientWidth, t.getBoundingClientRect().right]; }"
    )
    assert table[0] <= table[1] and table[2] <= WINDOW["width"], table
    heights = page.evaluate(
        "() => [...document.querySelectorAll('#calls-list tbody tr')].map(r => r.getBoundingClientRect().height)"
    )
    line = page.evaluate(
        "() => parseFloat(getComputedStyle(document.querySelector('#calls-list td')).lineHeight)"
    )
    assert max(heights) < 2 * line, (max(heights), line)  # one line per call, never wrapped
    # The first calls are on the first screen, under the facets and the search box.
    on_first_screen(page, "#calls-list tbody tr:nth-child(3)")
    on_first_screen(page, "input[name=_search]")
    assert page.locator(".facet-results .facet-info").count() == 6


def test_each_listed_call_links_to_its_record(page: Any, server: str, ui_log: Any) -> None:
    open_page(page, f"{server}/log/calls")
    links = page.eval_on_selector_all(
        "#calls-list tbody tr", "rows => rows.map(r => [r.dataset.callId, r.querySelector('a').href])"
    )
    assert sorted(call for call, _ in links) == sorted(ui_log.all_ids)
    assert all(href == f"{server}/log/calls/{call}" for call, href in links)
    failed = ui_log.ids["rate_limited"]
    status = page.locator(f'#calls-list tr[data-call-id="{failed}"] td:nth-child(4)')
    assert status.inner_text() == "error 429"
    page.locator(f'#calls-list tr[data-call-id="{failed}"] a').first.click()
    page.wait_for_url(f"{server}/log/calls/{failed}")
    assert "429" in page.locator("#status").inner_text()


def test_list_keeps_facets_search_and_every_column(page: Any, server: str, ui_log: Any) -> None:
    open_page(page, f"{server}/log/calls")
    page.fill("input[name=_search]", "umbrella storm")
    page.locator("input[name=_search]").press("Enter")
    page.wait_for_url(re.compile(r".*_search=umbrella.*"))
    found = page.eval_on_selector_all("#calls-list tbody tr", "rows => rows.map(r => r.dataset.callId)")
    texts = {i: (row(ui_log.db, i)["request_body"] or "") for i in found}
    assert found and all("umbrella" in t.lower() and "storm" in t.lower() for t in texts.values())
    page.locator("#facet-user a", has_text="alice").first.click()
    page.wait_for_url(re.compile(r".*user=alice.*"))
    users = page.eval_on_selector_all(
        "#calls-list tbody tr td:nth-child(8)", "cells => cells.map(c => c.innerText)"
    )
    assert users and set(users) == {"alice"}
    # Every column, one click away.
    page.get_by_text("Show every column").click()
    page.wait_for_url(re.compile(r".*_all_columns=1.*"))
    headers = page.eval_on_selector_all("table.rows-and-columns th", "ths => ths.map(t => t.dataset.column)")
    assert [h for h in headers if h in COLUMN_NAMES] == list(COLUMN_NAMES)


# -- one call ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "shown"),
    [
        (
            "rate_limited",
            ["Failed", "HTTP 429 Too Many Requests", "rate_limit_exceeded", "Rate limit reached"],
        ),
        ("overloaded", ["Failed", "HTTP 529", "overloaded_error", "Overloaded"]),
        ("server_error", ["Failed", "HTTP 500 Internal Server Error", "server_error"]),
        ("cut_by_network", ["Failed", "RemoteProtocolError", "broke off while it was being read"]),
        ("abandoned", ["Cut short", "stopped reading before the end"]),
    ],
)
def test_a_failed_call_shows_its_status_and_error_first(
    page: Any, server: str, ui_log: Any, role: str, shown: list[str]
) -> None:
    open_page(page, f"{server}/log/calls/{ui_log.ids[role]}")
    no_horizontal_scroll(page)
    banner = on_first_screen(page, "#status")
    for text in shown:
        assert text in banner, (text, banner)
    message = row(ui_log.db, ui_log.ids[role])["error_message"]
    if message:
        assert " ".join(message.split()) in " ".join(banner.split())


def test_record_reads_top_to_bottom(page: Any, server: str, ui_log: Any) -> None:
    call = ui_log.ids["second_turn"]
    data = row(ui_log.db, call)
    open_page(page, f"{server}/log/calls/{call}")
    no_horizontal_scroll(page)
    assert "Succeeded" in on_first_screen(page, "#status")
    facts = on_first_screen(page, "#call")
    assert (
        "gpt-4o-mini" in facts and "openai (api.openai.com)" in facts and "POST /v1/chat/completions" in facts
    )
    who = on_first_screen(page, "#attribution")
    assert "alice" in who and "summarizer" in who and "chat-42" in who
    tokens = on_first_screen(page, "#tokens")
    assert (
        f"input\t{count(data['input_tokens'])}" in tokens
        and f"output\t{count(data['output_tokens'])}" in tokens
    )
    cost = on_first_screen(page, "#cost")
    assert money(data["cost_usd"]) in cost and "per 1M" in cost and "Priced as OpenAI gpt-4o-mini" in cost
    assert duration(data["latency_ms"]) in on_first_screen(page, "#time")
    # The conversation, in order, then the answer.
    roles = page.eval_on_selector_all(".ht-messages .ht-role", "els => els.map(e => e.innerText)")
    assert roles == ["SYSTEM", "USER", "ASSISTANT", "USER"]
    assert "And does it rain much there in spring?" in page.locator(".ht-messages").inner_text()
    assert data["response_text"] and data["response_text"] in page.locator(".ht-answer").inner_text()
    # The rest of its session, linked.
    session = page.eval_on_selector_all("#session ~ table.ht-related a", "links => links.map(a => a.href)")
    first = ui_log.ids["first_turn"]
    assert f"{server}/log/calls/{first}" in session
    # Raw bodies, folded, the request pretty-printed.
    page.get_by_text("Request body", exact=True).click()
    pretty = json.dumps(json.loads(data["request_body"]), indent=2, ensure_ascii=False)
    assert pretty in page.locator(".ht-raw details[open] pre").first.inner_text()
    assert "sk-test-not-real" not in page.content()


def test_record_of_tool_calls_and_a_cache_hit(page: Any, server: str, ui_log: Any) -> None:
    open_page(page, f"{server}/log/calls/{ui_log.ids['tool_call']}")
    answer = page.locator(".ht-answer").inner_text()
    assert "get_weather" in answer and '"city": "Lyon"' in answer
    open_page(page, f"{server}/log/calls/{ui_log.ids['tool_result']}")
    conversation = page.locator(".ht-messages").inner_text()
    assert "calls tool get_weather" in conversation and '"rain_mm": 6' in conversation
    assert "Tools offered: get_weather" in page.locator(".ht").inner_text()
    hit = ui_log.ids["cache_hit"]
    open_page(page, f"{server}/log/calls/{hit}")
    assert "Answered from httptrack's cache" in on_first_screen(page, "#status")
    cache = on_first_screen(page, "#cache")
    assert "hit: served by httptrack, not sent; saved $" in cache
    page.locator("#same-key-link").click()
    page.wait_for_url(re.compile(r".*cache_key=.*"))
    same = page.eval_on_selector_all("#calls-list tbody tr", "rows => rows.map(r => r.dataset.callId)")
    assert sorted(same) == sorted([ui_log.ids["first_turn"], hit])


# -- the dashboard ----------------------------------------------------------------------------


def stats_json(db: Path, *args: str) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["stats", "--db", str(db), "--json", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


@pytest.mark.parametrize("days", [7, 30, 0])
def test_every_dashboard_number_matches_httptrack_stats(
    page: Any, server: str, ui_log: Any, days: int
) -> None:
    open_page(page, f"{server}/-/httptrack?days={days}")
    no_horizontal_scroll(page)
    command = page.locator(".ht-command").inner_text().split()
    assert command[:2] == ["httptrack", "stats"]
    since = command[command.index("--since") + 1 :][:1] if "--since" in command else []
    assert bool(since) == bool(days)
    totals = stats_json(ui_log.db, *(["--since", since[0]] if since else []), "--by", "none")["totals"]
    figures = dict(
        page.eval_on_selector_all(
            "#figures .httptrack-figure",
            "els => els.map(e => [e.dataset.figure, e.querySelector('.value').innerText])",
        )
    )
    assert figures == {
        "calls": count(totals["calls"]),
        "cost": money(totals["cost_usd"] or 0),
        "saved": money(totals["cost_saved_usd"] or 0),
        "tokens": count(totals["total_tokens"]),
        "errors": f"{count(totals['errors'])} ({percent(totals['error_rate'])})",
        "latency": f"{duration(totals['p50_latency_ms'])} / {duration(totals['p95_latency_ms'])}",
    }
    for by in BREAKDOWNS:
        open_page(page, f"{server}/-/httptrack?days={days}&by={by}")
        groups = stats_json(ui_log.db, *(["--since", since[0]] if since else []), "--by", by)["groups"]
        shown = page.eval_on_selector_all(
            "#breakdown-table tbody tr",
            "rows => rows.map(r => [...r.querySelectorAll('td')].map(c => c.innerText))",
        )
        named = {cells[0]: cells for cells in shown}
        rest = []
        for g in groups:
            label = "(none)" if g[by] is None else str(g[by])
            if label not in named:
                rest.append(g)
                continue
            assert named[label][1:9] == [
                count(g["calls"]),
                count(g["errors"]),
                percent(g["error_rate"]),
                count(g["cache_hits"]),
                count(g["input_tokens"]),
                count(g["output_tokens"]),
                money(g["cost_usd"]),
                percent((g["cost_usd"] or 0) / totals["cost_usd"]) if totals["cost_usd"] else "-",
            ], (by, label)
            assert named[label][9:] == [duration(g["p50_latency_ms"]), duration(g["p95_latency_ms"])]
        # Nothing hidden: the groups failing most are named (here every one that fails);
        # the rest add up in one line.
        assert not [g for g in rest if g["errors"]]
        if rest:
            (other,) = [cells for label, cells in named.items() if label.endswith(" others")]
            assert other[0] == f"{len(rest)} others" and len(named) >= TOP + 1
            assert other[1] == count(sum(g["calls"] for g in rest))
        if len(groups) > 1:
            assert named["total"][1:3] == [count(totals["calls"]), count(totals["errors"])]
    # The charts' figures (each bar's title) too: cost per day, and per user.
    open_page(page, f"{server}/-/httptrack?days={days}")
    titles = page.eval_on_selector_all(".httptrack-chart rect title", "ts => ts.map(t => t.textContent)")
    window = ["--since", since[0]] if since else []
    for g in stats_json(ui_log.db, *window, "--by", "day")["groups"]:
        assert f"{g['day']}: {money(g['cost_usd'] or 0.0)}" in titles
    for g in stats_json(ui_log.db, *window, "--by", "user")["groups"][:TOP]:
        assert f"{g['user'] or '(none)'}, cost: {money(g['cost_usd'] or 0.0)}" in titles or not g["cost_usd"]


def test_dashboard_shows_failures_and_zero_days(page: Any, server: str, ui_log: Any) -> None:
    open_page(page, f"{server}/-/httptrack?days=30")
    errors = page.eval_on_selector_all(
        "#errors + table tbody tr a", "links => links.map(a => a.href.split('/').pop())"
    )
    failed = {r["id"] for r in map(lambda i: row(ui_log.db, i), ui_log.all_ids) if r["status"] == "error"}
    assert set(errors) == failed  # fewer than ten: all of them, each linking to its call
    # Per model asked for: gpt-4o answered as a dated model, its 429 still counts against it.
    by_model = {
        cells[0]: cells
        for cells in page.eval_on_selector_all(
            "#breakdown-table tbody tr",
            "rows => rows.map(r => [...r.querySelectorAll('td')].map(c => c.innerText))",
        )
    }
    gpt4o = [r for r in map(lambda i: row(ui_log.db, i), ui_log.all_ids) if r["model"] == "gpt-4o"]
    assert by_model["gpt-4o"][1:4] == [
        str(len(gpt4o)),
        "1",
        percent(round(1 / len(gpt4o), 4)),
    ]
    assert by_model["gpt-4.1-nano"][2:4] == ["2", "100.0%"]  # a model that only failed, shown
    # Every day of the period is a bar, the empty ones drawn at zero.
    days = {r["started_at"][:10] for r in map(lambda i: row(ui_log.db, i), ui_log.all_ids)}
    bars = page.eval_on_selector_all(
        ".httptrack-chart rect[data-value]",
        "rects => rects.map(r => [r.querySelector('title').textContent, r.dataset.value, r.getAttribute('height')])",
    )
    assert len(bars) == 30
    empty = [(title, value, height) for title, value, height in bars if title.split(":")[0] not in days]
    assert empty and all(value == "0.0" and float(height) > 0 for _, value, height in empty)
    # Errors are never drawn in green.
    legend = page.locator("svg", has_text="errors").first.inner_html()
    assert "#009E73" not in legend


def test_landing_pages_lead_to_the_dashboard_and_the_calls(page: Any, server: str) -> None:
    open_page(page, f"{server}/")
    no_horizontal_scroll(page)
    on_first_screen(page, "a.httptrack-dashboard")
    on_first_screen(page, "a.httptrack-calls")
    page.locator("a.httptrack-dashboard").click()
    page.wait_for_url(re.compile(r".*/-/httptrack\?db=log$"))
    open_page(page, f"{server}/")
    page.locator("a.httptrack-calls").click()
    page.wait_for_url(re.compile(r".*/log/calls$"))
    open_page(page, f"{server}/log")
    on_first_screen(page, "a.httptrack-dashboard")
    tables = page.eval_on_selector_all("h3 a, h2 a", "links => links.map(a => a.innerText)")
    assert "calls" in tables
    assert not [
        t for t in tables if t.startswith(("calls_rollup", "httptrack_state", "calls_fts", "_sqlite"))
    ]
