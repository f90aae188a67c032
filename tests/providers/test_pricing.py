"""Pricing: the fast path equals genai-prices to the last bit, overrides, price files, edge cases."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import genai_prices
import pytest
from genai_prices.types import ModelInfo, ModelPrice
from hypothesis import given, settings
from hypothesis import strategies as st

from httptrack._errors import PriceFileError, SettingsError
from httptrack._settings import Settings
from httptrack._usage import Usage
from httptrack.pricing import PriceResult, _lookup, load_price_file, price_usage, warm_up
from httptrack.providers import registered_providers

#: httptrack provider id -> the genai-prices provider its family is priced as.
PROVIDER_IDS = {name: family.price_provider for name, family in registered_providers().items()}

AT = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]

# (httptrack provider, model as the API reports it, genai-prices provider id)
MODELS = [
    ("openai", "gpt-4o-2024-08-06", "openai"),
    ("openai", "gpt-4o-mini-2024-07-18", "openai"),
    ("openai", "gpt-5.5-2026-04-23", "openai"),  # tiered at 272k input tokens
    ("openai", "text-embedding-3-small", "openai"),
    ("anthropic", "claude-sonnet-4-5-20250929", "anthropic"),  # tiered at 200k
    ("anthropic", "claude-haiku-4-5-20251001", "anthropic"),
    ("anthropic", "claude-3-opus-20240229", "anthropic"),
    ("gemini", "gemini-2.5-flash", "google"),
    ("gemini", "gemini-2.5-pro", "google"),  # tiered at 200k
    ("mistral", "mistral-large-latest", "mistral"),
    ("mistral", "mistral-small-latest", "mistral"),
    ("groq", "llama-3.3-70b-versatile", "groq"),
    ("groq", "openai/gpt-oss-120b", "groq"),
    ("deepseek", "deepseek-chat", "deepseek"),  # off-peak prices by time of day
    ("xai", "grok-4", "x-ai"),
    ("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo", "together"),
    ("openrouter", "openai/gpt-4o", "openrouter"),
    ("azure_openai", "gpt-4o", "azure"),
]

# (input incl. cache, output incl. reasoning, cache reads, cache writes, reasoning)
USAGES = [
    (13, 29, 0, 0, 0),
    (1220, 5, 1217, 0, None),
    (1000, 10, 0, 200, None),
    (5000, 700, 1000, 500, 300),
    (0, 0, 0, 0, 0),
    (2, None, None, None, None),  # embeddings: no output figure
    (199_999, 1000, 0, 0, None),
    (200_000, 1000, 50_000, 0, None),  # a tier applies only *above* its start
    (200_001, 1000, 50_000, 10_000, None),
    (272_001, 4000, 100_000, 0, 2000),
    (1_500_000, 20_000, 900_000, 100_000, 5000),
]


def genai_cost(gp_provider: str, model: str, usage: Usage, at: datetime = AT, **kwargs: Any) -> float:
    """genai-prices' own answer, for the four figures both sides share."""
    gusage = genai_prices.Usage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cached_input_tokens,
        cache_write_tokens=usage.cache_write_tokens,
    )
    calc = genai_prices.calc_price(
        gusage, model, provider_id=gp_provider, genai_request_timestamp=at, **kwargs
    )
    return float(calc.total_price)


