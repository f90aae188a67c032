"""Limits, piece by piece: ``Limit``, the grammar and files, windows, worst-case estimates,
the SQLite counters (atomic across threads and processes), the engine and the alerts."""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import pickle
import sqlite3
import threading
from calendar import timegm
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from httptrack import Settings
from httptrack._context import Attribution
from httptrack.limits import Limit, LimitError, coerce_limits, load_limits_file, parse_limit, parse_limits
from httptrack.limits import _alerts as alerts_module
from httptrack.limits._alerts import Notifier, flush_alerts
from httptrack.limits._counters import Alert, Charge, Settlement
from httptrack.limits._engine import Enforcer, Refused, Ticket
from httptrack.limits._estimate import DEFAULT_MAX_OUTPUT_TOKENS, read_call
from httptrack.limits._sqlite import SqliteCounters
from httptrack.providers import provider_by_name

# -- Limit ------------------------------------------------------------------------------------


def test_the_contracts_examples() -> None:
    budget = Limit(usd=5.0, per="day", by="user")
    assert (budget.metric, budget.amount, budget.usd, budget.by, budget.action) == (
        "usd",
        5.0,
        5.0,
        ("user",),
        "reject",
    )
    assert budget.alert_at == (0.8, 1.0)
    rate = Limit(requests=60, per="minute", by="service", action="wait")
    assert (rate.requests, rate.seconds, rate.action) == (60, 60.0, "wait")
    tokens = Limit(tokens=200_000, per="hour", by=("user", "model"), match={"provider": "openai"})
    assert tokens.tokens == 200_000 and tokens.by == ("user", "model")
    alert = Limit(usd=100, per="month", action="alert", alert_at=(0.5, 0.8, 1.0))
    assert not alert.blocks and alert.seconds is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"per": "day"}, "exactly one of usd=, requests=, tokens= (got none)"),
        ({"usd": 1, "requests": 2, "per": "day"}, "(got usd, requests)"),
        ({"usd": -1, "per": "day"}, "usd must be a number of at least 0"),
        ({"usd": "5", "per": "day"}, "usd must be a number"),
        ({"usd": math.inf, "per": "day"}, "usd must be a number of at least 0"),
        ({"requests": 1.5, "per": "day"}, "requests must be a whole number"),
        ({"requests": True, "per": "day"}, "requests must be a number"),
        ({"usd": 1, "per": "fortnight"}, "unknown period 'fortnight'"),
        ({"usd": 1, "per": 0}, "must last more than 0 seconds"),
        ({"usd": 1, "per": -5}, "must last more than 0 seconds"),
        ({"usd": 1, "per": "day", "by": "team"}, "by: unknown 'team'"),
        ({"usd": 1, "per": "day", "by": 5}, "by must be a name"),
        ({"usd": 1, "per": "day", "match": "openai"}, "match must be a mapping"),
        ({"usd": 1, "per": "day", "match": {"region": "eu"}}, "match: unknown field 'region'"),
        ({"usd": 1, "per": "day", "match": {"model": ""}}, "empty value"),
        ({"usd": 1, "per": "day", "action": "block"}, "action must be one of reject, wait, alert"),
        ({"usd": 1, "per": "day", "alert_at": 80}, "0.8 means 80%"),
        ({"usd": 1, "per": "day", "alert_at": (0,)}, "is not a fraction"),
        ({"usd": 1, "per": "day", "alert_at": "high"}, "alert_at must be fractions"),
        ({"requests": 1, "per": "day", "unpriced": "block"}, "unpriced applies to usd limits only"),
        ({"usd": 1, "per": "day", "unpriced": "maybe"}, "unpriced must be 'allow' or 'block'"),
        ({"usd": 1, "per": "day", "max_wait": 5}, "max_wait applies to action='wait' only"),
        ({"usd": 1, "per": "day", "action": "wait", "max_wait": -1}, "max_wait must be a number"),
    ],
)
def test_invalid_limits_are_clear_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(LimitError, match=None) as info:
        Limit(**kwargs)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)  # a SettingsError, as every bad setting


def test_limits_are_immutable_hashable_and_pickle() -> None:
    limit = Limit(tokens=1000, per=90, by=["model", "user"], match={"model": ["gpt-4*", "o3"]})
    with pytest.raises(AttributeError):
        limit.amount = 5  # type: ignore[misc]
    assert limit == Limit(tokens=1000, per="90s", by="user,model", match={"model": ["o3", "gpt-4*"]})
    assert len({limit, Limit(tokens=1000, per=90, by="user,model", match={"model": ["o3", "gpt-4*"]})}) == 1
    assert pickle.loads(pickle.dumps(limit)) == limit
    assert eval(repr(limit), {"Limit": Limit}) == limit


def test_periods_name_one_window_one_way() -> None:
    assert Limit(requests=1, per=60).per == "minute"
    assert Limit(requests=1, per="1h").per == "hour"
    assert Limit(requests=1, per="minutes").per == "minute"
    assert Limit(requests=1, per="30s").per == 30.0
    assert Limit(requests=1, per=604800).per == 604800.0  # not "week": that one starts on Monday
    assert Limit(requests=1, per=60).meter == Limit(requests=2, per="minute", action="wait").meter


