"""The one duration vocabulary (``_time``): settings' TTLs and the log's "since" read it alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from httptrack import Settings, SettingsError
from httptrack._time import UNIT_SECONDS, duration_seconds, parse_when

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("30m", 1800.0),
        ("1.5h", 5400.0),
        ("7d", 7 * 86400.0),
        ("1w", 7 * 86400.0),
        (" 2 H ", 7200.0),
        ("3600", 3600.0),
    ],
)
def test_duration_seconds(text: str, seconds: float) -> None:
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "7 days", "-2h", "2y", "1.h", "h"])
def test_not_a_duration(text: str) -> None:
    assert duration_seconds(text) is None
    assert duration_seconds(text, unit_required=True) is None


def test_a_bare_number_needs_a_unit_where_asked() -> None:
    assert duration_seconds("2026") == 2026.0
    assert duration_seconds("2026", unit_required=True) is None


@pytest.mark.parametrize("unit", [*UNIT_SECONDS, *(u.upper() for u in UNIT_SECONDS)])
def test_settings_and_since_read_every_unit_alike(unit: str) -> None:
    seconds = Settings(cache_ttl=f"chat=2{unit}").cache_ttl["chat"]
    assert seconds == 2 * UNIT_SECONDS[unit.lower()]
    expected = NOW - timedelta(seconds=seconds)
    assert parse_when(f"2{unit}", now=NOW) == expected.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def test_settings_refuse_what_the_vocabulary_refuses() -> None:
    with pytest.raises(SettingsError, match=r"cache_ttl\[chat\]: expected a duration"):
        Settings(cache_ttl="chat=2y")