@pytest.fixture
def no_genai_calc(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if genai-prices' own (slow) calculation runs: the fast path must handle it."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("slow path used")

    warm_up()
    monkeypatch.setattr(ModelInfo, "calc_price", refuse)
    monkeypatch.setattr(ModelPrice, "calc_price", refuse)


def usage_of(inp: int, out: int | None, cr: int | None, cw: int | None, rs: int | None) -> Usage:
    return Usage(
        input_tokens=inp,
        output_tokens=out,
        cached_input_tokens=cr,
        cache_write_tokens=cw,
        reasoning_tokens=rs,
    )


# --------------------------------------------------------------------------- parity with genai-prices


@pytest.mark.parametrize(("provider", "model", "gp_provider"), MODELS)
def test_fast_path_equals_genai_prices(provider: str, model: str, gp_provider: str) -> None:
    for figures in USAGES:
        usage = usage_of(*figures)
        expected = genai_cost(gp_provider, model, usage)
        result = price_usage(provider, model, usage, at=AT)
        assert result.cost_usd == expected, (model, figures, result)


def test_fast_path_does_not_call_genai_prices(no_genai_calc: None) -> None:
    for provider, model, _ in MODELS:
        for figures in USAGES:
            result = price_usage(provider, model, usage_of(*figures), at=AT)
            assert result.cost_usd is not None, (model, figures, result)


PROPERTY_MODELS = [(p, m, g) for p, m, g in MODELS if p != "azure_openai"] + [
    ("anthropic", "claude-opus-4-6", "anthropic"),
    ("gemini", "gemini-2.0-flash", "google"),
    ("perplexity", "sonar", "perplexity"),  # a per-request price
]


@st.composite
def usages(draw: st.DrawFn) -> Usage:
    inp = draw(st.integers(0, 2_000_000))
    cr = draw(st.integers(0, inp))
    cw = draw(st.integers(0, inp - cr))
    out = draw(st.integers(0, 200_000))
    return Usage(
        input_tokens=inp,
        output_tokens=out,
        cached_input_tokens=draw(st.sampled_from([cr, 0, None])),
        cache_write_tokens=draw(st.sampled_from([cw, 0, None])),
        reasoning_tokens=draw(st.one_of(st.none(), st.integers(0, out))),
    )


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(PROPERTY_MODELS), usages(), st.datetimes(datetime(2024, 1, 1), datetime(2027, 6, 1)))
def test_fast_path_equals_genai_prices_property(
    model: tuple[str, str, str], usage: Usage, at: datetime
) -> None:
    provider, name, gp_provider = model
    at = at.replace(tzinfo=UTC)
    assert price_usage(provider, name, usage, at=at).cost_usd == genai_cost(gp_provider, name, usage, at)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["claude-sonnet-4-5", "gpt-4o", "gemini-2.5-flash"]),
    usages(),
    st.dictionaries(
        st.sampled_from(["cache_write_1h_tokens", "web_searches", "input_audio_tokens"]), st.integers(0, 50)
    ),
)
def test_slow_path_with_extra_keys_equals_genai_prices(
    model: str, usage: Usage, extra: dict[str, int]
) -> None:
    provider = {"claude-sonnet-4-5": "anthropic", "gpt-4o": "openai", "gemini-2.5-flash": "gemini"}[model]
    # Extra keys are breakdowns inside the totals, as genai-prices wants them.
    if "cache_write_1h_tokens" in extra:
        extra["cache_write_1h_tokens"] = min(extra["cache_write_1h_tokens"], usage.cache_write_tokens or 0)
    usage.extra = extra
    if "input_audio_tokens" in usage.extra:
        plain = (usage.input_tokens or 0) - (usage.cached_input_tokens or 0) - (usage.cache_write_tokens or 0)
        usage.extra["input_audio_tokens"] = min(usage.extra["input_audio_tokens"], plain)
    values = {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cached_input_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "output_reasoning_tokens": usage.reasoning_tokens,
        **usage.extra,
    }
    if usage.extra.get("cache_write_1h_tokens") and usage.cache_write_tokens is None:
        return  # not a normalized usage: cache writes are reported whenever a breakdown is
    gp = {"anthropic": "anthropic", "openai": "openai", "gemini": "google"}[provider]
    try:
        calc = genai_prices.calc_price(
            genai_prices.Usage(**values), model, provider_id=gp, genai_request_timestamp=AT
        )
    except ValueError:
        assert price_usage(provider, model, usage, at=AT).cost_usd is None
        return
    assert price_usage(provider, model, usage, at=AT).cost_usd == float(calc.total_price)


def test_every_bundled_model_matches_genai_prices() -> None:
    warm_up()
    from genai_prices.data import providers

    reverse = {gp: ours for ours, gp in PROVIDER_IDS.items() if gp}
    usage = Usage(
        input_tokens=250_000, output_tokens=3_000, cached_input_tokens=20_000, cache_write_tokens=1_000
    )
    checked = 0
    for provider in providers:
        for model in provider.models:
            try:
                expected = genai_cost(provider.id, model.id, usage)
            except LookupError:
                continue  # genai-prices cannot find this id itself (an alias-less data entry)
            result = price_usage(reverse.get(provider.id, provider.id), model.id, usage, at=AT)
            assert result.cost_usd == expected, (provider.id, model.id, result)
            checked += 1
    assert checked > 2000


# --------------------------------------------------------------------------- hand-checked figures