def test_match_exact_values_and_wildcards() -> None:
    limit = Limit(usd=1, per="day", match={"provider": "openai", "model": ["gpt-4o*", "o3"]})
    assert limit.matches({"provider": "openai", "model": "gpt-4o-mini"})
    assert limit.matches({"provider": "openai", "model": "o3"})
    assert not limit.matches({"provider": "openai", "model": "o3-mini"})
    assert not limit.matches({"provider": "anthropic", "model": "o3"})
    assert not limit.matches({"provider": "openai", "model": "gpt-4.1"})  # '.' is literal
    assert not limit.matches({"provider": "openai"})  # no model: not matched, even by '*'
    assert not Limit(usd=1, per="day", match={"user": "*"}).matches({"user": None})
    assert Limit(usd=1, per="day", match={"user": "*"}).matches({"user": "a"})


# -- windows ----------------------------------------------------------------------------------


def _ts(*parts: int) -> float:
    return float(timegm((*parts, 0, 0, 0)[:6]))


def test_calendar_windows_in_utc() -> None:
    now = _ts(2026, 3, 18, 15, 42, 7)  # a Wednesday
    assert Limit(usd=1, per="day").window(now) == (_ts(2026, 3, 18, 0, 0, 0), _ts(2026, 3, 19, 0, 0, 0))
    assert Limit(usd=1, per="week").window(now) == (_ts(2026, 3, 16, 0, 0, 0), _ts(2026, 3, 23, 0, 0, 0))
    assert Limit(usd=1, per="month").window(now) == (_ts(2026, 3, 1, 0, 0, 0), _ts(2026, 4, 1, 0, 0, 0))
    december = _ts(2026, 12, 31, 23, 59, 59)
    assert Limit(usd=1, per="month").window(december) == (_ts(2026, 12, 1, 0, 0, 0), _ts(2027, 1, 1, 0, 0, 0))
    monday = _ts(2026, 3, 16, 0, 0, 0)
    assert Limit(usd=1, per="week").window(monday)[0] == monday
    assert Limit(usd=1, per="hour").window(now) == (_ts(2026, 3, 18, 15, 0, 0), _ts(2026, 3, 18, 16, 0, 0))


def test_numeric_windows_are_epoch_aligned() -> None:
    assert Limit(requests=1, per=30).window(1000.5) == (990.0, 1020.0)
    assert Limit(requests=1, per=30).window(1020.0) == (1020.0, 1050.0)
    assert Limit(requests=1, per="second").window(7.25) == (7.0, 8.0)


# -- grammar and files ------------------------------------------------------------------------


def test_grammar_reads_the_documented_examples() -> None:
    limits = parse_limits(
        "usd=5/day by user; requests=60/minute by service wait; "
        "tokens=200000/hour by user,model match provider=openai alert 0.5,0.8,1"
    )
    assert limits == [
        Limit(usd=5.0, per="day", by="user"),
        Limit(requests=60, per="minute", by="service", action="wait"),
        Limit(
            tokens=200_000,
            per="hour",
            by=("user", "model"),
            match={"provider": "openai"},
            alert_at=(0.5, 0.8, 1),
        ),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("usd=100/month alert", Limit(usd=100, per="month", action="alert")),
        ("usd = $2.50 / day  by user, model", Limit(usd=2.5, per="day", by=("user", "model"))),
        ("tokens=200k/hour", Limit(tokens=200_000, per="hour")),
        ("tokens=1.5m/day", Limit(tokens=1_500_000, per="day")),
        ("requests=1_000/5m wait max_wait=30s", Limit(requests=1000, per=300, action="wait", max_wait=30)),
        ("usd=1/day alert_at=none", Limit(usd=1, per="day", alert_at=())),
        ("usd=1/day alert 50%,90%", Limit(usd=1, per="day", alert_at=(0.5, 0.9))),
        ("usd=1/day alert alert_at=0.5", Limit(usd=1, per="day", action="alert", alert_at=(0.5,))),
        ("usd=1/day unpriced=block", Limit(usd=1, per="day", unpriced="block")),
        (
            "usd=1/week match model=gpt-4*|o3*,provider=openai by key",
            Limit(usd=1, per="week", by="key", match={"model": ["gpt-4*", "o3*"], "provider": "openai"}),
        ),
    ],
)
def test_grammar_forms(text: str, expected: Limit) -> None:
    assert parse_limit(text) == expected
    assert parse_limit(str(expected)) == expected  # the text form reads back


