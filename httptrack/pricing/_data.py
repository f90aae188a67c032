"""genai-prices' bundled data, loaded once, lazily.

Importing genai-prices and loading its data takes 0.25-0.45 s: never at module import, only
on the first price lookup or in :func:`warm_up`, which the writer thread calls. Its network
updater (``UpdatePrices``) is never used: prices are the bundled snapshot.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from genai_prices.data_snapshot import DataSnapshot
    from genai_prices.units import UnitRegistry

__all__ = ["registry", "snapshot", "warm_up"]

_lock = threading.Lock()
_snapshot_cache: DataSnapshot | None = None
_registry_cache: UnitRegistry | None = None


def warm_up() -> None:
    """Load genai-prices' bundled data now (a few tenths of a second), so the first priced call does not wait.

    Meant for the writer thread, off the application's thread. Safe to call more than once.
    """
    snapshot()


def snapshot() -> DataSnapshot:
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


def registry() -> UnitRegistry:
    if _registry_cache is None:
        snapshot()
    assert _registry_cache is not None
    return _registry_cache
