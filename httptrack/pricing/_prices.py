"""Cost of one recorded call, from genai-prices' bundled data plus the user's price overrides.

Pricing runs in the background writer, which must keep up with tens of thousands of rows a
second, so it has to cost microseconds. genai-prices' own ``calc_price`` costs ~200 µs (it
re-resolves its unit registry and decomposes the usage on every call), so this module:

1. resolves ``(provider, model)`` to genai-prices' ``Provider`` + ``ModelInfo`` once, in a
   bounded LRU that remembers misses too (an unknown model is searched for once, not per row);
2. turns the ``ModelPrice`` in force (per UTC day, or per active time window for off-peak
   prices) into a small *plan*: the few prices that matter for our usage figures, as exact
   integers over a power of ten;
3. prices the usage from that plan in exact integer arithmetic and one correctly rounded
   division, so the figure is identical to ``float(calc_price(...).total_price)`` (both are
   the nearest float to the same exact sum);
4. falls back to genai-prices' own calculation whenever the plan or the usage holds something
   the fast path does not model (``Usage.extra`` keys, per-reasoning-token prices, price sets
   whose decomposition it would have to reproduce in general). Correctness first.

genai-prices is imported lazily (importing it and loading its data takes 0.25-0.45 s): never at
module import, only on the first price lookup or in :func:`warm_up`, which the writer thread
calls. Its network updater (``UpdatePrices``) is never used: prices are the bundled snapshot.

Usage follows httptrack's normalized convention (see ``_usage``): ``input_tokens`` already
includes cache reads and writes, ``output_tokens`` includes reasoning. That is also
genai-prices' convention, so cached tokens are priced once, at the cache-read price.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from httptrack._errors import PriceFileError
from httptrack._usage import Usage

if TYPE_CHECKING:
    import os

    from genai_prices.data_snapshot import DataSnapshot
    from genai_prices.types import ModelInfo, ModelPrice, Provider
    from genai_prices.types import Usage as GenaiUsage
    from genai_prices.units import UnitRegistry


__all__ = [
    "BATCH_DISCOUNTS",
    "PROVIDER_IDS",
    "PriceFileError",
    "PriceResult",
    "load_price_file",
    "price_usage",
    "warm_up",
]

#: httptrack provider id -> genai-prices provider id. ``None``: let genai-prices pick the
#: provider from the model name. Provider ids not listed here are tried as genai-prices ids
#: (``cohere``, ``aws``, ``cerebras`` ...) and otherwise also matched by model name.
PROVIDER_IDS: Final[Mapping[str, str | None]] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "google",
    "vertex_ai": "google",  # Gemini and (through google's fallback) Claude on Vertex AI
    "mistral": "mistral",
    "groq": "groq",
    "azure_openai": "azure",  # genai-prices' azure falls back to openai/anthropic/deepseek/x-ai prices
    "deepseek": "deepseek",
    "together": "together",
    "openrouter": "openrouter",
    "xai": "x-ai",
    "fireworks": "fireworks",
    "perplexity": "perplexity",
    "generic": None,
}

#: Batch-API discount applied to the standard price when ``batch=True`` and genai-prices has
#: no batch price variant (``processing=batch``) for the model in force at the call's date.
#: OpenAI's and Anthropic's batch APIs (Azure OpenAI's global batch too) bill 50% of the
#: standard price for every token kind. Other providers: the standard price, with a reason.
BATCH_DISCOUNTS: Final[Mapping[str, Decimal]] = {
    "openai": Decimal("0.5"),
    "azure_openai": Decimal("0.5"),
    "anthropic": Decimal("0.5"),
}

_BATCH_CONTEXT: Final[Mapping[str, str]] = {"processing": "batch"}

#: Price tiers that are the standard price whatever the model: priced as if none was named
#: (``auto`` is resolved by the response; ``scale`` is billed by commitment, not per token).
STANDARD_TIERS: Final = frozenset({"auto", "default", "standard", "scale", "on_demand"})
_LOCAL_MODEL_REASON: Final = "local model (ollama): free"
_LRU_SIZE: Final = 4096
_MAX_PLANS_PER_MODEL: Final = 64
# Totals (in 1/denominator USD) past this take the Decimal path, whose 28 digits may round.
_EXACT_LIMIT: Final = 10**25

# Price keys the fast path prices itself, with their unit size (genai-prices' ``per``).
_IN, _OUT, _CR, _CW, _REQ = range(5)
_FAST_KEYS: Final[Mapping[str, tuple[int, int]]] = {
    "input_mtok": (_IN, 1_000_000),
    "output_mtok": (_OUT, 1_000_000),
    "cache_read_mtok": (_CR, 1_000_000),
    "cache_write_mtok": (_CW, 1_000_000),
    "requests_kcount": (_REQ, 1_000),  # billed once per request, whatever the usage
}
# Usage keys the fast path feeds genai-prices' decomposition with (reasoning only matters to
# the rare model that prices reasoning tokens apart, which takes the slow path).
_CORE_USAGE_KEYS: Final = frozenset(
    {"input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "output_reasoning_tokens"}
)
# Suffixes of genai-prices' price keys (``input_mtok``, ``web_searches_kcount``, ``audio_hours`` ...).
_PRICE_KEY_SUFFIXES: Final = ("_mtok", "_kcount", "_kpages", "_mchars", "_gpixels", "_hours")


@dataclass(slots=True, frozen=True)
class PriceResult:
    """The cost of one call, in USD, or ``None`` with the reason it is unknown.

    ``reason`` also says how a cost was reached when that is worth knowing (an override, a
    local model, a batch discount, a provider guessed from the model name).
    """

    cost_usd: float | None
    reason: str | None = None
    #: genai-prices' model id the call was priced as (``gpt-4o`` for ``gpt-4o-2024-08-06``).
    priced_model: str | None = None
    #: genai-prices' provider id the price came from (``google`` for httptrack's ``gemini``).
    priced_provider: str | None = None


# --------------------------------------------------------------------------- price files


def load_price_file(path: str | os.PathLike[str]) -> dict[str, dict[str, float]]:
    """Read a JSON price override file: ``{"model" or "provider/model": {"input_mtok": 2.5, ...}}``.

    Prices are USD per million tokens (``*_mtok``) or per thousand (``*_kcount``), with
    genai-prices' key names. Keys are lowercased. Raises :class:`PriceFileError` naming the file
    and the entry at fault; whether a key is one genai-prices knows is checked when pricing.
    """
    where = f"price file {str(path)!r}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PriceFileError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise PriceFileError(f"{where}: not UTF-8 text ({exc.reason})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PriceFileError(
            f"{where}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(data, dict):
        raise PriceFileError(
            f'{where}: expected a JSON object such as {{"gpt-4o": {{"input_mtok": 2.5}}}}, '
            f"got {type(data).__name__}"
        )
    prices: dict[str, dict[str, float]] = {}
    for model, entry in data.items():
        name = model.strip().lower()
        if not name:
            raise PriceFileError(f"{where}: entry with an empty model name")
        if not isinstance(entry, dict):
            raise PriceFileError(
                f'{where}: entry {model!r}: expected an object such as {{"input_mtok": 2.5}}, '
                f"got {type(entry).__name__}"
            )
        values: dict[str, float] = {}
        for key, price in entry.items():
            if not key.endswith(_PRICE_KEY_SUFFIXES):
                raise PriceFileError(
                    f"{where}: entry {model!r}: unknown price {key!r} "
                    "(use input_mtok, output_mtok, cache_read_mtok, cache_write_mtok ...)"
                )
            # bool is an int in Python but never a price; strings are refused rather than guessed.
            if isinstance(price, bool) or not isinstance(price, int | float):
                raise PriceFileError(f"{where}: entry {model!r}: {key!r} must be a number, got {price!r}")
            if not math.isfinite(price) or price < 0:
                raise PriceFileError(
                    f"{where}: entry {model!r}: {key!r} must be a finite non-negative number, got {price!r}"
                )
            values[key] = float(price)
        prices[name] = values
    return prices


# --------------------------------------------------------------------------- genai-prices data

_lock = threading.Lock()
_snapshot_cache: DataSnapshot | None = None
_registry_cache: UnitRegistry | None = None


def warm_up() -> None:
    """Load genai-prices' bundled data now (a few tenths of a second), so the first priced call does not wait.

    Meant for the writer thread, off the application's thread. Safe to call more than once.
    """
    _snapshot()


def _snapshot() -> DataSnapshot:
    global _snapshot_cache, _registry_cache
    snapshot = _snapshot_cache
    if snapshot is not None:
        return snapshot
    with _lock:
        if _snapshot_cache is None:
            # Our own snapshot of the *bundled* data: never the one ``UpdatePrices`` may install,
            # so prices never change under us and nothing is ever fetched.
            from genai_prices.data import providers
            from genai_prices.data_snapshot import DataSnapshot
            from genai_prices.units import _get_registry  # private: the registry has no public accessor

            _registry_cache = _get_registry()
            _snapshot_cache = DataSnapshot(providers=providers, from_auto_update=False)
        return _snapshot_cache


def _registry() -> UnitRegistry:
    if _registry_cache is None:
        _snapshot()
    assert _registry_cache is not None
    return _registry_cache


# --------------------------------------------------------------------------- plans


@dataclass(slots=True, frozen=True)
class _Plan:
    """One ``ModelPrice`` (or override), reduced to what pricing our usage needs.

    Prices are held as integers in units of ``1 / denominator`` USD per token (or per request),
    batch factor included, so the fast path is integer arithmetic plus one division. The exact
    rational cost, divided once, rounds to the same float as ``float()`` of genai-prices' exact
    ``Decimal`` total: both are the correctly rounded value of the same number.
    """

    #: (kind, coefficient, tiers). ``tiers``: None, or ((start, coefficient), ...) highest
    #: start first: a count pays the rate of the highest tier whose start the *total input
    #: tokens* exceed, the base rate below every tier (genai-prices' calc_unit_price).
    terms: tuple[tuple[int, int, tuple[tuple[int, int], ...] | None], ...]
    denominator: int
    cr_priced: bool  # cache reads priced apart (else they are plain input, as in genai-prices)
    cw_priced: bool
    #: False: a priced unit needs genai-prices' general decomposition; always take the slow path.
    fast: bool
    #: The plan prices reasoning tokens apart: fast only while no reasoning is reported.
    reasoning_priced: bool
    factor: Decimal | None  # batch discount multiplier (already inside the coefficients)
    context: Mapping[str, str] | None  # genai-prices price context (batch variant) for the slow path
    reason: str | None
    error: str | None  # the price set is unusable: cost None with this reason
    #: For overrides: the prices the slow path hands genai-prices as a ``ModelPrice``.
    override_prices: Mapping[str, Decimal] | None = None


def _plan(
    items: Mapping[str, Any],
    *,
    strict: bool,
    factor: Decimal | None = None,
    context: Mapping[str, str] | None = None,
    reason: str | None = None,
    override_prices: Mapping[str, Decimal] | None = None,
) -> _Plan:
    """Classify a price set's keys: fast-path terms, units that are provably zero for our
    usage, and anything that forces genai-prices' own calculation.

    ``strict``: unknown price keys are an error (overrides) instead of being skipped with the
    rest of genai-prices' data, which is what genai-prices itself does with them.
    """
    raw_terms: list[tuple[int, Fraction, list[tuple[int, Fraction]] | None]] = []
    fast = True
    reasoning_priced = False
    priced_kinds: set[int] = set()
    others: list[str] = []
    scale = Fraction(factor) if factor is not None else Fraction(1)
    for key, value in items.items():
        if value is None or key.startswith("_"):
            continue
        spec = _FAST_KEYS.get(key)
        if spec is None:
            others.append(key)
            continue
        kind, per = spec
        priced_kinds.add(kind)
        if isinstance(value, Decimal):
            raw_terms.append((kind, Fraction(value) * scale / per, None))
        else:  # TieredPrices
            tiers = sorted(value.tiers, key=lambda tier: tier.start, reverse=True)
            raw_tiers = [(tier.start, Fraction(tier.price) * scale / per) for tier in tiers]
            raw_terms.append((kind, Fraction(value.base) * scale / per, raw_tiers))
    if others:
        registry = _registry()
        reported = [registry.units[k] for k in _CORE_USAGE_KEYS if k != "output_reasoning_tokens"]
        reasoning_unit = registry.units["output_reasoning_tokens"]
        for key in others:
            try:
                unit = registry.unit_for_price_key(key)
            except KeyError:
                if strict:
                    return _error_plan(f"unknown price key {key!r}")
                continue  # genai-prices skips (and warns about) price keys it does not know
            dims = unit.dimensions.items()
            if any(dims <= r.dimensions.items() for r in reported):
                # An ancestor of a figure we report (a "total tokens" price, say): it would take
                # genai-prices' decomposition to split it, so leave it to genai-prices.
                fast = False
            elif dims <= reasoning_unit.dimensions.items():
                reasoning_priced = True
            # Otherwise (web searches, audio, images, 1h cache writes ...) the unit's count is
            # 0 for usage made of our core figures: it adds nothing and takes nothing away.
    if (_CR in priced_kinds or _CW in priced_kinds) and _IN not in priced_kinds:
        # genai-prices refuses a cache price with no input price (validate_ancestor_coverage).
        return _error_plan("a cache price is set without input_mtok")
    if others:
        from genai_prices.validation import validate_priced_units

        registry = _registry()
        known_keys = registry._all_price_keys  # private: no public accessor
        units = [
            registry.unit_for_price_key(key)
            for key, value in items.items()
            if value is not None and key in known_keys
        ]
        try:
            validate_priced_units(units, registry)
        except ValueError as exc:
            if strict:
                return _error_plan(str(exc))
            fast = False  # genai-prices will raise; the slow path reports its words
    denominator, terms = _integer_terms(raw_terms)
    if not denominator:
        fast = False
    return _Plan(
        terms=terms,
        denominator=denominator or 1,
        cr_priced=_CR in priced_kinds,
        cw_priced=_CW in priced_kinds,
        fast=fast,
        reasoning_priced=reasoning_priced,
        factor=factor,
        context=context,
        reason=reason,
        error=None,
        override_prices=override_prices,
    )


def _integer_terms(
    raw_terms: list[tuple[int, Fraction, list[tuple[int, Fraction]] | None]],
) -> tuple[int, tuple[tuple[int, int, tuple[tuple[int, int], ...] | None], ...]]:
    """The smallest power of ten that makes every per-unit price an integer, and those integers.

    Returns denominator 0 when no reasonable one exists (the plan then takes the slow path).
    """
    values = [price for _, price, _ in raw_terms]
    values += [price for _, _, tiers in raw_terms for _, price in tiers or ()]
    for exponent in range(40):
        denominator = 10**exponent
        if all((value * denominator).denominator == 1 for value in values):
            break
    else:
        return 0, ()
    terms = tuple(
        (
            kind,
            int(price * denominator),
            None if tiers is None else tuple((start, int(p * denominator)) for start, p in tiers),
        )
        for kind, price, tiers in raw_terms
    )
    return denominator, terms


def _error_plan(error: str) -> _Plan:
    return _Plan((), 1, False, False, False, False, None, None, None, error)


def _fast_cost(plan: _Plan, usage: Usage) -> float | None:
    """The cost as genai-prices computes it, or None to defer to genai-prices."""
    inp = usage.input_tokens or 0
    out = usage.output_tokens or 0
    cr = usage.cached_input_tokens or 0
    cw = usage.cache_write_tokens or 0
    # Cached and cache-write tokens are inside input_tokens: priced apart, never twice.
    plain = inp
    if plan.cr_priced:
        plain -= cr
    if plan.cw_priced:
        plain -= cw
    if plain < 0 or out < 0 or cr < 0 or cw < 0:
        return None  # inconsistent usage: genai-prices' slow path explains what is wrong
    counts = (plain, out, cr, cw, 1)
    total = 0
    for kind, coefficient, tiers in plan.terms:
        count = counts[kind]
        if count:
            if tiers is not None:
                for start, tier_coefficient in tiers:
                    if inp > start:
                        coefficient = tier_coefficient
                        break
            total += coefficient * count
    if total >= _EXACT_LIMIT:
        return None  # beyond Decimal's 28 digits genai-prices would round: let it
    # int / int is correctly rounded in Python, as float(Decimal) is.
    return total / plan.denominator


# --------------------------------------------------------------------------- model lookup


class _Entry:
    """A resolved genai-prices model, with its plans per price period."""

    __slots__ = (
        "conditions",
        "date_only",
        "httptrack_provider",
        "model",
        "plans",
        "provider",
        "reason",
        "static",
        "variant_conditions",
        "variants_apply",
    )

    def __init__(
        self, httptrack_provider: str, provider: Provider, model: ModelInfo, reason: str | None
    ) -> None:
        from genai_prices.types import ModelPrice, StartDateConstraint

        self.httptrack_provider = httptrack_provider
        self.provider = provider
        self.model = model
        self.reason = reason
        # genai-prices ignores the price context for models borrowed from a fallback provider.
        self.variants_apply = any(model is m for m in provider.models)
        # The constraints that decide which prices are in force, in genai-prices' order.
        self.conditions = (
            () if isinstance(model.prices, ModelPrice) else tuple(c.constraint for c in model.prices)
        )
        self.variant_conditions = tuple(v.constraint for v in model.price_variants or ())
        # Start dates only: the price in force is the same for a whole UTC day, so plans are
        # cached per day. Time-of-day windows (DeepSeek off-peak) need a check per call.
        self.date_only = all(
            c is None or isinstance(c, StartDateConstraint) for c in self.conditions + self.variant_conditions
        )
        self.plans: dict[tuple[Any, ...], _Plan] = {}
        self.static: _Plan | None = None
        if isinstance(model.prices, ModelPrice):
            self.static = self._build(datetime.now(UTC), batch=False)

    def plan_for(self, at: datetime | None, batch: bool, tier: tuple[str, str] | None = None) -> _Plan:
        if not batch and tier is None and self.static is not None:
            return self.static
        if at is None:
            at = datetime.now(UTC)
        if self.date_only:
            # StartDateConstraint compares UTC dates; naive datetimes are taken as UTC.
            day = (at.astimezone(UTC) if at.tzinfo is not None else at).date()
            key: tuple[Any, ...] = (day, batch, tier)
        else:
            # Which constraints hold decides the prices: key the plan on exactly that.
            varied = batch or tier is not None
            conditions = self.conditions + self.variant_conditions if varied else self.conditions
            key = (tuple(c is None or c.active(at) for c in conditions), batch, tier)
        plan = self.plans.get(key)
        if plan is None:
            if len(self.plans) >= _MAX_PLANS_PER_MODEL:
                self.plans.clear()
            plan = self.plans[key] = self._build(at, batch, tier)
        return plan

    def _build(self, at: datetime, batch: bool, tier: tuple[str, str] | None = None) -> _Plan:
        model_price: ModelPrice = self.model.get_prices(at)
        factor = None
        context: dict[str, str] = {}
        reason = self.reason
        if tier is not None:
            name, value = tier
            if self.variants_apply and _has_active_variant(self.model, at, {name: value}):
                context[name] = value
                reason = _join(reason, f"{name} {value} price")
            else:
                reason = _join(reason, f"{name} {value}: no price of its own known, standard price")
        if batch:
            if self.variants_apply and _has_active_variant(self.model, at, _BATCH_CONTEXT):
                context.update(_BATCH_CONTEXT)
                reason = _join(reason, "batch price")
            else:
                provider = self.httptrack_provider
                factor = BATCH_DISCOUNTS.get(provider)
                if factor is not None:
                    reason = _join(reason, f"batch: {float(factor):.0%} of the standard price")
                else:
                    reason = _join(reason, f"batch: no batch price known for {provider}, standard price")
        if context:
            model_price = self.model.get_prices(at, context)
        return _plan(
            model_price.__dict__, strict=False, factor=factor, context=context or None, reason=reason
        )


def _has_active_variant(model: ModelInfo, at: datetime, context: Mapping[str, str]) -> bool:
    for variant in model.price_variants or ():
        if variant.constraint is not None and not variant.constraint.active(at):
            continue
        matches = all(context.get(key) == value for key, value in variant.when.items())
        if matches and any(
            v is not None for k, v in variant.prices.__dict__.items() if not k.startswith("_")
        ):
            return True
    return False


class _Key:
    """A call's provider/model/host, normalized once per distinct triple (see :func:`_key`)."""

    __slots__ = ("local_ollama", "lookup_host", "model", "provider", "qualified", "resolved")

    def __init__(self, provider: str, model: str, host: str | None) -> None:
        self.provider = (provider or "generic").strip().lower()
        self.model = model.strip().lower()
        self.qualified = f"{self.provider}/{self.model}"  # the provider-qualified override key
        self.local_ollama = self.provider == "ollama" and not _is_ollama_com(host)
        # The host only helps to find a provider for ``generic`` and unknown provider ids.
        self.lookup_host: str | None = None
        if host and self.provider != "ollama" and PROVIDER_IDS.get(self.provider) is None:
            self.lookup_host = _bare_host(host)
        #: The genai-prices model (``_Entry``) or why there is none (``PriceResult``); lazy, so
        #: genai-prices is not loaded for calls an override or a local model prices.
        self.resolved: _Entry | PriceResult | None = None