def test_grammar_comments_and_lines() -> None:
    text = "# team budgets\nusd=5/day by user   # each\n\nrequests=10/second; usd=50/day\n"
    assert [str(x) for x in parse_limits(text)] == ["usd=5/day by user", "requests=10/second", "usd=50/day"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("dollars=5/day", "a limit starts with usd=AMOUNT/PERIOD"),
        ("usd=5", "a limit starts with usd=AMOUNT/PERIOD"),
        ("usd=5/fortnight", "unknown period 'fortnight'"),
        ("usd=5/day by", "by needs a value"),
        ("usd=5/day by user by model", "by is given twice"),
        ("usd=5/day wait alert", "action is given twice"),
        ("usd=5/day colour=blue", "unknown option 'colour'"),
        ("usd=5/day soon", "unexpected 'soon'"),
        ("requests=2.5/day", "whole number"),
        ("usd=5/day match model", "match expects field=value pairs"),
    ],
)
def test_grammar_errors_name_the_clause(text: str, message: str) -> None:
    with pytest.raises(LimitError) as info:
        parse_limits(f"requests=1/second; {text}")
    assert message in str(info.value)
    assert repr(text.strip()) in str(info.value) or text.strip() in str(info.value)
    assert str(info.value).startswith("HTTPTRACK_LIMITS: ")


def test_limit_files(tmp_path: Path) -> None:
    expected = [Limit(usd=5, per="day", by="user"), Limit(requests=60, per="minute", action="wait")]
    as_json = tmp_path / "limits.json"
    as_json.write_text(json.dumps([{"usd": 5, "per": "day", "by": "user"}, "requests=60/minute wait"]))
    assert load_limits_file(as_json) == expected
    as_json.write_text(json.dumps({"limits": [x.as_dict() for x in expected]}))
    assert load_limits_file(as_json) == expected
    as_toml = tmp_path / "limits.toml"
    as_toml.write_text(
        '[[limits]]\nusd = 5\nper = "day"\nby = "user"\n\n[[limits]]\nrequests = 60\nper = "minute"\naction = "wait"\n'
    )
    assert load_limits_file(as_toml) == expected
    as_text = tmp_path / "limits.txt"
    as_text.write_text("usd=5/day by user\nrequests=60/minute wait\n")
    assert load_limits_file(as_text) == expected
    assert coerce_limits(f"@{as_toml}") == tuple(expected)
    assert coerce_limits(as_text) == tuple(expected)
    assert coerce_limits([expected[0], "requests=60/minute wait"]) == tuple(expected)
    assert coerce_limits(None) == ()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.json", "{", "not valid JSON"),
        ("a.toml", "limits = [", "not valid TOML"),
        ("a.json", '{"budgets": []}', "expected a 'limits' list"),
        ("a.json", '"usd=5/day"', "expected a list of limits"),
        ("a.json", '[{"usd": 5, "per": "day", "colour": "red"}]', "[0]: unknown key 'colour'"),
        ("a.json", '[{"usd": 5}]', "[0]: missing 'per'"),
        ("a.json", '[{"per": "day"}, 5]', "[0]: give exactly one of usd=, requests=, tokens="),
        ("a.json", '["usd=5/day", 5]', "[1]: expected a Limit"),
    ],
)
def test_limit_file_errors(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(LimitError) as info:
        load_limits_file(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_missing_limit_file(tmp_path: Path) -> None:
    with pytest.raises(LimitError, match="cannot be read"):
        coerce_limits(f"@{tmp_path / 'nope.toml'}")


# -- worst-case estimates -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "body", "expected"),
    [
        ("openai", {"max_tokens": 100}, (100, 1)),
        ("openai", {"max_completion_tokens": 300, "n": 3}, (300, 3)),
        ("openai", {"max_output_tokens": 50}, (50, 1)),  # Responses API
        ("openai", {"prompt": "x", "max_tokens": 20, "best_of": 4, "n": 2}, (20, 4)),
        ("groq", {"max_completion_tokens": 7}, (7, 1)),
        ("anthropic", {"max_tokens": 1024, "n": 3}, (1024, 1)),
        ("ollama", {"options": {"num_predict": 128}}, (128, 1)),
        ("ollama", {"options": {"num_predict": -1}}, (None, 1)),
        ("gemini", {"generationConfig": {"maxOutputTokens": 64, "candidateCount": 2}}, (64, 2)),
        ("gemini", {"generation_config": {"max_output_tokens": 64}}, (64, 1)),
        ("openai", {"max_tokens": True}, (None, 1)),
        ("openai", {"max_tokens": 0}, (None, 1)),
        ("openai", {}, (None, 1)),
    ],
)
def test_max_output_per_family(provider: str, body: dict[str, Any], expected: tuple[int | None, int]) -> None:
    assert provider_by_name(provider).max_output(body) == expected


def test_a_family_without_a_maximum_states_none() -> None:
    from httptrack.providers._base import Provider, shape_parser

    assert shape_parser("graphql").max_output({"max_tokens": 5}) == (None, 1)
    assert Provider().limit_error("no", "rate_limited", "requests") == {
        "error": {"message": "no", "type": "rate_limited", "code": "rate_limited"}
    }


def test_ollama_openai_paths_read_as_openai() -> None:
    estimate = read_call(
        provider_by_name("ollama"),
        "chat",
        "POST",
        "/v1/chat/completions",
        "",
        "localhost",
        json.dumps({"model": "llama3", "messages": [], "max_tokens": 9}).encode(),
    )
    assert estimate.stated_max_output == 9


PRICES = {"priced-model": {"input_mtok": 1.0, "output_mtok": 10.0}}


def _call(
    provider: str, path: str, body: dict[str, Any], operation: str = "chat", host: str = "api.openai.com"
) -> Any:
    return read_call(provider_by_name(provider), operation, "POST", path, "", host, json.dumps(body).encode())


def test_worst_case_usd_prices_counted_input_and_stated_output() -> None:
    body = {
        "model": "priced-model",
        "messages": [{"role": "user", "content": "hello there"}],
        "max_tokens": 1000,
    }
    estimate = _call("openai", "/v1/chat/completions", body)
    input_tokens = estimate.count_input()
    assert 5 < input_tokens < 30
    assert estimate.worst_tokens(DEFAULT_MAX_OUTPUT_TOKENS) == input_tokens + 1000
    assert estimate.worst_usd(DEFAULT_MAX_OUTPUT_TOKENS, PRICES) == pytest.approx(
        input_tokens * 1e-6 + 1000 * 10e-6
    )
    # No stated maximum: the documented default.
    del body["max_tokens"]
    estimate = _call("openai", "/v1/chat/completions", body)
    assert estimate.worst_tokens(777) == estimate.count_input() + 777


def test_worst_case_reads_gemini_model_from_the_path_and_knows_free_calls() -> None:
    estimate = _call(
        "gemini",
        "/v1beta/models/gemini-2.0-flash:generateContent",
        {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 10}},
        host="generativelanguage.googleapis.com",
    )
    assert estimate.model == "gemini-2.0-flash"
    assert estimate.stated_max_output == 10
    cost = estimate.worst_usd(DEFAULT_MAX_OUTPUT_TOKENS, None)
    assert cost is not None and cost > 0
    count = _call("anthropic", "/v1/messages/count_tokens", {"model": "claude-sonnet-4-5", "messages": []})
    assert count.worst_usd(DEFAULT_MAX_OUTPUT_TOKENS, None) == 0.0
    models = read_call(provider_by_name("openai"), "models", "GET", "/v1/models", "", "api.openai.com", b"")
    assert models.worst_usd(DEFAULT_MAX_OUTPUT_TOKENS, None) == 0.0
    assert models.worst_tokens(DEFAULT_MAX_OUTPUT_TOKENS) == 0


