"""The cost of one recorded call: :func:`price_usage`.

Pricing runs in the background writer, which must keep up with tens of thousands of rows a
second, so it has to cost microseconds. genai-prices' own ``calc_price`` costs ~200 µs (it
re-resolves its unit registry and decomposes the usage on every call), so a call's
``(provider, model)`` is resolved once (``_lookup``), the prices in force are reduced to a
*plan* once per period (``_plans``), and the usage is priced from the plan in exact integer
arithmetic, identical to ``float(calc_price(...).total_price)``. Whenever the plan or the
usage holds something the fast path does not model (``Usage.extra`` keys, per-reasoning-token
prices, price sets whose decomposition it would have to reproduce in general), genai-prices'
own calculation runs instead. Correctness first.

Usage follows httptrack's normalized convention (see ``_usage``): ``input_tokens`` already
includes cache reads and writes, ``output_tokens`` includes reasoning. That is also
genai-prices' convention, so cached tokens are priced once, at the cache-read price.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final

from .._usage import Usage
from ._data import registry, warm_up
from ._lookup import Entry, Key, PriceResult, join_reasons, key_for, resolve
from ._overrides import check_entry
from ._plans import CORE_USAGE_KEYS, Plan, error_plan, fast_cost, make_plan

if TYPE_CHECKING:
    from genai_prices.types import Usage as GenaiUsage

__all__ = ["PriceResult", "price_usage", "warm_up"]

_LRU_SIZE: Final = 4096


@lru_cache(maxsize=_LRU_SIZE)
def _override_plan(key: str, items: tuple[tuple[str, Any], ...], factor: Decimal | None) -> Plan:
    """:func:`_checked_plan`, remembered by the override's items."""
    return _checked_plan(key, dict(items), factor)


def _checked_plan(key: str, entry: object, factor: Decimal | None) -> Plan:
    """The plan of the override ``key``: its prices checked as a price file's or the
    settings' are, and priced at the price keys genai-prices knows."""
    try:
        checked = check_entry(entry)
    except ValueError as exc:
        return error_plan(f"price override {key!r}: {exc}")
    # repr() keeps the decimal the user wrote (0.3 -> Decimal('0.3'), not its binary expansion).
    prices = {price_key: Decimal(repr(number)) for price_key, number in checked.items()}
    reason = f"price override ({key})"
    plan = make_plan(prices, strict=True, factor=factor, reason=reason, override_prices=prices)
    if plan.error is not None:
        return error_plan(f"price override {key!r}: {plan.error}")
    return plan


_NO_MODEL: Final = PriceResult(None, "no model")
_NO_USAGE: Final = PriceResult(None, "no usage reported")

# PriceResult is frozen, so its generated __init__ sets each field through object.__setattr__
# (~1 µs). The hot path fills the slots directly instead: same object, half the cost.
_new_result = object.__new__
_slots: Any = PriceResult.__dict__  # the slot descriptors, typed loosely on purpose
_set_cost = _slots["cost_usd"].__set__
_set_reason = _slots["reason"].__set__
_set_model = _slots["priced_model"].__set__
_set_provider = _slots["priced_provider"].__set__


def _make_result(
    cost: float | None, reason: str | None, model: str | None, provider: str | None
) -> PriceResult:
    result: PriceResult = _new_result(PriceResult)
    _set_cost(result, cost)
    _set_reason(result, reason)
    _set_model(result, model)
    _set_provider(result, provider)
    return result


def price_usage(
    provider: str,
    model: str | None,
    usage: Usage,
    *,
    host: str | None = None,
    at: datetime | None = None,
    overrides: Mapping[str, Mapping[str, float]] | None = None,
    batch: bool = False,
    tier: tuple[str, str] | None = None,
) -> PriceResult:
    """Price one call's usage. Never raises: an unknown cost is ``cost_usd=None`` plus a reason.

    ``provider`` is httptrack's provider id: its family says which genai-prices provider it is
    priced as (``Provider.price_provider``), its batch discount, and which hosts run models
    locally, for free; ``host`` the host the call went to (``host[:port]``: tells local Ollama
    from ollama.com, and helps ``generic`` providers); ``at`` the call's time (default now;
    naive means UTC), which picks dated and off-peak prices. Token counts are ints.

    ``overrides`` maps ``"model"`` or ``"provider/model"`` (lowercase; the provider-qualified key
    wins) to prices in genai-prices' keys, USD per million tokens (``input_mtok``,
    ``output_mtok``, ``cache_read_mtok``, ``cache_write_mtok``; ``*_kcount`` per thousand). An
    override matches the model as requested, or else genai-prices' id for it, and wins over
    genai-prices, also for models genai-prices does not know. Cache reads and writes with no
    price of their own pay ``input_mtok``; output with no ``output_mtok`` is free.

    ``batch``: the call went through a batch API. Priced with genai-prices' batch prices when it
    has them for the model (``processing=batch``), else with the family's
    ``Provider.batch_discount`` (OpenAI, Azure OpenAI, Anthropic: 50%), else at the standard
    price with a reason saying so.

    ``tier``: the price variant the call ran under, as genai-prices names it:
    ``("service_tier", "flex")`` or ``"priority"`` (OpenAI), ``("speed", "fast")``
    (Anthropic's fast mode). Priced with that variant's prices where genai-prices has them for
    the model at the call's date; else the standard price, with a reason saying so. ``None``
    is the standard price (parsers report the standard tiers, ``default``, ``auto`` ..., as
    ``None``). Overrides are flat prices: the tier does not change them.
    """
    try:
        return _price(provider, model, usage, host, at, overrides, batch, tier)
    except Exception as exc:  # pricing must never break the writer
        return PriceResult(None, f"pricing failed: {type(exc).__name__}: {exc}")