def test_anthropic_cache_read_sample() -> None:
    usage = Usage(input_tokens=1220, output_tokens=5, cached_input_tokens=1217, cache_write_tokens=0)
    result = price_usage("anthropic", "claude-sonnet-4-5-20250929", usage, at=AT)
    # 3 uncached x $3/M + 1217 cache reads x $0.30/M + 5 x $15/M
    assert result == PriceResult(0.0004491, None, "claude-sonnet-4-5", "anthropic")


def test_cached_tokens_are_priced_once_at_the_cache_price() -> None:
    cached = price_usage("anthropic", "claude-sonnet-4-5", Usage(1220, 5, cached_input_tokens=1217), at=AT)
    uncached = price_usage("anthropic", "claude-sonnet-4-5", Usage(1220, 5), at=AT)
    assert uncached.cost_usd == 0.003735  # 1220 x $3/M + 5 x $15/M
    assert cached.cost_usd == 0.0004491  # not 1220 x $3/M + 1217 x $0.30/M + ...


def test_anthropic_cache_write() -> None:
    usage = Usage(input_tokens=1000, output_tokens=10, cache_write_tokens=200)
    # 800 x $3/M + 200 x $3.75/M + 10 x $15/M
    assert price_usage("anthropic", "claude-sonnet-4-5-20250929", usage, at=AT).cost_usd == 0.0033


@pytest.mark.parametrize(
    ("provider", "model", "usage", "cost"),
    [
        ("openai", "gpt-4o-2024-08-06", Usage(13, 29, 0, None, 0), 0.0003225),  # 13 x 2.5 + 29 x 10
        ("openai", "gpt-4o-mini-2024-07-18", Usage(78, 9, 0, None, 0), 0.0000171),  # 78 x .15 + 9 x .6
        ("openai", "text-embedding-3-small", Usage(2, None), 0.00000004),  # 2 x .02
        ("openai", "gpt-5.5-2026-04-23", Usage(11, 5, 0, None, 0), 0.000205),  # 11 x 5 + 5 x 30
        ("anthropic", "claude-3-opus-20240229", Usage(13, 35, 0, 0), 0.00282),  # 13 x 15 + 35 x 75
        ("anthropic", "claude-haiku-4-5-20251001", Usage(10, 4, 0, 0), 0.00003),  # 10 x 1 + 4 x 5
        # 227 x .3 + 330 cached x .03 + 143 output (70 of them thoughts) x 2.5
        ("gemini", "gemini-2.5-flash", Usage(557, 143, 330, None, 70), 0.0004355),
        ("gemini", "gemini-2.5-pro", Usage(200_000, 1000), 0.26),  # at the threshold: base rate
        ("gemini", "gemini-2.5-pro", Usage(200_001, 1000), 0.5150025),  # above: every token at tier rate
        ("anthropic", "claude-sonnet-4-5", Usage(250_000, 1000), 1.5225),  # 250k x 6 + 1000 x 22.5
        ("mistral", "mistral-large-latest", Usage(1000, 100), 0.0026),  # 1000 x 2 + 100 x 6
        ("groq", "llama-3.3-70b-versatile", Usage(1000, 100), 0.000669),  # 1000 x .59 + 100 x .79
        ("perplexity", "sonar", Usage(1000, 100), 0.0131),  # 1000 x 1 + 100 x 1, + $12 per 1000 requests
    ],
)
def test_hand_checked_figures(provider: str, model: str, usage: Usage, cost: float) -> None:
    assert price_usage(provider, model, usage, at=AT).cost_usd == cost


def test_priced_model_and_provider_name_what_genai_prices_matched() -> None:
    result = price_usage("gemini", "gemini-2.5-flash", Usage(10, 10), at=AT)
    assert (result.priced_model, result.priced_provider, result.reason) == (
        "gemini-2.5-flash",
        "google",
        None,
    )
    assert price_usage("openai", "gpt-4o-2024-08-06", Usage(1, 1)).priced_model == "gpt-4o"


