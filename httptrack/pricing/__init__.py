"""Prices: what a call cost, in USD.

It owns the lookup in genai-prices' bundled data (loaded lazily, in the writer thread) and
the user's price overrides (``Settings(prices=...)``, ``HTTPTRACK_PRICES``).

- ``_prices``: the lookup, its fast path, the override file, and the cost of one call.
"""

__all__: list[str] = []
