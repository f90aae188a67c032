"""Limits held across processes: 4 processes × 4 threads, each with its own OpenAI client
through a tracking transport, all sharing one call log.

- a ``usd`` budget: the recorded costs never add up to more than it (every request states
  its max output), and what is left unused is less than one call's worst case;
- a ``requests`` limit admits exactly its quota in every window where calls were refused;
- a ``wait`` limit spreads calls over windows, none failing;
- each alert fires exactly once across all processes (the callbacks agree with the table);
- ``httptrack limits --json`` shows the counters.

Run on both engines: the counters in the SQLite log file, and in a Postgres log's database
(a real throwaway server: tests/pg_server.py), where the budget holds across machines.
"""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

PROCESSES = 4
THREADS = 4
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
#: Output dear, input cheap: the fake answers ~12 tokens (~$0.0012) of the 50 reserved (~$0.005).
PRICES = {"gpt-4o-mini": {"input_mtok": 1.0, "output_mtok": 100.0}}
BUDGET = 0.03
MAX_OUTPUT = 50
RATE = 10  # requests per second, service "rate"
WAIT = 6  # requests per second, service "wait", action wait
WAIT_CALLS = 1  # per thread
HAMMER_SECONDS = 1.2


def _limits() -> list[Any]:
    from httptrack import Limit

    return [
        Limit(usd=BUDGET, per="day", match={"service": "spend"}, alert_at=(0.5, 1.0)),
        Limit(requests=RATE, per="second", match={"service": "rate"}, alert_at=()),
        Limit(requests=WAIT, per="second", match={"service": "wait"}, action="wait", alert_at=()),
    ]