@lru_cache(maxsize=_LRU_SIZE)
def _key(provider: str, model: str, host: str | None) -> _Key:
    return _Key(provider, model, host)


@lru_cache(maxsize=_LRU_SIZE)
def _resolve(provider: str, model: str, host: str | None) -> _Entry | PriceResult:
    """Find the genai-prices model for an httptrack provider + model, or why there is none.

    Cached, misses included: a model genai-prices lacks is searched for once, not per row.
    """
    snapshot = _snapshot()
    reason: str | None = None
    if provider == "ollama":
        # Hosted Ollama (ollama.com) has no genai-prices provider today; use one if it appears,
        # rather than pricing the model as another vendor serving a model of the same name.
        gp_id: str | None = "ollama"
    elif provider in PROVIDER_IDS:
        gp_id = PROVIDER_IDS[provider]
    else:
        from genai_prices.data_snapshot import find_provider_by_id

        found = find_provider_by_id(snapshot.providers, provider)
        gp_id = found.id if found is not None else None
    gp_provider: Provider | None = None
    try:
        if gp_id is not None:
            gp_provider = snapshot.find_provider(None, gp_id, None)
        else:
            if host:
                # A user-mapped host may be one genai-prices knows by its API address.
                try:
                    gp_provider = snapshot.find_provider(None, None, f"https://{host}")
                except LookupError:
                    gp_provider = None
            if gp_provider is None:
                gp_provider = snapshot.find_provider(model, None, None)
            reason = f"provider {provider!r}: priced as {gp_provider.id}"
    except LookupError:
        if provider == "ollama":
            return PriceResult(None, "hosted ollama (ollama.com): genai-prices has no prices for it")
        vendor = _vendor_entry(snapshot, provider, model)
        if vendor is not None:
            return vendor
        if gp_id is not None:
            return PriceResult(None, f"genai-prices has no provider {gp_id!r} (for {provider})")
        return PriceResult(None, f"unknown model {model!r} for provider {provider}: no genai-prices provider")
    found_model = gp_provider.find_model(model, all_providers=snapshot.providers)
    if found_model is None:
        vendor = _vendor_entry(snapshot, provider, model)
        return (
            vendor
            if vendor is not None
            else PriceResult(None, f"unknown model {model!r} for provider {provider}")
        )
    return _Entry(provider, gp_provider, found_model, reason)


