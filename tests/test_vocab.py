"""The vocabularies (``_vocab``, ``_faults.FaultKind``): one list of each, used everywhere,
documented."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from httptrack import Settings, SettingsError, _settings, _vocab
from httptrack._faults import FAULT_KINDS, fault_counts, report_fault

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIR = REPO / "httptrack"


def _sources() -> dict[Path, ast.Module]:
    return {p: ast.parse(p.read_text(encoding="utf-8")) for p in sorted(PACKAGE_DIR.rglob("*.py"))}


# -- fault kinds -----------------------------------------------------------------------------------


def _report_fault_kinds() -> dict[str, list[str]]:
    """The first argument of every ``report_fault(...)`` call: kind -> where."""
    kinds: dict[str, list[str]] = {}
    for path, tree in _sources().items():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", None)) == "report_fault"
                and node.args
            ):
                first = node.args[0]
                kind = first.value if isinstance(first, ast.Constant) else f"<{ast.unparse(first)}>"
                kinds.setdefault(str(kind), []).append(f"{path.relative_to(REPO)}:{node.lineno}")
    return kinds


def test_every_reported_kind_is_a_fault_kind() -> None:
    kinds = _report_fault_kinds()
    # One call reports a kind held in a variable (log/_sqlite.py, typed FaultKind there).
    unknown = {k: where for k, where in kinds.items() if k not in FAULT_KINDS and not k.startswith("<")}
    assert not unknown
    assert len(kinds) > 15  # the reader found the calls


def test_every_fault_kind_is_used() -> None:
    constants = {
        node.value
        for path, tree in _sources().items()
        if path.name != "_faults.py"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    assert set(FAULT_KINDS) <= constants, set(FAULT_KINDS) - constants


def test_every_fault_kind_is_documented() -> None:
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## Faults", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `(\w+)` \|", section, re.MULTILINE)
    assert documented == sorted(FAULT_KINDS)


def test_fault_counts_keys_are_plain_strings() -> None:
    report_fault("control_headers", "a test fault")
    assert fault_counts() == {"control_headers": 1}


# -- operations, outcomes, statuses, cache modes ---------------------------------------------------


def test_value_tuples_follow_the_literals() -> None:
    assert _vocab.OPERATIONS == ("chat", "completion", "embeddings", "models", "other")
    assert _vocab.OUTCOMES == ("complete", "cut_short", "failed", "transport_error", "cache_miss")
    assert _vocab.STATUSES == ("success", "error")
    assert _vocab.CACHE_MODES == ("on", "off", "refresh", "replay")
    # The old names, kept for the CLI and older code.
    assert _settings.OPERATIONS is _vocab.OPERATIONS
    assert _settings.CACHE_MODES is _vocab.CACHE_MODES


def test_every_operation_has_a_default_ttl() -> None:
    assert tuple(sorted(Settings().cache_ttl)) == tuple(sorted(_vocab.OPERATIONS))


@pytest.mark.parametrize("mode", _vocab.CACHE_MODES)
def test_settings_take_every_cache_mode(mode: str) -> None:
    assert Settings(cache=mode.upper()).cache == mode


def test_settings_refuse_other_words() -> None:
    with pytest.raises(SettingsError, match="expected one of on, off, refresh, replay"):
        Settings(cache="sometimes")
    with pytest.raises(SettingsError, match="unknown operation 'chats'"):
        Settings(cache_ttl="chats=1h")
