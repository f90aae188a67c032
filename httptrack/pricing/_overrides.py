"""Price overrides: the user's own prices, checked here and nowhere else.

``{"model" or "provider/model": {"input_mtok": 2.5, ...}}``: USD per million tokens
(``*_mtok``) or per thousand (``*_kcount``) ..., with genai-prices' key names. The same
rules hold wherever overrides come from: a price file (``HTTPTRACK_PRICES``, read by
:func:`load_price_file`), ``Settings(prices=...)`` (both checked when the settings are made,
so a bad entry fails at once) and a ``price_usage(overrides=...)`` call. Whether a key is one
genai-prices knows is checked when pricing.

A leaf module (it imports nothing but exceptions): ``_settings`` checks with it, and pricing
prices with what it returns; neither imports the other.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .._errors import PriceFileError, SettingsError

if TYPE_CHECKING:
    import os

__all__ = ["PRICE_KEY_SUFFIXES", "check_entry", "check_prices", "load_price_file"]

#: How genai-prices names prices: per million tokens/characters, per thousand requests or
#: pages (``web_searches_kcount``), per billion pixels, per hour of audio.
PRICE_KEY_SUFFIXES = ("_mtok", "_kcount", "_kpages", "_mchars", "_gpixels", "_hours")


def check_entry(entry: object) -> dict[str, float]:
    """One model's prices, as floats; raises ``ValueError`` saying what is wrong. A price is
    a finite non-negative number: ``bool`` (an ``int`` in Python) is never one, and strings
    are refused rather than guessed."""
    if not isinstance(entry, Mapping):
        raise ValueError(f'expected an object such as {{"input_mtok": 2.5}}, got {type(entry).__name__}')
    values: dict[str, float] = {}
    for key, price in entry.items():
        if not isinstance(key, str) or not key.endswith(PRICE_KEY_SUFFIXES):
            raise ValueError(
                f"unknown price {key!r} (use input_mtok, output_mtok, cache_read_mtok, cache_write_mtok ...)"
            )
        if isinstance(price, bool) or not isinstance(price, int | float):
            raise ValueError(f"{key!r} must be a number, got {price!r}")
        if not math.isfinite(price) or price < 0:
            raise ValueError(f"{key!r} must be a finite non-negative number, got {price!r}")
        values[key] = float(price)
    return values


def check_prices(
    prices: object, where: str, error: type[SettingsError] = SettingsError
) -> dict[str, dict[str, float]]:
    """Every entry of ``prices`` checked (:func:`check_entry`), model names lowercased; raises
    ``error`` naming ``where`` (the argument or the file) and the entry at fault."""
    if not isinstance(prices, Mapping):
        raise error(
            f'{where}: expected a JSON object such as {{"gpt-4o": {{"input_mtok": 2.5}}}}, '
            f"got {type(prices).__name__}"
        )
    checked: dict[str, dict[str, float]] = {}
    for model, entry in prices.items():
        name = str(model).strip().lower()
        if not name:
            raise error(f"{where}: entry with an empty model name")
        try:
            checked[name] = check_entry(entry)
        except ValueError as exc:
            raise error(f"{where}: entry {model!r}: {exc}") from None
    return checked


def load_price_file(path: str | os.PathLike[str]) -> dict[str, dict[str, float]]:
    """Read a JSON price override file (see the module's docstring). Raises
    :class:`PriceFileError` naming the file and the entry at fault."""
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
    return check_prices(data, where, PriceFileError)
