"""What a call cost, from genai-prices' bundled data and the user's price overrides.

- ``_overrides``: the user's price overrides, checked in one place (a leaf: the settings use
  it without importing the rest of pricing);
- ``_data``: genai-prices' bundled data, loaded once, lazily;
- ``_plans``: a price set reduced to exact integers, and the fast path over them;
- ``_lookup``: from httptrack's provider and model to genai-prices' model, with its plans;
- ``_prices``: :func:`price_usage`, the one entry point the writer calls.

Importing this package is light: ``price_usage``, ``PriceResult`` and ``warm_up`` load the
rest (decimal, fractions, and on first use genai-prices) when first asked for.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._overrides import check_prices, load_price_file

if TYPE_CHECKING:
    from ._prices import PriceResult, price_usage, warm_up

__all__ = ["PriceResult", "check_prices", "load_price_file", "price_usage", "warm_up"]

_LAZY = frozenset({"PriceResult", "price_usage", "warm_up"})


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module("._prices", __name__), name)
    globals()[name] = value
    return value
