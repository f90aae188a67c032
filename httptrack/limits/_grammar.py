"""Limits as text (``HTTPTRACK_LIMITS``) and as files (JSON, TOML or that same text).

One limit per clause; clauses are separated by ``;`` or new lines, ``#`` starts a comment::

    usd=5/day by user
    requests=60/minute by service wait
    tokens=200k/hour by user,model match provider=openai alert 0.5,0.8,1
    usd=100/month alert                      # never blocks: alerts only

A clause is ``METRIC=AMOUNT/PERIOD`` followed by any of, in any order:

=============================== ========================================================
``by user,model``               the dimensions counted apart (``user``, ``service``,
                                ``session``, ``model``, ``provider``, ``key``)
``match provider=openai,model=gpt-4*|o3*``
                                which calls count (``*`` wildcards, ``|`` alternatives)
``reject`` | ``wait`` | ``alert`` the action (``reject`` when none is named)
``alert 0.5,0.8,1``             the alert fractions (``alert`` followed by numbers; also
                                ``alert_at=0.5,0.8,1``, ``alert_at=none``, or ``80%``)
``unpriced=block``              refuse calls whose cost cannot be estimated (``usd`` only)
``max_wait=30s``                the longest a ``wait`` limit holds a call
=============================== ========================================================

``AMOUNT`` is a number (``5``, ``0.50``, ``$5``, ``200_000``, ``200k``, ``1.5m``);
``PERIOD`` a unit (``second`` ... ``month``, plurals too) or a duration (``30s``, ``5m``,
``2h``, ``1d``, ``90``: epoch-aligned windows of that many seconds).

A file: ``.json`` holds a list (or ``{"limits": [...]}``) of objects with
:class:`~httptrack.Limit`'s keyword arguments, or of clauses as strings; ``.toml`` a
``limits`` array (``[[limits]]`` tables, or strings); any other file is read as clauses.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ._limit import METRICS, Limit, LimitError, parse_period

__all__ = ["coerce_limits", "load_limits_file", "parse_limit", "parse_limits"]

_HEAD = re.compile(r"(?P<metric>[a-z]+)=\$?(?P<amount>[0-9][0-9_.]*(?:e-?[0-9]+)?[km]?)/(?P<per>\S+)", re.I)
_SCALE = {"k": 1_000, "m": 1_000_000}
_ACTION_WORDS = ("reject", "wait", "alert")
_FRACTIONS = re.compile(r"[0-9.]+%?(?:,[0-9.]+%?)*")
_OPTIONS = ("alert_at", "unpriced", "max_wait", "action")
#: What a limits file's entry may hold: Limit's keyword arguments.
_KEYWORDS = ("usd", "requests", "tokens", "per", "by", "match", "action", "alert_at", "unpriced", "max_wait")


def _number(text: str, what: str, clause: str, source: str) -> float:
    scale = 1
    if text[-1:].lower() in _SCALE:
        scale = _SCALE[text[-1].lower()]
        text = text[:-1]
    try:
        return float(text.replace("_", "")) * scale
    except ValueError:
        raise LimitError(f"{source}: {clause!r}: {what} {text!r} is not a number") from None


def _fraction_list(text: str, clause: str, source: str) -> tuple[float, ...]:
    if text.lower() == "none":
        return ()
    values = []
    for part in text.split(","):
        percent = part.endswith("%")
        value = _number(part.removesuffix("%"), "alert fraction", clause, source)
        values.append(value / 100 if percent else value)
    return tuple(values)


def parse_limit(clause: str, source: str = "limit") -> Limit:
    """One clause of the grammar (see the module's doc) as a :class:`Limit`."""
    text = clause.strip()
    # One token per part: "by user, model" and "usd = 5 / day" read as written.
    normalized = re.sub(r"\s*([,=/|])\s*", r"\1", text)
    tokens = normalized.split()
    if not tokens:
        raise LimitError(f"{source}: empty limit")
    head = _HEAD.fullmatch(tokens[0])
    if head is None or head["metric"].lower() not in METRICS:
        raise LimitError(
            f"{source}: {text!r}: a limit starts with usd=AMOUNT/PERIOD, requests=AMOUNT/PERIOD "
            "or tokens=AMOUNT/PERIOD (e.g. usd=5/day, requests=60/minute)"
        )
    metric = head["metric"].lower()
    amount = _number(head["amount"], metric, text, source)
    kwargs: dict[str, Any] = {metric: amount if metric == "usd" else _whole(amount, metric, text, source)}
    try:
        kwargs["per"] = parse_period(head["per"], "period")[0]
    except LimitError as exc:
        raise LimitError(f"{source}: {text!r}: {exc}") from None

    def once(name: str, value: Any) -> None:
        if name in kwargs:
            raise LimitError(f"{source}: {text!r}: {name} is given twice")
        kwargs[name] = value

    rest = tokens[1:]
    i = 0
    while i < len(rest):
        word = rest[i]
        lower = word.lower()
        following = rest[i + 1] if i + 1 < len(rest) else None
        if lower in ("by", "match"):
            if following is None:
                raise LimitError(f"{source}: {text!r}: {lower} needs a value (e.g. {lower} user)")
            if lower == "by":
                once("by", following.split(","))
            else:
                once("match", _match(following, text, source))
            i += 2
        elif lower == "alert" and following is not None and _FRACTIONS.fullmatch(following):
            once("alert_at", _fraction_list(following, text, source))
            i += 2
        elif lower in _ACTION_WORDS:
            once("action", lower)
            i += 1
        elif "=" in word:
            name, _, value = word.partition("=")
            name = name.lower()
            if name not in _OPTIONS:
                raise LimitError(
                    f"{source}: {text!r}: unknown option {name!r} (known: {', '.join(_OPTIONS)})"
                )
            if name == "alert_at":
                once(name, _fraction_list(value, text, source))
            elif name == "max_wait":
                try:
                    once(name, parse_period(value, "max_wait")[1])
                except LimitError as exc:
                    raise LimitError(f"{source}: {text!r}: {exc}") from None
            else:
                once(name, value.lower())
            i += 1
        else:
            raise LimitError(
                f"{source}: {text!r}: unexpected {word!r} (expected by ..., match ..., reject, wait, "
                "alert, alert 0.5,0.8,1, unpriced=..., max_wait=...)"
            )
    try:
        return Limit(**kwargs)
    except LimitError as exc:
        raise LimitError(f"{source}: {text!r}: {str(exc).removeprefix('Limit: ')}") from None


def _whole(amount: float, metric: str, clause: str, source: str) -> int:
    if not amount.is_integer():
        raise LimitError(f"{source}: {clause!r}: {metric} must be a whole number")
    return int(amount)


def _match(text: str, clause: str, source: str) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for pair in text.split(","):
        name, sep, value = pair.partition("=")
        if not sep or not name or not value:
            raise LimitError(f"{source}: {clause!r}: match expects field=value pairs, got {pair!r}")
        fields.setdefault(name.lower(), []).extend(value.split("|"))
    return fields


def parse_limits(text: str, source: str = "HTTPTRACK_LIMITS") -> list[Limit]:
    """Every clause of ``text`` (separated by ``;`` or new lines; ``#`` comments)."""
    limits = []
    for line in text.splitlines():
        for clause in line.split("#", 1)[0].split(";"):
            if clause.strip():
                limits.append(parse_limit(clause, source))
    return limits


def load_limits_file(path: str | os.PathLike[str]) -> list[Limit]:
    """The limits in a ``.json``, ``.toml`` or text file (see the module's doc)."""
    path = Path(path).expanduser()
    source = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise LimitError(f"limits file {source}: cannot be read ({exc.strerror or exc})") from None
    suffix = path.suffix.lower()
    if suffix not in (".json", ".toml"):
        return parse_limits(raw.decode("utf-8", "replace"), source)
    try:
        if suffix == ".json":
            data: Any = json.loads(raw)
        else:
            import tomllib

            data = tomllib.loads(raw.decode("utf-8", "replace"))
    except ValueError as exc:
        raise LimitError(f"limits file {source}: not valid {suffix[1:].upper()}: {exc}") from None
    if isinstance(data, Mapping):
        if "limits" not in data:
            raise LimitError(f"limits file {source}: expected a 'limits' list")
        data = data["limits"]
    if not isinstance(data, list):
        raise LimitError(f"limits file {source}: expected a list of limits")
    return [_entry(item, f"{source}[{index}]") for index, item in enumerate(data)]


def _entry(item: object, source: str) -> Limit:
    if isinstance(item, Limit):
        return item
    if isinstance(item, str):
        return parse_limit(item, source)
    if isinstance(item, Mapping):
        unknown = sorted(str(k) for k in item if k not in _KEYWORDS)
        if unknown:
            raise LimitError(f"{source}: unknown key {unknown[0]!r} (known: {', '.join(_KEYWORDS)})")
        if "per" not in item:
            raise LimitError(f"{source}: missing 'per' (the window: day, hour, ... or seconds)")
        try:
            return Limit(**{str(k): v for k, v in item.items()})
        except LimitError as exc:
            raise LimitError(f"{source}: {str(exc).removeprefix('Limit: ')}") from None
    raise LimitError(f"{source}: expected a Limit, a clause such as 'usd=5/day by user', or a mapping")


def coerce_limits(value: object, name: str = "limits") -> tuple[Limit, ...]:
    """Limits however they are given: a :class:`Limit`, clauses as text, ``@path`` or a
    ``Path`` to a file, or a list of any of these (and mappings of ``Limit`` arguments)."""
    if value is None:
        return ()
    if isinstance(value, Limit):
        return (value,)
    if isinstance(value, os.PathLike):
        return tuple(load_limits_file(value))
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("@"):
            return tuple(load_limits_file(text[1:].strip()))
        return tuple(parse_limits(text, name))
    if isinstance(value, Mapping) or not isinstance(value, Iterable):
        raise LimitError(f"{name}: expected a list of Limit, got {value!r}")
    limits: list[Limit] = []
    for index, item in enumerate(value):
        if isinstance(item, str | os.PathLike) and not isinstance(item, Limit):
            limits.extend(coerce_limits(item, f"{name}[{index}]"))
        else:
            limits.append(_entry(item, f"{name}[{index}]"))
    return tuple(limits)