def test_time_of_day_and_start_date_prices_follow_at() -> None:
    usage = Usage(input_tokens=10_000, output_tokens=1_000, cached_input_tokens=2_000)
    peak = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    off_peak = datetime(2026, 11, 27, 20, 0, tzinfo=UTC)
    costs = {at: price_usage("deepseek", "deepseek-chat", usage, at=at).cost_usd for at in (peak, off_peak)}
    assert costs[peak] == genai_cost("deepseek", "deepseek-chat", usage, peak) == 0.0034  # peak: .27/.07/1.1
    assert costs[off_peak] == genai_cost("deepseek", "deepseek-chat", usage, off_peak) == 0.0017
    # deepseek-v4-flash changes price on 2026-08-17 and has time-of-day windows on top.
    for at in (datetime(2026, 8, 16, 12), datetime(2026, 8, 17, 12), datetime(2026, 9, 1, 2, tzinfo=UTC)):
        expected = genai_cost("deepseek", "deepseek-v4-flash", usage, at)
        assert price_usage("deepseek", "deepseek-v4-flash", usage, at=at).cost_usd == expected
    assert price_usage("deepseek", "deepseek-chat", usage).cost_usd is not None  # at defaults to now


# --------------------------------------------------------------------------- reasons


def test_unknown_model_is_none_with_a_reason_naming_it() -> None:
    result = price_usage("openai", "my-finetune-xyz", Usage(10, 10))
    assert result.cost_usd is None
    assert result.reason is not None and "my-finetune-xyz" in result.reason and "openai" in result.reason


def test_unknown_model_is_looked_up_once() -> None:
    price_usage("openai", "never-heard-of-it", Usage(10, 10))
    before = _lookup.resolve.cache_info()
    for _ in range(100):
        assert price_usage("openai", "never-heard-of-it", Usage(10, 10)).cost_usd is None
    assert _lookup.resolve.cache_info().misses == before.misses


def test_no_model_and_no_usage() -> None:
    assert price_usage("openai", None, Usage(10, 10)) == PriceResult(None, "no model")
    assert price_usage("openai", "", Usage(10, 10)).reason == "no model"
    assert price_usage("openai", "gpt-4o", Usage()) == PriceResult(None, "no usage reported")


def test_generic_provider_is_matched_by_model_name() -> None:
    result = price_usage("generic", "gpt-4o", Usage(13, 29), host="llm.internal:8000")
    assert result.cost_usd == 0.0003225
    assert result.priced_provider == "openai" and "openai" in (result.reason or "")
    unknown = price_usage("generic", "my-own-llama", Usage(13, 29))
    assert unknown.cost_usd is None and "my-own-llama" in (unknown.reason or "")


def test_unmapped_provider_id_known_to_genai_prices() -> None:
    result = price_usage("cohere", "command-r-plus", Usage(1000, 100), at=AT)
    assert result.priced_provider == "cohere"
    assert result.cost_usd == genai_cost("cohere", "command-r-plus", Usage(1000, 100))


def test_every_mapped_provider_exists_in_genai_prices() -> None:
    from genai_prices.data import providers

    ids = {provider.id for provider in providers}
    # Hosted Ollama has no genai-prices provider yet: its calls are unpriced, not priced as
    # another vendor's model of the same name.
    assert {gp for gp in PROVIDER_IDS.values() if gp} - {"ollama"} <= ids


@pytest.mark.parametrize("host", [None, "localhost:11434", "127.0.0.1:11434", "[::1]:11434", "gpu-box.lan"])
def test_local_ollama_is_free(host: str | None) -> None:
    result = price_usage("ollama", "gemma3:1b", Usage(15, 50), host=host)
    assert result == PriceResult(0.0, "local model (ollama): free")


def test_hosted_ollama_has_no_genai_prices() -> None:
    result = price_usage("ollama", "gpt-oss:120b", Usage(15, 50), host="ollama.com")
    assert result.cost_usd is None and "ollama.com" in (result.reason or "")
    assert (
        price_usage("ollama", "gpt-oss:120b", Usage(15, 50), host="https://ollama.com:443").cost_usd is None
    )


def test_never_raises() -> None:
    weird: list[tuple[Any, Any, Usage]] = [
        (
            "openai",
            "gpt-4o",
            Usage(input_tokens=10, output_tokens=5, cached_input_tokens=50),
        ),  # cached > input
        ("openai", "gpt-4o", Usage(input_tokens=-1, output_tokens=5)),
        ("openai", 12345, Usage(10, 10)),
        (None, "gpt-4o", Usage(10, 10)),
        ("anthropic", "claude-sonnet-4-5", Usage(10, 10, extra={"bogus_units": 3})),
    ]
    for provider, model, usage in weird:
        result = price_usage(provider, model, usage)
        assert isinstance(result, PriceResult)
    inconsistent = price_usage("openai", "gpt-4o", weird[0][2])
    assert inconsistent.cost_usd is None and "cache_read_tokens" in (inconsistent.reason or "")
    assert price_usage(None, "gpt-4o", Usage(13, 29)).cost_usd == 0.0003225  # type: ignore[arg-type]
    ignored = price_usage("anthropic", "claude-sonnet-4-5", weird[4][2], at=AT)
    assert ignored.cost_usd == 0.00018 and "bogus_units" in (ignored.reason or "")


