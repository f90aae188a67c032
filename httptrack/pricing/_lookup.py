"""From an httptrack provider and model to genai-prices' model, and its plans per price period.

``(provider, model, host)`` resolves to genai-prices' ``Provider`` + ``ModelInfo`` once, in a
bounded LRU that remembers misses too (an unknown model is searched for once, not per row).
What a provider family says about its prices (``Provider.price_provider``, ``batch_discount``,
``runs_locally``) is read from the family, never written here. Each resolved model keeps the
plan (``_plans``) of the prices in force per UTC day, or per active time window for
off-peak prices, and per batch and price tier.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final

from ..providers import Provider as Family
from ..providers import registered_providers
from ._data import snapshot
from ._plans import Plan, make_plan

if TYPE_CHECKING:
    from genai_prices.data_snapshot import DataSnapshot
    from genai_prices.types import ModelInfo, ModelPrice, Provider

__all__ = ["Entry", "Key", "PriceResult", "join_reasons", "key_for", "resolve"]

_BATCH_CONTEXT: Final[Mapping[str, str]] = {"processing": "batch"}
_LRU_SIZE: Final = 4096
_MAX_PLANS_PER_MODEL: Final = 64


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


def join_reasons(first: str | None, second: str | None) -> str | None:
    if first and second:
        return f"{first}; {second}"
    return first or second


def _family(name: str) -> Family | None:
    """The provider family of that name, if httptrack knows one."""
    return registered_providers().get(name)


def _discount(family: Family | None) -> Decimal | None:
    """The family's batch discount as an exact decimal (``0.5`` -> ``Decimal("0.5")``)."""
    if family is None or family.batch_discount is None:
        return None
    return Decimal(repr(family.batch_discount))