def _vendor_entry(snapshot: DataSnapshot, provider: str, model: str) -> _Entry | None:
    """A gateway's ``vendor/model`` id (LiteLLM's ``anthropic/claude-...``, ``openai/gpt-4o``)
    priced as the vendor's own model, or ``None``."""
    vendor, _, bare = model.partition("/")
    if not bare:
        return None
    try:
        vendor_provider = snapshot.find_provider(None, PROVIDER_IDS.get(vendor) or vendor, None)
    except LookupError:
        return None
    found = vendor_provider.find_model(bare, all_providers=snapshot.providers)
    if found is None:
        return None
    return _Entry(
        provider, vendor_provider, found, f"model {model!r}: priced as {vendor_provider.id}'s {found.id}"
    )


@lru_cache(maxsize=_LRU_SIZE)
def _override_plan(key: str, items: tuple[tuple[str, Any], ...], factor: Decimal | None) -> _Plan:
    prices: dict[str, Decimal] = {}
    for price_key, value in items:
        try:
            number = float(value)
        except (TypeError, ValueError):
            return _error_plan(f"price override {key!r}: {price_key!r} is not a number: {value!r}")
        if not math.isfinite(number) or number < 0:
            return _error_plan(
                f"price override {key!r}: {price_key!r} must be finite and >= 0, got {value!r}"
            )
        # repr() keeps the decimal the user wrote (0.3 -> Decimal('0.3'), not its binary expansion).
        prices[str(price_key)] = Decimal(repr(number))
    plan = _plan(prices, strict=True, factor=factor, reason=f"price override ({key})", override_prices=prices)
    if plan.error is not None:
        return _error_plan(f"price override {key!r}: {plan.error}")
    return plan