def test_extra_keys_take_genai_prices_path() -> None:
    # 1h cache writes are dearer than the 5m writes cache_write_tokens otherwise pays.
    usage = Usage(
        input_tokens=1000, output_tokens=10, cache_write_tokens=200, extra={"cache_write_1h_tokens": 200}
    )
    # 800 x 3 + 200 x 6 (1h) + 10 x 15
    assert price_usage("anthropic", "claude-sonnet-4-5", usage, at=AT).cost_usd == 0.00375
    searches = Usage(input_tokens=1000, output_tokens=10, extra={"web_searches": 2})
    assert price_usage("openai", "gpt-4o", searches, at=AT).cost_usd == 0.0226  # + 2 x $10/1000


def test_reasoning_priced_apart() -> None:
    # sonar-deep-research prices reasoning tokens ($3/M) apart from other output ($8/M).
    usage = Usage(input_tokens=1000, output_tokens=1000, reasoning_tokens=600)
    assert (
        price_usage("perplexity", "sonar-deep-research", usage, at=AT).cost_usd == 0.0070
    )  # 2 + .4x8 + .6x3
    assert price_usage("perplexity", "sonar-deep-research", Usage(1000, 1000), at=AT).cost_usd == 0.01


# --------------------------------------------------------------------------- batch


def test_batch_uses_genai_prices_batch_prices() -> None:
    usage = Usage(input_tokens=1220, output_tokens=5, cached_input_tokens=1217)
    result = price_usage("anthropic", "claude-sonnet-4-5-20250929", usage, at=AT, batch=True)
    assert result.cost_usd == 0.00022455 and result.reason == "batch price"
    expected = genai_cost("openai", "gpt-4o", Usage(13, 29), price_context={"processing": "batch"})
    assert (
        price_usage("openai", "gpt-4o", Usage(13, 29), at=AT, batch=True).cost_usd == expected == 0.00016125
    )


def test_batch_discount_without_genai_prices_batch_prices() -> None:
    # Azure's gpt-4o is OpenAI's, borrowed: genai-prices applies no variant, our 50% applies.
    result = price_usage("azure_openai", "gpt-4o", Usage(13, 29), at=AT, batch=True)
    assert result.cost_usd == 0.00016125 and result.reason == "batch: 50% of the standard price"
    # Before genai-prices' batch variants start (2026-10-14) the 50% discount applies too.
    before = price_usage("openai", "gpt-4o", Usage(13, 29), at=datetime(2026, 1, 1, tzinfo=UTC), batch=True)
    assert before.cost_usd == 0.00016125
    other = price_usage("deepseek", "deepseek-chat", Usage(1000, 1000), at=AT, batch=True)
    assert other.cost_usd == price_usage("deepseek", "deepseek-chat", Usage(1000, 1000), at=AT).cost_usd
    assert "no batch price" in (other.reason or "")


# --------------------------------------------------------------------------- overrides


def test_override_by_model_wins_over_genai_prices() -> None:
    overrides = {"gpt-4o-2024-08-06": {"input_mtok": 1.0, "output_mtok": 2.0}}
    result = price_usage("openai", "gpt-4o-2024-08-06", Usage(1000, 100), overrides=overrides)
    assert result == PriceResult(0.0012, "price override (gpt-4o-2024-08-06)")


def test_override_by_provider_and_model_wins_over_model() -> None:
    overrides = {"llama3": {"input_mtok": 1.0, "output_mtok": 1.0}, "groq/llama3": {"input_mtok": 5.0}}
    assert price_usage("groq", "llama3", Usage(1000, 100), overrides=overrides).cost_usd == 0.005
    assert price_usage("together", "llama3", Usage(1000, 100), overrides=overrides).cost_usd == 0.0011
    # An override also prices a local model, for those who count their GPUs.
    assert price_usage("ollama", "llama3", Usage(1000, 100), overrides=overrides).cost_usd == 0.0011