class Entry:
    """A resolved genai-prices model, with its plans per price period."""

    __slots__ = (
        "batch_discount",
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
        self,
        httptrack_provider: str,
        provider: Provider,
        model: ModelInfo,
        reason: str | None,
        batch_discount: Decimal | None,
    ) -> None:
        from genai_prices.types import ModelPrice, StartDateConstraint

        self.httptrack_provider = httptrack_provider
        self.batch_discount = batch_discount
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
        self.plans: dict[tuple[Any, ...], Plan] = {}
        self.static: Plan | None = None
        if isinstance(model.prices, ModelPrice):
            self.static = self._build(datetime.now(UTC), batch=False)

    def plan_for(self, at: datetime | None, batch: bool, tier: tuple[str, str] | None = None) -> Plan:
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

    def _build(self, at: datetime, batch: bool, tier: tuple[str, str] | None = None) -> Plan:
        model_price: ModelPrice = self.model.get_prices(at)
        factor = None
        context: dict[str, str] = {}
        reason = self.reason
        if tier is not None:
            name, value = tier
            if self.variants_apply and _has_active_variant(self.model, at, {name: value}):
                context[name] = value
                reason = join_reasons(reason, f"{name} {value} price")
            else:
                reason = join_reasons(reason, f"{name} {value}: no price of its own known, standard price")
        if batch:
            if self.variants_apply and _has_active_variant(self.model, at, _BATCH_CONTEXT):
                context.update(_BATCH_CONTEXT)
                reason = join_reasons(reason, "batch price")
            else:
                provider = self.httptrack_provider
                factor = self.batch_discount
                if factor is not None:
                    reason = join_reasons(reason, f"batch: {float(factor):.0%} of the standard price")
                else:
                    reason = join_reasons(
                        reason, f"batch: no batch price known for {provider}, standard price"
                    )
        if context:
            model_price = self.model.get_prices(at, context)
        return make_plan(
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


class Key:
    """A call's provider/model/host, normalized once per distinct triple (see :func:`key_for`)."""

    __slots__ = ("batch_discount", "host", "local", "model", "provider", "qualified", "resolved")

    def __init__(self, provider: str, model: str, host: str | None) -> None:
        self.provider = (provider or "generic").strip().lower()
        self.model = model.strip().lower()
        self.qualified = f"{self.provider}/{self.model}"  # the provider-qualified override key
        self.host = _bare_host(host) if host else None
        family = _family(self.provider)
        self.batch_discount = _discount(family)
        #: A model on the user's own machine (a local Ollama): free, unless an override prices it.
        self.local: PriceResult | None = None
        if family is not None and family.runs_locally(self.host):
            self.local = PriceResult(0.0, f"local model ({self.provider}): free")
        #: The genai-prices model (``Entry``) or why there is none (``PriceResult``); lazy, so
        #: genai-prices is not loaded for calls an override or a local model prices.
        self.resolved: Entry | PriceResult | None = None


@lru_cache(maxsize=_LRU_SIZE)
def key_for(provider: str, model: str, host: str | None) -> Key:
    return Key(provider, model, host)


@lru_cache(maxsize=_LRU_SIZE)
def resolve(provider: str, model: str, host: str | None) -> Entry | PriceResult:
    """Find the genai-prices model for an httptrack provider + model, or why there is none.

    ``host`` (a bare host name) helps find genai-prices' provider for a family that names
    none (``generic``, a self-hosted server), and says where a call went when genai-prices
    has no prices for it. Cached, misses included: a model genai-prices lacks is searched for
    once, not per row.
    """
    data = snapshot()
    family = _family(provider)
    declared = family.price_provider if family is not None else None
    discount = _discount(family)
    reason: str | None = None
    if declared is not None:
        gp_id: str | None = declared
    else:
        from genai_prices.data_snapshot import find_provider_by_id

        found = find_provider_by_id(data.providers, provider)
        gp_id = found.id if found is not None else None
    gp_provider: Provider | None = None
    try:
        if gp_id is not None:
            gp_provider = data.find_provider(None, gp_id, None)
        else:
            if host:
                # A user-mapped host may be one genai-prices knows by its API address.
                try:
                    gp_provider = data.find_provider(None, None, f"https://{host}")
                except LookupError:
                    gp_provider = None
            if gp_provider is None:
                gp_provider = data.find_provider(model, None, None)
            reason = f"provider {provider!r}: priced as {gp_provider.id}"
    except LookupError:
        if declared is not None:
            # The family names its prices (hosted Ollama: "ollama"), and genai-prices has none
            # yet: never priced as another vendor serving a model of the same name.
            where = f"{provider} at {host}" if host else provider
            return PriceResult(None, f"{where}: genai-prices has no prices for it (no provider {declared!r})")
        vendor = _vendor_entry(data, provider, model, discount)
        if vendor is not None:
            return vendor
        if gp_id is not None:
            return PriceResult(None, f"genai-prices has no provider {gp_id!r} (for {provider})")
        return PriceResult(None, f"unknown model {model!r} for provider {provider}: no genai-prices provider")
    found_model = gp_provider.find_model(model, all_providers=data.providers)
    if found_model is None:
        vendor = _vendor_entry(data, provider, model, discount)
        return (
            vendor
            if vendor is not None
            else PriceResult(None, f"unknown model {model!r} for provider {provider}")
        )
    return Entry(provider, gp_provider, found_model, reason, discount)


def _vendor_entry(data: DataSnapshot, provider: str, model: str, discount: Decimal | None) -> Entry | None:
    """A gateway's ``vendor/model`` id (LiteLLM's ``anthropic/claude-...``, ``openai/gpt-4o``)
    priced as the vendor's own model, or ``None``."""
    vendor, _, bare = model.partition("/")
    if not bare:
        return None
    family = _family(vendor)
    vendor_id = (family.price_provider if family is not None else None) or vendor
    try:
        vendor_provider = data.find_provider(None, vendor_id, None)
    except LookupError:
        return None
    found = vendor_provider.find_model(bare, all_providers=data.providers)
    if found is None:
        return None
    return Entry(
        provider,
        vendor_provider,
        found,
        f"model {model!r}: priced as {vendor_provider.id}'s {found.id}",
        discount,
    )


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