def _price(
    provider: str,
    model: str | None,
    usage: Usage,
    host: str | None,
    at: datetime | None,
    overrides: Mapping[str, Mapping[str, float]] | None,
    batch: bool,
    tier: tuple[str, str] | None = None,
) -> PriceResult:
    if not model:
        return _NO_MODEL
    if usage.input_tokens is None and usage.output_tokens is None and not usage.extra:
        return _NO_USAGE
    key = key_for(provider, model, host)

    if overrides:
        found = overrides.get(key.qualified)
        if found is not None:
            return _price_override(key.qualified, found, usage, key, batch)
        found = overrides.get(key.model)
        if found is not None:
            return _price_override(key.model, found, usage, key, batch)

    if key.local is not None:
        return key.local

    entry = key.resolved
    if entry is None:
        entry = key.resolved = resolve(key.provider, key.model, key.host)
    if entry.__class__ is PriceResult:
        return entry
    assert isinstance(entry, Entry)
    model_id = entry.model.id
    provider_id = entry.provider.id

    if overrides and model_id != key.model:
        # An override may name genai-prices' id for the model (``gpt-4o`` for a dated id).
        for name in (f"{key.provider}/{model_id}", model_id):
            found = overrides.get(name)
            if found is not None:
                return _price_override(name, found, usage, key, batch, model_id, provider_id)

    plan = entry.plan_for(at, batch, tier)
    if plan.fast and not usage.extra and not (plan.reasoning_priced and usage.reasoning_tokens):
        cost = fast_cost(plan, usage)
        if cost is not None:
            return _make_result(cost, plan.reason, model_id, provider_id)

    # genai-prices' own calculation: extra usage keys, unusual price sets, odd usage.
    gusage, note = _genai_usage(usage)
    try:
        calc = entry.model.calc_price(
            gusage, entry.provider, genai_request_timestamp=at, price_context=plan.context
        )
    except (ValueError, LookupError) as exc:
        return PriceResult(None, f"cannot price {model!r}: {exc}", model_id, provider_id)
    return _slow_result(
        calc.total_price, plan.factor, join_reasons(plan.reason, note), usage, model, model_id, provider_id
    )


def _slow_result(
    total: Decimal,
    factor: Decimal | None,
    reason: str | None,
    usage: Usage,
    name: str,
    model_id: str | None,
    provider_id: str | None,
) -> PriceResult:
    """genai-prices' total (times a batch ``factor``) as a result. Usage of units only (audio
    seconds, characters) that the price set has no price for is unknown, never a silent 0."""
    if factor is not None:
        total *= factor
    if not total and usage.input_tokens is None and usage.output_tokens is None:
        units = ", ".join(sorted(usage.extra))
        return PriceResult(None, f"no price for {units} of {name!r}", model_id, provider_id)
    return PriceResult(float(total), reason, model_id, provider_id)


def _price_override(
    name: str,
    prices: Mapping[str, float],
    usage: Usage,
    key: Key,
    batch: bool,
    model_id: str | None = None,
    provider_id: str | None = None,
) -> PriceResult:
    # Overrides are the user's own standard prices: a known batch discount applies on top.
    provider = key.provider
    factor = key.batch_discount if batch else None
    if isinstance(prices, Mapping):
        plan = _override_plan(name, tuple(prices.items()), factor)
    else:  # not a set of prices at all: checked all the same, to say what is wrong
        plan = _checked_plan(name, prices, factor)
    if plan.error is not None:
        return PriceResult(None, plan.error, model_id, provider_id)
    reason = plan.reason
    if batch:
        if factor is not None:
            reason = join_reasons(reason, f"batch: {float(factor):.0%} of the override price")
        else:
            reason = join_reasons(reason, f"batch: no batch discount known for {provider}")
    if plan.fast and not usage.extra and not (plan.reasoning_priced and usage.reasoning_tokens):
        cost = fast_cost(plan, usage)
        if cost is not None:
            return _make_result(cost, reason, model_id, provider_id)

    from genai_prices.types import ModelPrice

    gusage, note = _genai_usage(usage)
    try:
        total = ModelPrice(**plan.override_prices or {}).calc_price(gusage)["total_price"]
    except ValueError as exc:
        return PriceResult(None, f"cannot price with override {name!r}: {exc}", model_id, provider_id)
    return _slow_result(total, factor, join_reasons(reason, note), usage, name, model_id, provider_id)


def _genai_usage(usage: Usage) -> tuple[GenaiUsage, str | None]:
    """genai-prices' Usage for ours (same convention), plus a note on extra keys it cannot price."""
    from genai_prices.types import Usage as GUsage

    values: dict[str, float] = {}
    for ours, theirs in (
        (usage.input_tokens, "input_tokens"),
        (usage.output_tokens, "output_tokens"),
        (usage.cached_input_tokens, "cache_read_tokens"),
        (usage.cache_write_tokens, "cache_write_tokens"),
        (usage.reasoning_tokens, "output_reasoning_tokens"),
    ):
        if ours is not None:
            values[theirs] = ours
    unknown: list[str] = []
    if usage.extra:
        known = registry()._reported_usage_keys  # private: no public accessor
        for key, value in usage.extra.items():
            if key in values or key in CORE_USAGE_KEYS:
                continue  # the normalized fields are the source of truth for these
            if key in known:
                values[key] = value
            else:
                unknown.append(key)
    note = f"ignored usage keys genai-prices does not know: {', '.join(sorted(unknown))}" if unknown else None
    return GUsage(**values), note