def test_override_for_a_model_genai_prices_does_not_know() -> None:
    overrides = {"openai/my-finetune": {"input_mtok": 3.0, "output_mtok": 12.0, "cache_read_mtok": 1.5}}
    usage = Usage(input_tokens=1000, output_tokens=100, cached_input_tokens=400)
    # 600 x 3 + 400 x 1.5 + 100 x 12
    assert price_usage("openai", "my-finetune", usage, overrides=overrides).cost_usd == 0.0036


def test_override_matches_genai_prices_model_id() -> None:
    overrides = {"gpt-4o": {"input_mtok": 1.0, "output_mtok": 2.0}}
    result = price_usage("openai", "gpt-4o-2024-08-06", Usage(1000, 100), overrides=overrides)
    assert result.cost_usd == 0.0012 and result.priced_model == "gpt-4o"


def test_override_cache_prices_fall_back_to_input_price() -> None:
    overrides = {"m": {"input_mtok": 2.0, "output_mtok": 4.0}}
    usage = Usage(input_tokens=1000, output_tokens=100, cached_input_tokens=300, cache_write_tokens=200)
    assert price_usage("generic", "m", usage, overrides=overrides).cost_usd == 0.0024  # 1000 x 2 + 100 x 4
    overrides = {"m": {"input_mtok": 2.0, "output_mtok": 4.0, "cache_write_mtok": 2.5}}
    # 800 x 2 + 200 x 2.5 + 100 x 4
    assert price_usage("generic", "m", usage, overrides=overrides).cost_usd == 0.0025


def test_override_other_price_keys_and_extras() -> None:
    overrides = {"m": {"input_mtok": 1.0, "web_searches_kcount": 10.0, "requests_kcount": 5.0}}
    assert price_usage("generic", "m", Usage(1000, 0), overrides=overrides).cost_usd == 0.006
    usage = Usage(1000, 0, extra={"web_searches": 2})
    assert price_usage("generic", "m", usage, overrides=overrides).cost_usd == 0.026


def test_override_batch_and_bad_overrides() -> None:
    overrides = {"gpt-4o": {"input_mtok": 1.0, "output_mtok": 2.0}}
    result = price_usage("openai", "gpt-4o", Usage(1000, 100), overrides=overrides, batch=True)
    assert result.cost_usd == 0.0006 and "50%" in (result.reason or "")
    bad = price_usage("openai", "gpt-4o", Usage(10, 10), overrides={"gpt-4o": {"inptu_mtok": 1.0}})
    assert bad.cost_usd is None and "inptu_mtok" in (bad.reason or "") and "gpt-4o" in (bad.reason or "")
    orphan = price_usage("openai", "gpt-4o", Usage(10, 10), overrides={"gpt-4o": {"cache_read_mtok": 1.0}})
    assert orphan.cost_usd is None and "input_mtok" in (orphan.reason or "")


# --------------------------------------------------------------------------- price files


def test_load_price_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"GPT-4o": {"input_mtok": 2, "output_mtok": 8.5}, "openai/m": {}}))
    assert load_price_file(path) == {"gpt-4o": {"input_mtok": 2.0, "output_mtok": 8.5}, "openai/m": {}}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"gpt-4o": {"input_mtok": 2,}}', "invalid JSON at line 1"),
        ("[1, 2]", "expected a JSON object"),
        ('{"gpt-4o": 2.5}', "entry 'gpt-4o': expected an object"),
        ('{"gpt-4o": {"input_mtok": "2.5"}}', "entry 'gpt-4o': 'input_mtok' must be a number"),
        ('{"gpt-4o": {"input_mtok": -1}}', "entry 'gpt-4o': 'input_mtok' must be a finite non-negative"),
        ('{"gpt-4o": {"input_mtok": true}}', "entry 'gpt-4o': 'input_mtok' must be a number"),
        ('{"gpt-4o": {"input": 2}}', "entry 'gpt-4o': unknown price 'input'"),
        ('{" ": {"input_mtok": 2}}', "empty model name"),
    ],
)
def test_bad_price_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "prices.json"
    path.write_text(text)
    with pytest.raises(PriceFileError, match=message) as info:
        load_price_file(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"input_mtok": "2.5"}, "'input_mtok' must be a number"),
        ({"input_mtok": True}, "'input_mtok' must be a number"),
        ({"input_mtok": -1}, "'input_mtok' must be a finite non-negative number"),
        ({"input_mtok": float("inf")}, "'input_mtok' must be a finite non-negative number"),
        ({"input": 2}, "unknown price 'input'"),
        (2.5, "expected an object"),
    ],
)
def test_overrides_follow_one_rule_wherever_they_come_from(tmp_path: Path, entry: Any, message: str) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"m": entry}))
    with pytest.raises(PriceFileError, match=message):
        load_price_file(path)
    with pytest.raises(SettingsError, match=message):
        Settings(prices={"m": entry})
    result = price_usage("generic", "m", Usage(10, 10), overrides={"m": entry})
    assert result.cost_usd is None and message in (result.reason or "")