def test_worst_case_unknown_price_is_none_and_local_ollama_is_free() -> None:
    estimate = _call("openai", "/v1/chat/completions", {"model": "no-such-model-xyz", "messages": []})
    assert estimate.worst_usd(DEFAULT_MAX_OUTPUT_TOKENS, None) is None
    local = _call("ollama", "/api/chat", {"model": "llama3", "messages": []}, host="localhost")
    assert local.worst_usd(DEFAULT_MAX_OUTPUT_TOKENS, None) == 0.0
    embed = _call(
        "openai", "/v1/embeddings", {"model": "text-embedding-3-small", "input": "hello"}, "embeddings"
    )
    assert embed.worst_tokens(DEFAULT_MAX_OUTPUT_TOKENS) == embed.count_input()  # no output


# -- SQLite counters ----------------------------------------------------------------------------


@pytest.fixture
def counters(db: Path) -> Iterator[SqliteCounters]:
    store = SqliteCounters(db)
    yield store
    store.close()


def _charge(limit: Limit, amount: float, now: float, scope: str = "{}") -> Charge:
    start, end = limit.window(now)
    return Charge(limit, scope, start, end, amount)


NOW = _ts(2026, 3, 18, 12, 0, 0)


def test_reserve_admits_up_to_the_limit_and_reconcile_frees_the_rest(counters: SqliteCounters) -> None:
    budget = Limit(usd=1.0, per="day")
    first = counters.reserve("a", [_charge(budget, 0.6, NOW)], NOW)
    assert first.admitted and first.holds[0].amount == 0.6
    second = counters.reserve("b", [_charge(budget, 0.6, NOW)], NOW)
    assert not second.admitted
    (refusal,) = second.refusals
    assert (refusal.used, refusal.reserved) == (0.0, 0.6)
    assert refusal.settled_fits and not refusal.can_never_fit
    counters.reconcile([Settlement("a", first.holds, {"usd": 0.1})], NOW + 1)
    assert counters.reserve("b", [_charge(budget, 0.6, NOW)], NOW + 2).admitted
    assert counters.usage(NOW + 3) == []  # lists registered limits only
    counters.register([budget], NOW)
    (state,) = counters.usage(NOW + 3)
    # calls: settled ones (b is still in flight)
    assert (state.limit, state.used, state.reserved, state.calls) == ("usd=1/day", pytest.approx(0.1), 0.6, 1)


