"""Settings: arguments > HTTPTRACK_* environment > defaults; bad values fail early, by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from httptrack import Settings, SettingsError


def test_defaults_follow_xdg(tmp_path: Path) -> None:
    s = Settings()
    assert s.db == tmp_path / "xdg-data" / "httptrack" / "httptrack.db"
    assert s.cache_dir == tmp_path / "xdg-cache" / "httptrack"
    assert (s.enabled, s.cache, s.store_bodies, s.max_body_bytes) == (True, "on", True, 10 * 1024 * 1024)
    assert s.cache_ttl == {
        "embeddings": 604800.0,
        "models": 86400.0,
        "chat": 3600.0,
        "completion": 1800.0,
        "other": 1800.0,
    }
    assert (s.user, s.service, s.hosts, s.prices) == (None, None, {}, {})


def test_environment_then_arguments(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HTTPTRACK_DB", str(tmp_path / "env.db"))
    monkeypatch.setenv("HTTPTRACK_CACHE", "replay")
    monkeypatch.setenv("HTTPTRACK_MAX_BODY_BYTES", "64KiB")
    monkeypatch.setenv("HTTPTRACK_STORE_BODIES", "off")
    monkeypatch.setenv("HTTPTRACK_USER", "svc-account")
    monkeypatch.setenv("HTTPTRACK_HOSTS", "127.0.0.1:8000=openai, LLM.internal=Anthropic")
    monkeypatch.setenv("HTTPTRACK_CACHE_TTL", "chat=2h,embeddings=30d")
    s = Settings()
    assert s.db == tmp_path / "env.db"
    assert (s.cache, s.max_body_bytes, s.store_bodies, s.user) == ("replay", 65536, False, "svc-account")
    assert s.hosts == {"127.0.0.1:8000": "openai", "llm.internal": "anthropic"}
    assert (s.cache_ttl["chat"], s.cache_ttl["embeddings"], s.cache_ttl["models"]) == (
        7200.0,
        2592000.0,
        86400.0,
    )
    t = Settings(db=tmp_path / "arg.db", cache=False, max_body_bytes=100, store_bodies=True, user="alice")
    assert (t.db, t.cache, t.max_body_bytes, t.store_bodies, t.user) == (
        tmp_path / "arg.db",
        "off",
        100,
        True,
        "alice",
    )
    assert t.replace(cache="refresh").cache == "refresh"
    assert t.replace(cache="refresh").user == "alice"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("HTTPTRACK_ENABLED", "maybe"),
        ("HTTPTRACK_CACHE", "sometimes"),
        ("HTTPTRACK_MAX_BODY_BYTES", "ten"),
        ("HTTPTRACK_MAX_BODY_BYTES", "-5"),
        ("HTTPTRACK_STORE_BODIES", "2"),
        ("HTTPTRACK_HOSTS", "just-a-host"),
        ("HTTPTRACK_HOSTS", "llm.internal:abc=openai"),
        ("HTTPTRACK_HOSTS", "127.0.0.1:8000=antropic"),
        ("HTTPTRACK_HOSTS", "127.0.0.1:8000=opneai"),
        ("HTTPTRACK_MAX_QUEUE", "lots"),
        ("HTTPTRACK_CACHE_TTL", "chat=forever"),
        ("HTTPTRACK_CACHE_TTL", "poetry=1h"),
        ("HTTPTRACK_CACHE_SIZE", "big"),
        ("HTTPTRACK_MAX_QUEUE", "0"),
    ],
)
def test_bad_environment_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        Settings()


def test_hosts_typos_are_named_and_other_names_are_openai_compatible_labels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPTRACK_HOSTS", "127.0.0.1:8000=antropic")
    with pytest.raises(SettingsError) as raised:
        Settings()
    assert str(raised.value) == (
        "HTTPTRACK_HOSTS: unknown provider 'antropic' for 127.0.0.1:8000; did you mean 'anthropic'? "
        "(a name httptrack does not know is read as an OpenAI-compatible API)"
    )
    monkeypatch.setenv("HTTPTRACK_HOSTS", "gpu1:8000=vllm,[::1]:9000=litellm,llm.internal:443=ollama")
    assert Settings().hosts == {"gpu1:8000": "vllm", "[::1]:9000": "litellm", "llm.internal:443": "ollama"}
    monkeypatch.setenv("HTTPTRACK_MAX_QUEUE", "5_000")
    assert Settings().max_queue == 5000


def test_bad_arguments_name_the_argument() -> None:
    with pytest.raises(SettingsError, match="max_body_bytes"):
        Settings(max_body_bytes="huge")
    with pytest.raises(SettingsError, match="prices"):
        Settings(prices={"m": {"input_per_token": 1}})
    with pytest.raises(SettingsError, match="redact"):
        Settings(redact="not callable")  # type: ignore[arg-type]


def test_settings_are_immutable() -> None:
    s = Settings()
    with pytest.raises(AttributeError):
        s.cache = "off"  # type: ignore[misc]
    assert s == Settings()
    assert "redact" not in repr(s)