def test_missing_price_file(tmp_path: Path) -> None:
    with pytest.raises(PriceFileError, match="cannot read") as info:
        load_price_file(tmp_path / "nope.json")
    assert "nope.json" in str(info.value)


def test_settings_merge_the_price_file_under_prices_given_in_code(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"a": {"input_mtok": 1}, "b": {"input_mtok": 2}}))
    settings = Settings(prices={"b": {"input_mtok": 3}}, prices_file=path)
    assert settings.prices == {"a": {"input_mtok": 1.0}, "b": {"input_mtok": 3.0}}


def test_a_bad_price_file_fails_when_the_settings_are_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "prices.json"
    path.write_text('{"my-model": {"input_mtok": "cheap"}}')
    monkeypatch.setenv("HTTPTRACK_PRICES", str(path))
    with pytest.raises(PriceFileError, match=r"prices\.json"):
        Settings()


# --------------------------------------------------------------------------- no import, no network


def run_python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_importing_does_not_load_genai_prices() -> None:
    out = run_python(
        """
        import sys
        import httptrack.pricing._prices as pricing
        from httptrack._usage import Usage
        print("genai_prices" in sys.modules)
        # Local models and overrides need no price data either.
        pricing.price_usage("ollama", "llama3", Usage(1, 1))
        pricing.price_usage("openai", "x", Usage(1, 1), overrides={"x": {"input_mtok": 1.0}})
        print("genai_prices" in sys.modules)
        pricing.warm_up()
        print("genai_prices" in sys.modules)
        """
    )
    assert out.split() == ["False", "False", "True"]


def test_no_network_cold(tmp_path: Path) -> None:
    out = run_python(
        """
        import socket
        def refuse(*args):
            raise AssertionError("network used")
        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = refuse
        from httptrack.pricing._prices import price_usage
        from httptrack._usage import Usage
        print(price_usage("openai", "gpt-4o", Usage(13, 29)).cost_usd)
        """
    )
    assert out == "0.0003225"


def test_no_network_warm(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("network used")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    warm_up()
    for provider, model, _ in MODELS:
        assert price_usage(provider, model, Usage(1000, 100), batch=True).cost_usd is not None
    assert price_usage("openai", "brand-new-model", Usage(1, 1)).cost_usd is None


@pytest.mark.parametrize(
    ("provider", "model", "vendor", "vendor_model"),
    [
        ("litellm", "anthropic/claude-3-5-sonnet-20241022", "anthropic", "claude-3-5-sonnet-20241022"),
        ("generic", "openai/gpt-4o", "openai", "gpt-4o"),
        ("vllm", "gemini/gemini-2.5-flash", "google", "gemini-2.5-flash"),
    ],
)
def test_a_gateways_vendor_prefixed_model_is_priced_as_the_vendors(
    provider: str, model: str, vendor: str, vendor_model: str
) -> None:
    usage = usage_of(1200, 300, 200, None, None)
    result = price_usage(provider, model, usage, host="gateway.internal", at=AT)
    assert result.cost_usd == genai_cost(vendor, vendor_model, usage)
    assert result.priced_provider == vendor
    assert result.reason is not None and result.reason.startswith(f"model {model!r}: priced as {vendor}'s ")


def test_an_unknown_vendor_prefix_is_still_unknown() -> None:
    result = price_usage("vllm", "meta-llama/Llama-3.1-8B-Instruct", usage_of(10, 5, None, None, None))
    assert result.cost_usd is None
    assert (
        result.reason
        == "unknown model 'meta-llama/llama-3.1-8b-instruct' for provider vllm: no genai-prices provider"
    )
