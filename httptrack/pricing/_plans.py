"""Plans: a genai-prices price set reduced to what pricing our usage figures needs.

Pricing runs in the background writer, which must keep up with tens of thousands of rows a
second. A *plan* holds the few prices that matter for our usage figures as exact integers
over a power of ten, so the fast path (:func:`fast_cost`) is integer arithmetic and one
correctly rounded division: the figure is identical to ``float(calc_price(...).total_price)``
(both are the nearest float to the same exact sum). Whatever the plan does not model (units
only genai-prices' general decomposition can split, per-reasoning-token prices) marks it for
genai-prices' own calculation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any, Final

from .._usage import Usage
from ._data import registry

__all__ = ["CORE_USAGE_KEYS", "Plan", "error_plan", "fast_cost", "make_plan"]

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
CORE_USAGE_KEYS: Final = frozenset(
    {"input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "output_reasoning_tokens"}
)


@dataclass(slots=True, frozen=True)
class Plan:
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


def make_plan(
    items: Mapping[str, Any],
    *,
    strict: bool,
    factor: Decimal | None = None,
    context: Mapping[str, str] | None = None,
    reason: str | None = None,
    override_prices: Mapping[str, Decimal] | None = None,
) -> Plan:
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
        reg = registry()
        reported = [reg.units[k] for k in CORE_USAGE_KEYS if k != "output_reasoning_tokens"]
        reasoning_unit = reg.units["output_reasoning_tokens"]
        for key in others:
            try:
                unit = reg.unit_for_price_key(key)
            except KeyError:
                if strict:
                    return error_plan(f"unknown price key {key!r}")
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
        return error_plan("a cache price is set without input_mtok")
    if others:
        from genai_prices.validation import validate_priced_units

        reg = registry()
        known_keys = reg._all_price_keys  # private: no public accessor
        units = [
            reg.unit_for_price_key(key)
            for key, value in items.items()
            if value is not None and key in known_keys
        ]
        try:
            validate_priced_units(units, reg)
        except ValueError as exc:
            if strict:
                return error_plan(str(exc))
            fast = False  # genai-prices will raise; the slow path reports its words
    denominator, terms = _integer_terms(raw_terms)
    if not denominator:
        fast = False
    return Plan(
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


def error_plan(error: str) -> Plan:
    return Plan((), 1, False, False, False, False, None, None, None, error)


def fast_cost(plan: Plan, usage: Usage) -> float | None:
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