def _worker(db: str, index: int, barrier: Any, out: Any, alerts_path: str) -> None:
    import httpx2
    import openai

    import httptrack
    from httptrack._fake import mock_transport
    from httptrack.limits import flush_alerts
    from httptrack.limits._estimate import warm_up

    lock = threading.Lock()

    def on_alert(payload: dict[str, Any]) -> None:
        with lock, open(alerts_path, "a") as file:
            file.write(json.dumps({"process": index, **payload}) + "\n")

    transport = httptrack.TrackingTransport(
        mock_transport(httpx2), db=db, cache=False, prices=PRICES, limits=_limits(), on_alert=on_alert
    )
    client = openai.OpenAI(api_key="sk-test", max_retries=0, http_client=httpx2.Client(transport=transport))
    client.models.list()  # imports and first-call costs paid before the clock starts
    warm_up()  # price data and the token encoding, which the transport loads in the background
    result = {"spend_ok": 0, "spend_refused": 0, "rate_ok": 0, "rate_refused": 0, "wait_ok": 0, "errors": []}

    def call(service: str) -> None:
        with httptrack.attribute(service=service):
            client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, max_tokens=MAX_OUTPUT)

    def spend() -> None:
        for _ in range(400):  # bounded; the budget ends it long before
            try:
                call("spend")
            except openai.RateLimitError as exc:
                # Retry-After of a second: only calls in flight stand in the way, try again.
                # Longer: the budget is spent for the day.
                if int(exc.response.headers["retry-after"]) > 1:
                    with lock:
                        result["spend_refused"] += 1
                    return
                time.sleep(0.01)
            else:
                with lock:
                    result["spend_ok"] += 1

    def rate(deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                call("rate")
            except openai.RateLimitError:
                with lock:
                    result["rate_refused"] += 1
                time.sleep(0.02)
            else:
                with lock:
                    result["rate_ok"] += 1

    def wait() -> None:
        for _ in range(WAIT_CALLS):
            call("wait")
            with lock:
                result["wait_ok"] += 1

    def phase(target: Any, *args: Any) -> None:
        def guarded() -> None:
            try:
                target(*args)
            except Exception as exc:
                with lock:
                    result["errors"].append(repr(exc))

        barrier.wait(60)
        threads = [threading.Thread(target=guarded) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

    phase(spend)
    phase(rate, time.monotonic() + HAMMER_SECONDS)
    phase(wait)
    httptrack.flush(30)
    flush_alerts(30)
    out.put(result)


def _rows(db: Path | str, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    if isinstance(db, str):  # a postgresql:// URL
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(db, row_factory=dict_row) as pg:
            return pg.execute(sql.replace("%", "%%").replace("?", "%s"), params).fetchall()  # type: ignore[arg-type]
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


@pytest.mark.slow
def test_limits_hold_across_processes_and_threads(tmp_path: Path, log_db: Path | str) -> None:
    db = log_db
    alerts_path = tmp_path / "alerts.jsonl"
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    out = context.Queue()
    processes = [
        context.Process(target=_worker, args=(str(db), i, barrier, out, str(alerts_path)))
        for i in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    try:
        results = [out.get(timeout=90) for _ in processes]
    finally:
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.kill()
    assert [r["errors"] for r in results] == [[]] * PROCESSES

    # The budget: never exceeded, and not left with room for another call.
    spend = _rows(db, "SELECT * FROM calls WHERE service = 'spend'")
    ok = [r for r in spend if r["status"] == "success"]
    spent = sum(r["cost_usd"] for r in ok)
    assert len(ok) == sum(r["spend_ok"] for r in results) > 10
    assert spent <= BUDGET
    worst = 14 * 1e-6 + MAX_OUTPUT * 100e-6  # 14 input tokens, 50 output, at the prices above
    assert max(r["cost_usd"] for r in ok) < worst
    assert BUDGET - spent < worst
    assert all(
        r["cost_usd"] == 0 and r["error_code"] == "budget_exceeded" for r in spend if r["status"] == "error"
    )
    (budget,) = _rows(db, "SELECT * FROM limit_counters WHERE meter = 'usd/day match service=spend'")
    assert budget["used"] == pytest.approx(spent) and budget["calls"] == len(ok)

    # The rate limit: exactly its quota in every window where calls were turned away.
    windows = _rows(db, "SELECT * FROM limit_counters WHERE meter = 'requests/second match service=rate'")
    refused = {
        r["window_start"]
        for r in _rows(
            db,
            "SELECT window_start FROM limit_events WHERE kind = 'blocked' AND limit_name LIKE 'requests=10/%'",
        )
    }
    assert all(w["used"] <= RATE for w in windows)
    full = [
        w for w in windows if time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(w["window_start"])) in refused
    ]
    assert full and all(w["used"] == RATE for w in full)
    rate_ok = len(_rows(db, "SELECT id FROM calls WHERE service = 'rate' AND status = 'success'"))
    assert rate_ok == sum(w["used"] for w in windows) == sum(r["rate_ok"] for r in results)

    # Waiting: every call went through, never more than the quota in a window.
    waited = _rows(db, "SELECT * FROM calls WHERE service = 'wait'")
    total = PROCESSES * THREADS * WAIT_CALLS
    assert [r["status"] for r in waited] == ["success"] * total
    spread = _rows(db, "SELECT * FROM limit_counters WHERE meter = 'requests/second match service=wait'")
    assert all(w["used"] <= WAIT for w in spread) and sum(w["used"] for w in spread) == total
    assert len(spread) >= -(-total // WAIT)

    # Alerts: each fired once, by one process, as the events table says.
    fired = [json.loads(line) for line in alerts_path.read_text().splitlines()]
    assert sorted((a["kind"], a["fraction"]) for a in fired) == [("exhausted", None), ("threshold", 0.5)]
    table = _rows(db, "SELECT kind, fraction FROM limit_events WHERE kind != 'blocked'")
    assert sorted((r["kind"], r["fraction"]) for r in table) == [("exhausted", None), ("threshold", 0.5)]

    # The CLI shows the counters.
    from httptrack.cli import main

    shown = CliRunner().invoke(main, ["limits", "--db", str(db), "--json"])
    assert shown.exit_code == 0, shown.output
    counters = {c["limit"]: c for c in json.loads(shown.output)["counters"]}
    budget_shown = counters["usd=0.03/day match service=spend alert_at=0.5,1"]
    assert budget_shown["used"] == pytest.approx(spent) and budget_shown["reserved"] == 0
    assert budget_shown["limit_value"] == BUDGET