def test_a_new_window_starts_empty_and_old_holds_settle_into_their_own(counters: SqliteCounters) -> None:
    limit = Limit(tokens=100, per="hour")
    held = counters.reserve("a", [_charge(limit, 100, NOW)], NOW)
    assert not counters.reserve("b", [_charge(limit, 1, NOW)], NOW).admitted
    later = NOW + 3600
    assert counters.reserve("c", [_charge(limit, 100, later)], later).admitted
    counters.reconcile([Settlement("a", held.holds, {"tokens": 80})], later)
    counters.register([limit], later)
    (state,) = counters.usage(later)
    assert (state.used, state.reserved) == (0.0, 100.0)  # the new window: only c's reservation
    (past,) = counters.usage(NOW)
    assert (past.used, past.reserved) == (80.0, 0.0)


def test_requests_count_at_admission(counters: SqliteCounters) -> None:
    limit = Limit(requests=2, per="minute")
    verdicts = [counters.reserve(str(i), [_charge(limit, 1, NOW)], NOW) for i in range(3)]
    assert [v.admitted for v in verdicts] == [True, True, False]
    assert verdicts[0].holds == ()  # nothing to settle


def test_reservations_expire(db: Path) -> None:
    counters = SqliteCounters(db, reservation_ttl=10)
    limit = Limit(usd=1, per="day")
    assert counters.reserve("killed", [_charge(limit, 1.0, NOW)], NOW).admitted
    assert not counters.reserve("b", [_charge(limit, 1.0, NOW + 9)], NOW + 9).admitted
    assert counters.reserve("c", [_charge(limit, 1.0, NOW + 11)], NOW + 11).admitted
    counters.close()


def test_alert_limits_never_refuse_and_scopes_are_apart(counters: SqliteCounters) -> None:
    alert = Limit(usd=1, per="day", action="alert")
    assert counters.reserve("a", [_charge(alert, 5.0, NOW)], NOW).admitted
    budget = Limit(usd=1, per="day", by="user")
    assert counters.reserve("b", [_charge(budget, 1.0, NOW, '{"user":"a"}')], NOW).admitted
    assert counters.reserve("c", [_charge(budget, 1.0, NOW, '{"user":"b"}')], NOW).admitted
    assert not counters.reserve("d", [_charge(budget, 0.5, NOW, '{"user":"a"}')], NOW).admitted


def test_limits_on_one_meter_share_its_counter(counters: SqliteCounters) -> None:
    warn = Limit(usd=1, per="day", action="alert", alert_at=(0.5,))
    cap = Limit(usd=2, per="day")
    verdict = counters.reserve("a", [_charge(warn, 1.5, NOW), _charge(cap, 1.5, NOW)], NOW)
    assert verdict.admitted and len(verdict.holds) == 1  # one reservation, not two
    alerts = counters.reconcile([Settlement("a", verdict.holds, {"usd": 1.5})], NOW)
    assert [(a.kind, a.limit, a.fraction) for a in alerts] == [("threshold", warn, 0.5)]
    refused = counters.reserve("b", [_charge(warn, 1.0, NOW), _charge(cap, 1.0, NOW)], NOW)
    assert [r.charge.limit for r in refused.refusals] == [cap]


def test_threshold_alerts_fire_once_per_window_and_scope(counters: SqliteCounters) -> None:
    limit = Limit(requests=4, per="minute", alert_at=(0.5, 1.0))
    fired: list[Alert] = []
    for i in range(6):
        fired += counters.reserve(str(i), [_charge(limit, 1, NOW, '{"user":"u"}')], NOW).alerts
    assert [(a.fraction, a.used, dict(a.scope)) for a in fired] == [
        (0.5, 2.0, {"user": "u"}),
        (1.0, 4.0, {"user": "u"}),
    ]
    # Another scope, another window: their own alerts.
    assert counters.reserve("x", [_charge(limit, 2, NOW, '{"user":"v"}')], NOW).alerts[0].scope == {
        "user": "v"
    }
    assert len(counters.reserve("y", [_charge(limit, 2, NOW + 60, '{"user":"u"}')], NOW + 60).alerts) == 1
    assert [e.kind for e in counters.events()] == ["threshold"] * 4


def test_refusals_are_events_and_the_first_fires_exhausted(counters: SqliteCounters) -> None:
    limit = Limit(usd=1, per="day")
    counters.reserve("a", [_charge(limit, 1.0, NOW)], NOW)
    refusal = counters.reserve("b", [_charge(limit, 0.5, NOW)], NOW).refusals[0]
    first = counters.refused("b", refusal, NOW, "no")
    again = counters.refused("c", refusal, NOW, "no")
    assert [a.kind for a in first] == ["exhausted"] and again == ()
    assert "calls are being refused until 2026-03-19T00:00:00Z" in first[0].text
    kinds = [(e.kind, e.call_id) for e in counters.events()]
    assert kinds == [("blocked", "c"), ("exhausted", "b"), ("blocked", "b")]
    assert [e.call_id for e in counters.events(kind="blocked", limit=1)] == ["c"]
    silent = Limit(usd=1, per="week", alert_at=())
    counters.reserve("d", [_charge(silent, 1.0, NOW)], NOW)
    refusal = counters.reserve("e", [_charge(silent, 1.0, NOW)], NOW).refusals[0]
    assert counters.refused("e", refusal, NOW, "no") == ()