# --------------------------------------------------------------------------- pricing

_NO_MODEL: Final = PriceResult(None, "no model")
_NO_USAGE: Final = PriceResult(None, "no usage reported")
_LOCAL: Final = PriceResult(0.0, _LOCAL_MODEL_REASON)

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

    ``provider`` is httptrack's provider id (see :data:`PROVIDER_IDS`); ``host`` the host the
    call went to (``host[:port]``: tells local Ollama from ollama.com, and helps ``generic``
    providers); ``at`` the call's time (default now; naive means UTC), which picks dated and
    off-peak prices. Token counts are ints.

    ``overrides`` maps ``"model"`` or ``"provider/model"`` (lowercase; the provider-qualified key
    wins) to prices in genai-prices' keys, USD per million tokens (``input_mtok``,
    ``output_mtok``, ``cache_read_mtok``, ``cache_write_mtok``; ``*_kcount`` per thousand). An
    override matches the model as requested, or else genai-prices' id for it, and wins over
    genai-prices, also for models genai-prices does not know. Cache reads and writes with no
    price of their own pay ``input_mtok``; output with no ``output_mtok`` is free.

    ``batch``: the call went through a batch API. Priced with genai-prices' batch prices when it
    has them for the model (``processing=batch``), else with the provider's discount from
    :data:`BATCH_DISCOUNTS` (OpenAI, Azure OpenAI, Anthropic: 50%), else at the standard price
    with a reason saying so.

    ``tier``: the price variant the call ran under, as genai-prices names it:
    ``("service_tier", "flex")`` or ``"priority"`` (OpenAI), ``("speed", "fast")``
    (Anthropic's fast mode). Priced with that variant's prices where genai-prices has them for
    the model at the call's date; else the standard price, with a reason saying so. The
    standard tiers (``default``, ``auto`` ...) are the standard price. Overrides are flat
    prices: the tier does not change them.
    """
    if tier is not None and tier[1] in STANDARD_TIERS:
        tier = None
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
    key = _key(provider, model, host)

    if overrides:
        found = overrides.get(key.qualified)
        if found is not None:
            return _price_override(key.qualified, found, usage, key.provider, batch)
        found = overrides.get(key.model)
        if found is not None:
            return _price_override(key.model, found, usage, key.provider, batch)

    if key.local_ollama:
        return _LOCAL

    entry = key.resolved
    if entry is None:
        entry = key.resolved = _resolve(key.provider, key.model, key.lookup_host)
    if entry.__class__ is PriceResult:
        return entry
    assert isinstance(entry, _Entry)
    model_id = entry.model.id
    provider_id = entry.provider.id

    if overrides and model_id != key.model:
        # An override may name genai-prices' id for the model (``gpt-4o`` for a dated id).
        for name in (f"{key.provider}/{model_id}", model_id):
            found = overrides.get(name)
            if found is not None:
                return _price_override(name, found, usage, key.provider, batch, model_id, provider_id)

    plan = entry.plan_for(at, batch, tier)
    if plan.fast and not usage.extra and not (plan.reasoning_priced and usage.reasoning_tokens):
        cost = _fast_cost(plan, usage)
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
        calc.total_price, plan.factor, _join(plan.reason, note), usage, model, model_id, provider_id
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
    provider: str,
    batch: bool,
    model_id: str | None = None,
    provider_id: str | None = None,
) -> PriceResult:
    # Overrides are the user's own standard prices: a known batch discount applies on top.
    factor = BATCH_DISCOUNTS.get(provider) if batch else None
    plan = _override_plan(name, tuple(prices.items()), factor)
    if plan.error is not None:
        return PriceResult(None, plan.error, model_id, provider_id)
    reason = plan.reason
    if batch:
        if factor is not None:
            reason = _join(reason, f"batch: {float(factor):.0%} of the override price")
        else:
            reason = _join(reason, f"batch: no batch discount known for {provider}")
    if plan.fast and not usage.extra and not (plan.reasoning_priced and usage.reasoning_tokens):
        cost = _fast_cost(plan, usage)
        if cost is not None:
            return _make_result(cost, reason, model_id, provider_id)

    from genai_prices.types import ModelPrice

    gusage, note = _genai_usage(usage)
    try:
        total = ModelPrice(**plan.override_prices or {}).calc_price(gusage)["total_price"]
    except ValueError as exc:
        return PriceResult(None, f"cannot price with override {name!r}: {exc}", model_id, provider_id)
    return _slow_result(total, factor, _join(reason, note), usage, name, model_id, provider_id)


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
        known = _registry()._reported_usage_keys  # private: no public accessor
        for key, value in usage.extra.items():
            if key in values or key in _CORE_USAGE_KEYS:
                continue  # the normalized fields are the source of truth for these
            if key in known:
                values[key] = value
            else:
                unknown.append(key)
    note = f"ignored usage keys genai-prices does not know: {', '.join(sorted(unknown))}" if unknown else None
    return GUsage(**values), note


def _join(first: str | None, second: str | None) -> str | None:
    if first and second:
        return f"{first}; {second}"
    return first or second


def _bare_host(host: str) -> str:
    """``host[:port]`` (or a URL) -> the lowercase host name, without port or brackets."""
    text = host.strip().lower()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.split("/", 1)[0]
    if text.startswith("["):
        return text[1:].split("]", 1)[0]
    if text.count(":") == 1:
        text = text.split(":", 1)[0]
    return text.rstrip(".")


def _is_ollama_com(host: str | None) -> bool:
    # Ollama runs locally by default (localhost:11434); any host but ollama.com is the user's
    # own machine or server, where the model costs nothing per token.
    if not host:
        return False
    name = _bare_host(host)
    return name == "ollama.com" or name.endswith(".ollama.com")