def test_a_step_waits_for_another_writer_then_gives_up(
    counters: SqliteCounters, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from httptrack.limits import _sqlite

    limit = Limit(requests=5, per="day")
    counters.reserve("first", [_charge(limit, 1, NOW)], NOW)  # tables made, connection open
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # the writer (or another process) holds the write lock
    releaser = threading.Timer(0.2, lambda: other.execute("COMMIT"))
    releaser.start()
    assert counters.reserve("waited", [_charge(limit, 1, NOW)], NOW).admitted  # waited, then went
    releaser.join()
    monkeypatch.setattr(_sqlite, "LOCK_TIMEOUT", 0.05)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            counters.reserve("stuck", [_charge(limit, 1, NOW)], NOW)
        enforcer = Enforcer([limit], db=db, counters=counters, clock=lambda: NOW)
        assert enforcer.check(_exchange(CHAT)) is None  # fails open
    finally:
        other.execute("COMMIT")
        other.close()
    from httptrack import fault_counts

    assert fault_counts().get("limits") == 1
    (state,) = (counters.register([limit], NOW), counters.usage(NOW))[1]
    assert state.used == 2  # "stuck" and the unlimited call never counted


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() only")
def test_a_forked_child_counts_with_its_own_connection(counters: SqliteCounters) -> None:
    limit = Limit(requests=2, per="day")
    assert counters.reserve("parent", [_charge(limit, 1, NOW)], NOW).admitted
    pid = os.fork()
    if pid == 0:  # the child: the parent's connection is left alone, a new one is made
        code = 1
        try:
            first = counters.reserve("child", [_charge(limit, 1, NOW)], NOW)
            second = counters.reserve("child-2", [_charge(limit, 1, NOW)], NOW)
            code = 0 if first.admitted and not second.admitted else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not counters.reserve("parent-2", [_charge(limit, 1, NOW)], NOW).admitted


def test_reading_a_database_without_limits(db: Path) -> None:
    sqlite3.connect(db).close()
    reader = SqliteCounters(db, readonly=True)
    assert reader.usage(NOW) == [] and reader.events() == []
    reader.close()


def test_the_key_salt_is_one_per_database(db: Path, tmp_path: Path) -> None:
    one, two = SqliteCounters(db), SqliteCounters(db)
    assert one.key_salt() == two.key_salt() and len(one.key_salt()) == 32
    assert SqliteCounters(tmp_path / "other.db").key_salt() != one.key_salt()


def test_threads_share_one_connection_safely(counters: SqliteCounters) -> None:
    limit = Limit(usd=10.0, per="day")
    admitted: list[bool] = []
    barrier = threading.Barrier(6)

    def worker(n: int) -> None:
        barrier.wait(30)
        for i in range(30):
            admitted.append(counters.reserve(f"{n}-{i}", [_charge(limit, 0.25, NOW)], NOW).admitted)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(admitted) == 180
    assert admitted.count(True) == 40  # exactly $10 of $0.25 reservations


def _process_reserve(db: str, n: int, out: Any, barrier: Any) -> None:
    store = SqliteCounters(db)
    budget = Limit(usd=10.0, per="day")
    count = Limit(requests=1000, per="day", action="alert", alert_at=(0.05, 0.1))
    store.key_salt()  # connected
    barrier.wait(30)
    admitted = fired = errors = 0
    for i in range(60):
        try:
            verdict = store.reserve(f"{n}-{i}", [_charge(budget, 0.1, NOW), _charge(count, 1, NOW)], NOW)
        except sqlite3.Error:
            errors += 1  # the engine would let such a call through unlimited
            continue
        admitted += verdict.admitted
        fired += len(verdict.alerts)
    out.put((admitted, fired, errors))


def test_processes_share_the_counters_atomically(db: Path) -> None:
    SqliteCounters(db).key_salt()  # tables made first
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    barrier = context.Barrier(4)
    processes = [context.Process(target=_process_reserve, args=(str(db), n, out, barrier)) for n in range(4)]
    for process in processes:
        process.start()
    results = [out.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(30)
    assert sum(r[2] for r in results) == 0
    assert sum(r[0] for r in results) == 100  # $10 in $0.10 reservations, of 240 asked
    assert sum(r[1] for r in results) == 2  # 50 and 100 requests: each alert once


# -- alerts ---------------------------------------------------------------------------------------


def _alert(**changes: Any) -> Alert:
    values: dict[str, Any] = {
        "kind": "threshold",
        "limit": Limit(usd=5, per="day", by="user"),
        "scope": {"user": "alice"},
        "used": 4.0,
        "reserved": 0.25,
        "fraction": 0.8,
        "window_start": _ts(2026, 3, 18, 0, 0, 0),
        "window_end": _ts(2026, 3, 19, 0, 0, 0),
        "at": NOW,
        "call_id": "01ABC",
    }
    values.update(changes)
    return Alert(**values)


def test_alert_payload_and_text() -> None:
    payload = _alert().payload()
    assert payload["text"] == (
        "httptrack limit usd=5/day by user: 80% reached for user=alice ($4.00 of $5.00; resets 2026-03-19T00:00:00Z)"
    )
    assert {
        k: payload[k] for k in ("kind", "limit", "metric", "scope", "used", "limit_value", "fraction")
    } == {
        "kind": "threshold",
        "limit": "usd=5/day by user",
        "metric": "usd",
        "scope": {"user": "alice"},
        "used": 4.0,
        "limit_value": 5.0,
        "fraction": 0.8,
    }
    assert payload["window"] == {"per": "day", "start": "2026-03-18T00:00:00Z", "end": "2026-03-19T00:00:00Z"}
    json.dumps(payload)


def test_alerts_go_to_the_logger_and_the_callback_off_thread(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[dict[str, Any], str]] = []
    notifier = Notifier(on_alert=lambda payload: seen.append((payload, threading.current_thread().name)))
    with caplog.at_level(logging.WARNING, logger="httptrack"):
        notifier.send([_alert()])
    assert "80% reached for user=alice" in caplog.text
    assert flush_alerts(10)
    assert [(p["kind"], name) for p, name in seen] == [("threshold", "httptrack-alerts")]


def test_a_failing_callback_is_a_fault_not_an_error() -> None:
    from httptrack import fault_counts

    def broken(payload: dict[str, Any]) -> None:
        raise RuntimeError("boom")

    Notifier(on_alert=broken).send([_alert()])
    assert flush_alerts(10)
    assert fault_counts().get("limit_alert") == 1


class _Hook(BaseHTTPRequestHandler):
    statuses: list[int] = []
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status = self.statuses.pop(0) if self.statuses else 200
        self.received.append(
            {"status": status, "json": json.loads(body), "type": self.headers["Content-Type"]}
        )
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[tuple[str, type[_Hook]]]:
    handler = type("Hook", (_Hook,), {"statuses": [], "received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/secret-token", handler
    server.shutdown()
    server.server_close()


def test_webhook_posts_json_with_text_and_retries(hook: tuple[str, type[_Hook]]) -> None:
    url, handler = hook
    handler.statuses = [503, 429]
    notifier = Notifier(webhook=url)
    notifier.backoff = (0.01,)
    notifier.send([_alert()])
    assert flush_alerts(30)
    assert [r["status"] for r in handler.received] == [503, 429, 200]
    assert handler.received[-1]["json"]["text"].startswith("httptrack limit usd=5/day by user: 80%")
    assert handler.received[-1]["type"] == "application/json"


def test_webhook_gives_up_without_leaking_its_url(
    hook: tuple[str, type[_Hook]], caplog: pytest.LogCaptureFixture
) -> None:
    url, handler = hook
    handler.statuses = [400]
    notifier = Notifier(webhook=url)
    notifier.backoff = (0.01,)
    with caplog.at_level(logging.WARNING, logger="httptrack"):
        notifier.send([_alert()])
        assert flush_alerts(30)
    assert [r["status"] for r in handler.received] == [400]  # a 4xx is not retried
    assert "could not be delivered to the webhook at 127.0.0.1 (HTTP 400)" in caplog.text
    assert "secret-token" not in caplog.text


def test_webhook_retries_a_refused_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def refuse(url: str, payload: dict[str, Any], *, timeout: float = 5) -> int:
        calls.append(url)
        raise ConnectionRefusedError

    monkeypatch.setattr(alerts_module, "post_json", refuse)
    notifier = Notifier(webhook="http://127.0.0.1:9/x")
    notifier.backoff = (0.0,)
    notifier.send([_alert()])
    assert flush_alerts(10)
    assert len(calls) == alerts_module.ATTEMPTS


# -- the engine -----------------------------------------------------------------------------------


def _exchange(
    body: dict[str, Any],
    *,
    call_id: str = "call",
    user: str | None = "alice",
    provider: str = "openai",
    path: str = "/v1/chat/completions",
    headers: list[tuple[bytes, bytes]] | None = None,
    settings: Settings | None = None,
) -> Any:
    return SimpleNamespace(
        call_id=call_id,
        provider=provider_by_name(provider),
        operation="chat",
        method="POST",
        path=path,
        query="",
        host="api.openai.com",
        request_headers=headers or [(b"authorization", b"Bearer sk-one")],
        request_body=json.dumps(body).encode(),
        attribution=Attribution(user=user),
        settings=settings or Settings(),
    )


CHAT = {"model": "priced-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_engine_reserves_refuses_and_settles(counters: SqliteCounters) -> None:
    enforcer = Enforcer(
        [Limit(usd=0.0025, per="day", by="user")],
        db="unused",
        counters=counters,
        prices=PRICES,
        clock=lambda: NOW,
    )
    ticket = enforcer.check(_exchange(CHAT, call_id="a"))
    assert isinstance(ticket, Ticket)
    (hold,) = ticket.holds
    assert 0.001 < hold.amount < 0.0012  # ~10 input tokens at $1/M + 100 output at $10/M
    assert isinstance(enforcer.check(_exchange(CHAT, call_id="b")), Ticket)
    refused = enforcer.check(_exchange(CHAT, call_id="c"))
    assert isinstance(refused, Refused)
    assert refused.error_code == "budget_exceeded" and refused.scope == {"user": "alice"}
    assert refused.message.startswith(
        "httptrack limit usd=0.0025/day by user reached for user=alice ($0.00 + $0.002016 in flight of $0.0025;"
    )
    assert refused.retry_after == 1.0  # only calls in flight stand in the way
    assert "resets at 2026-03-19T00:00:00Z (in 12h00m)" in refused.message
    # Bob has his own budget.
    assert isinstance(enforcer.check(_exchange(CHAT, call_id="d", user="bob")), Ticket)
    ticket.settle(0.0001, 20)
    enforcer.flush()
    assert isinstance(enforcer.check(_exchange(CHAT, call_id="e")), Ticket)
    assert [e.kind for e in counters.events()] == ["exhausted", "blocked"]


def test_engine_passes_calls_no_limit_matches(counters: SqliteCounters) -> None:
    enforcer = Enforcer(
        [Limit(requests=0, per="day", match={"provider": "anthropic"})], db="unused", counters=counters
    )
    assert enforcer.check(_exchange(CHAT)) is None
    assert counters.usage(NOW) == []  # nothing written for calls no limit counts


def test_engine_waits_for_the_next_window(counters: SqliteCounters) -> None:
    clock = _Clock(NOW + 59.5)
    enforcer = Enforcer(
        [Limit(requests=2, per="minute", action="wait")],
        db="unused",
        counters=counters,
        clock=clock,
        sleep=clock.sleep,
    )
    results = [enforcer.check(_exchange(CHAT, call_id=str(i))) for i in range(5)]
    assert results == [None] * 5  # all admitted (requests need no settling)
    assert clock.slept == [pytest.approx(0.505), pytest.approx(60.0)]


def test_engine_wait_gives_up_after_max_wait_and_on_calls_that_never_fit(counters: SqliteCounters) -> None:
    clock = _Clock(NOW)
    enforcer = Enforcer(
        [Limit(requests=1, per="hour", action="wait", max_wait=60)],
        db="unused",
        counters=counters,
        clock=clock,
        sleep=clock.sleep,
    )
    assert enforcer.check(_exchange(CHAT, call_id="a")) is None
    refused = enforcer.check(_exchange(CHAT, call_id="b"))
    assert isinstance(refused, Refused) and refused.error_code == "rate_limited" and clock.slept == []
    tokens = Enforcer(
        [Limit(tokens=10, per="hour", action="wait")], db="unused", counters=counters, clock=clock
    )
    assert isinstance(tokens.check(_exchange(CHAT, call_id="c")), Refused)  # 100+ tokens never fit in 10


def test_engine_unpriced_policy(counters: SqliteCounters, caplog: pytest.LogCaptureFixture) -> None:
    body = {**CHAT, "model": "no-such-model-xyz"}
    allow = Enforcer([Limit(usd=1, per="day")], db="unused", counters=counters)
    with caplog.at_level(logging.WARNING, logger="httptrack"):
        ticket = allow.check(_exchange(body, call_id="a"))
        allow.check(_exchange(body, call_id="b"))
    assert isinstance(ticket, Ticket) and ticket.holds[0].amount == 0.0
    assert caplog.text.count("no price is known for model 'no-such-model-xyz'") == 1
    block = Enforcer([Limit(usd=1, per="week", unpriced="block")], db="unused", counters=counters)
    refused = block.check(_exchange(body, call_id="c"))
    assert isinstance(refused, Refused) and "cannot price" in refused.message
    assert counters.events()[0].kind == "blocked" and counters.events()[0].used is None


def test_engine_scopes_by_key_never_store_the_key(counters: SqliteCounters, db: Path) -> None:
    enforcer = Enforcer([Limit(requests=1, per="day", by="key")], db="unused", counters=counters)
    one = [(b"Authorization", b"Bearer sk-secret-one")]
    assert enforcer.check(_exchange(CHAT, call_id="a", headers=one)) is None
    assert isinstance(enforcer.check(_exchange(CHAT, call_id="b", headers=one)), Refused)
    assert enforcer.check(_exchange(CHAT, call_id="c", headers=[(b"x-api-key", b"sk-secret-two")])) is None
    scopes = {
        json.loads(r[0])["key"] for r in sqlite3.connect(db).execute("SELECT scope FROM limit_counters")
    }
    assert len(scopes) == 2 and all(s.startswith("key-") and len(s) == 20 for s in scopes)
    dump = "\n".join(sqlite3.connect(db).iterdump())
    assert "sk-secret" not in dump
    assert dump.count("key-") >= 2


def test_engine_fails_open(tmp_path: Path) -> None:
    from httptrack import fault_counts

    (tmp_path / "dir.db").mkdir()
    enforcer = Enforcer([Limit(requests=0, per="day")], db=tmp_path / "dir.db")
    assert enforcer.check(_exchange(CHAT)) is None  # the database cannot be opened: unlimited
    assert fault_counts().get("limits") == 1
