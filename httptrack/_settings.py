"""Settings: constructor arguments > ``HTTPTRACK_*`` environment variables > defaults.

Every value is resolved and validated once, when a ``Settings`` is made (normally when a
transport is constructed), so a bad value is a clear error right there, naming the setting,
instead of a surprise on the hundredth call.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from ._errors import SettingsError
from ._time import duration_seconds
from ._vocab import CACHE_MODES, OPERATIONS, CacheMode, Operation, is_cache_mode, is_operation
from .log._url import DatabaseURL, LogTarget, log_target

# CACHE_MODES and OPERATIONS live in _vocab; imported from here too (the CLI, older code).
if TYPE_CHECKING:
    from .limits import Limit

__all__ = [
    "CACHE_MODES",
    "OPERATIONS",
    "WRITER_MODES",
    "Retention",
    "Settings",
    "SettingsError",
    "WriterMode",
    "parse_retention",
]

_DEFAULT_TTL: dict[Operation, float] = {
    "embeddings": 7 * 86400.0,
    "models": 86400.0,
    "chat": 3600.0,
    "completion": 1800.0,
    "other": 1800.0,
}
_DEFAULT_MAX_BODY = 10 * 1024 * 1024
_DEFAULT_MAX_QUEUE = 200_000
#: Hits per cache key per minute (per process) before the loop guard sends the request.
_DEFAULT_CACHE_MAX_HITS = 60
#: Seconds an identical request waits for one already in flight (single-flight).
_DEFAULT_CACHE_WAIT = 60.0

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
}


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return None if value is None else value.strip()


def parse_bool(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise SettingsError(f"{name}: expected on/off (1/0, true/false), got {value!r}")


def parse_size(value: object, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
        unit = match.group(2).lower() if match else ""
        if not match or unit not in _UNITS:
            raise SettingsError(f"{name}: expected a size in bytes such as 10485760 or 10MiB, got {value!r}")
        size = int(float(match.group(1)) * _UNITS[unit])
    if size < 0:
        raise SettingsError(f"{name}: must not be negative, got {value!r}")
    return size


def parse_count(value: object, name: str) -> int:
    """A whole number (``200000``; ``_`` separators allowed)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip().replace("_", "")
    if not text.lstrip("-").isdigit():
        raise SettingsError(f"{name}: expected a whole number such as 200000, got {value!r}")
    return int(text)


def parse_duration(value: object, name: str) -> float:
    """Seconds from ``3600``, ``90s``, ``30m``, ``1h``, ``7d`` or ``1w``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        parsed = duration_seconds(str(value))
        if parsed is None:
            raise SettingsError(f"{name}: expected a duration such as 3600, 30m, 1h or 7d, got {value!r}")
        seconds = parsed
    if seconds < 0:
        raise SettingsError(f"{name}: must not be negative, got {value!r}")
    return seconds


def parse_cache_mode(value: object, name: str) -> CacheMode:
    if isinstance(value, bool):
        return "on" if value else "off"
    text = str(value).strip().lower()
    if is_cache_mode(text):
        return text
    if text in _TRUE:
        return "on"
    if text in _FALSE:
        return "off"
    raise SettingsError(f"{name}: expected one of {', '.join(CACHE_MODES)}, got {value!r}")


#: The schemes of a shared cache URL (redis-py's: TCP, TLS, a Unix socket).
CACHE_URL_SCHEMES = ("redis", "rediss", "unix")


WriterMode = Literal["thread", "process"]
WRITER_MODES: tuple[WriterMode, ...] = get_args(WriterMode)


def parse_writer(value: object, name: str) -> WriterMode:
    text = str(value).strip().lower()
    for mode in WRITER_MODES:
        if text == mode:
            return mode
    raise SettingsError(f"{name}: expected thread or process, got {value!r}")


def parse_cache_url(value: object, name: str) -> str:
    """A shared cache's URL: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://``
    (TLS) or ``unix:///path/to/redis.sock``. Checked here without importing redis-py."""
    from urllib.parse import urlsplit

    text = str(value).strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - a bad port raises here, now
    except ValueError as exc:
        raise SettingsError(f"{name}: not a URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in CACHE_URL_SCHEMES:
        raise SettingsError(
            f"{name}: expected a redis://host:6379/0 URL (or rediss://, unix://), got {_shown_url(text)!r}"
        )
    if scheme != "unix" and not parts.hostname:
        raise SettingsError(f"{name}: the URL names no host, got {_shown_url(text)!r}")
    return text


def _shown_url(url: str) -> str:
    from ._redact import server_url  # only with a URL: keeps `import httptrack` light

    return server_url(url)


def parse_hosts(value: object, name: str) -> dict[str, str]:
    """``host[:port]=provider`` pairs, comma separated (or a mapping)."""
    if isinstance(value, Mapping):
        items = [(str(k), str(v)) for k, v in value.items()]
    else:
        items = []
        for part in str(value).split(","):
            part = part.strip()
            if not part:
                continue
            host, sep, provider = part.partition("=")
            if not sep or not host.strip() or not provider.strip():
                raise SettingsError(f"{name}: expected host[:port]=provider pairs, got {part!r}")
            items.append((host, provider))
    hosts: dict[str, str] = {}
    for host, provider in items:
        host = host.strip().lower()
        if "://" in host:
            host = host.split("://", 1)[1]
        host = host.rstrip("/")
        provider = provider.strip().lower()
        _, colon, port = host.rpartition(":")
        if colon and not (port.isdigit() and 0 < int(port) < 65536) and not host.endswith("]"):
            raise SettingsError(f"{name}: {host!r}: the port must be a number from 1 to 65535")
        _check_provider_name(provider, host, name)
        hosts[host] = provider
    return hosts


def _check_provider_name(provider: str, host: str, name: str) -> None:
    """Any name is allowed (a name httptrack does not know is read as an OpenAI-compatible
    API under that name, e.g. ``vllm``), but one a letter or two from a known family is a typo
    that would read, say, an Anthropic API as OpenAI's: refused, naming the family meant."""
    import difflib

    from .providers import registered_providers

    known = registered_providers()
    if provider in known:
        return
    close = difflib.get_close_matches(provider, list(known), n=1, cutoff=0.75)
    if close:
        raise SettingsError(
            f"{name}: unknown provider {provider!r} for {host}; did you mean {close[0]!r}? "
            "(a name httptrack does not know is read as an OpenAI-compatible API)"
        )


def parse_ttls(value: object, name: str) -> dict[Operation, float]:
    """``operation=duration`` pairs (``chat=2h,embeddings=30d``) or a mapping."""
    if isinstance(value, Mapping):
        items = list(value.items())
    else:
        items = []
        for part in str(value).split(","):
            if part.strip():
                op, sep, ttl = part.partition("=")
                if not sep:
                    raise SettingsError(f"{name}: expected operation=duration pairs, got {part!r}")
                items.append((op, ttl))
    ttls: dict[Operation, float] = {}
    for op, ttl in items:
        op = str(op).strip().lower()
        if not is_operation(op):
            raise SettingsError(f"{name}: unknown operation {op!r} (known: {', '.join(OPERATIONS)})")
        ttls[op] = parse_duration(ttl, f"{name}[{op}]")
    return ttls


def parse_header_names(value: object, name: str) -> frozenset[bytes]:
    """Header names, comma separated (or an iterable of names), as lower-case bytes."""
    parts = str(value).split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    names = set()
    for part in parts:
        text = part.decode("latin-1") if isinstance(part, bytes) else str(part)
        text = text.strip().lower()
        if not text:
            continue
        if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9a-z-]+", text):
            raise SettingsError(f"{name}: {text!r} is not a header name")
        names.add(text.encode("latin-1"))
    return frozenset(names)


_RETENTION_AGE = r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]?)\s*"
_RETENTION_KEYS = ("bodies", "rows", "size")


class Retention:
    """How long the call log keeps what (``HTTPTRACK_RETENTION``), applied by the writer in
    small steps. ``bodies``: seconds after which a call's bodies (prompt, response,
    generated text) are dropped, its figures kept; ``rows``: seconds after which calls are
    deleted; ``size``: bytes the log may use, beyond which the oldest bodies are dropped,
    then the oldest calls. ``None``: no such bound."""

    __slots__ = ("bodies", "rows", "size")

    bodies: float | None
    rows: float | None
    size: int | None

    def __init__(
        self, *, bodies: float | None = None, rows: float | None = None, size: int | None = None
    ) -> None:
        set_ = object.__setattr__
        set_(self, "bodies", bodies)
        set_(self, "rows", rows)
        set_(self, "size", size)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Retention is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Retention):
            return NotImplemented
        return (self.bodies, self.rows, self.size) == (other.bodies, other.rows, other.size)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Retention(bodies={self.bodies!r}, rows={self.rows!r}, size={self.size!r})"


def parse_retention(value: object, name: str) -> Retention | None:
    """``bodies=30d; rows=1y; size=5GB`` (``;`` or ``,`` between parts; any of the three,
    each at most once; ages in s, m, h, d, w or y (365 days); sizes as for
    ``HTTPTRACK_MAX_BODY_BYTES``), a ``Retention``, or ``off``/empty for none."""
    if value is None or isinstance(value, Retention):
        return value
    text = str(value).strip()
    if text.lower() in ("", "off", "none", "0"):
        return None
    found: dict[str, Any] = {}
    for part in re.split(r"[;,]", text):
        if not part.strip():
            continue
        key, sep, raw = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in _RETENTION_KEYS:
            raise SettingsError(
                f"{name}: expected bodies=AGE, rows=AGE and/or size=SIZE separated by ';' "
                f"(e.g. bodies=30d; rows=1y; size=5GB), got {part.strip()!r}"
            )
        if key in found:
            raise SettingsError(f"{name}: {key} is given twice")
        if key == "size":
            found[key] = parse_size(raw, f"{name}[size]")
            if found[key] == 0:
                raise SettingsError(f"{name}[size]: must be more than 0, got {raw.strip()!r}")
            continue
        match = re.fullmatch(_RETENTION_AGE, raw)
        unit = match.group(2).lower() if match else ""
        if match is None or unit not in ("s", "m", "h", "d", "w", "y"):
            raise SettingsError(
                f"{name}[{key}]: expected an age with its unit such as 12h, 30d, 8w or 1y, "
                f"got {raw.strip()!r}"
            )
        seconds = float(match.group(1)) * (365 * 86400 if unit == "y" else duration_seconds("1" + unit) or 0)
        if seconds <= 0:
            raise SettingsError(f"{name}[{key}]: must be more than 0, got {raw.strip()!r}")
        found[key] = seconds
    if not found:
        return None
    if "bodies" in found and "rows" in found and found["bodies"] > found["rows"]:
        raise SettingsError(
            f"{name}: bodies is longer than rows: a call's bodies go with it, they cannot outlive it"
        )
    return Retention(**found)


def _xdg(var: str, fallback: str) -> Path:
    base = os.environ.get(var)
    return Path(base) if base else Path.home() / fallback


def default_db_path() -> Path:
    return _xdg("XDG_DATA_HOME", ".local/share") / "httptrack" / "httptrack.db"


def default_cache_dir() -> Path:
    return _xdg("XDG_CACHE_HOME", ".cache") / "httptrack"


class Settings:
    """How httptrack behaves. Arguments win over ``HTTPTRACK_*`` variables, which win over
    defaults. Immutable: use :meth:`replace` to derive a changed copy.

    =================== ============================= ==========================================
    argument            variable                      meaning
    =================== ============================= ==========================================
    ``enabled``         ``HTTPTRACK_ENABLED``         ``False``: every transport passes calls
                                                      through untouched
    ``db``              ``HTTPTRACK_DB``              SQLite file (default
                                                      ``$XDG_DATA_HOME/httptrack/httptrack.db``),
                                                      or a shared Postgres log:
                                                      ``postgresql://user:pass@host:5432/db``
    ``cache``           ``HTTPTRACK_CACHE``           ``on`` | ``off`` | ``refresh`` | ``replay``
                                                      (or True/False)
    ``cache_dir``       ``HTTPTRACK_CACHE_DIR``       response cache folder (default
                                                      ``$XDG_CACHE_HOME/httptrack``)
    ``cache_size_limit`` ``HTTPTRACK_CACHE_SIZE``     bytes before the cache evicts (``None``:
                                                      the folder's own; 1 GiB for a new folder)
    ``cache_ttl``       ``HTTPTRACK_CACHE_TTL``       per-operation TTLs: ``chat=2h,embeddings=30d``
    ``cache_url``       ``HTTPTRACK_CACHE_URL``       a shared cache instead of the folder:
                                                      ``redis://host:6379/0`` (``rediss://``,
                                                      ``unix://``; docs/scaling.md)
    ``cache_key_headers`` ``HTTPTRACK_CACHE_KEY_HEADERS`` more request headers that are part of
                                                      the cache key (a gateway's routing headers):
                                                      ``x-route,x-model-tier``
    ``cache_max_hits``  ``HTTPTRACK_CACHE_MAX_HITS``  hits one key may have per minute in one
                                                      process before the request is sent again
                                                      (a loop guard; 60; ``0``: no limit)
    ``cache_wait``      ``HTTPTRACK_CACHE_WAIT``      single-flight: how long an identical request
                                                      waits for the one already in flight (60s;
                                                      ``0`` / ``off``: never waits, each is sent)
    ``store_bodies``    ``HTTPTRACK_STORE_BODIES``    keep request/response bodies
    ``max_body_bytes``  ``HTTPTRACK_MAX_BODY_BYTES``  cap per stored body (10 MiB); longer ones
                                                      are truncated
    ``user``            ``HTTPTRACK_USER``            default user for calls with no other
                                                      attribution
    ``service``         ``HTTPTRACK_SERVICE``         default service
    ``hosts``           ``HTTPTRACK_HOSTS``           extra ``host[:port]=provider`` mappings
    ``detect``          ``HTTPTRACK_DETECT``          track a ``POST`` to any other host whose
                                                      path has an LLM API's shape
                                                      (``/v1/chat/completions`` ...; on)
    ``prices``          (code only)                   per-model price overrides, USD per million
                                                      tokens: ``{"my-model": {"input_mtok": 1.0}}``
    ``prices_file``     ``HTTPTRACK_PRICES``          JSON file of price overrides, same shape;
                                                      merged under ``prices``
    ``include_usage``   ``HTTPTRACK_INCLUDE_USAGE``   ask OpenAI-style streams for their usage
                                                      chunk (hidden from the app)
    ``max_queue``       ``HTTPTRACK_MAX_QUEUE``       calls waiting for the writer before new
                                                      ones are dropped
    ``redact``          (code only)                   ``callable(text) -> text`` applied to
                                                      bodies before they are stored
    ``limits``          ``HTTPTRACK_LIMITS``          spend and rate limits: ``Limit`` objects, or
                                                      ``usd=5/day by user; ...``, or ``@file``
                                                      (docs/limits.md)
    ``on_alert``        (code only)                   ``callable(alert: dict)``, called for
                                                      each limit alert (off the app's thread)
    ``alert_webhook``   ``HTTPTRACK_ALERT_WEBHOOK``   URL each limit alert is POSTed to as JSON
    ``otel``            ``HTTPTRACK_OTEL``            each call as an OpenTelemetry GenAI span and
                                                      metrics, sent from the writer thread through
                                                      the standard ``OTEL_*`` configuration
                                                      (docs/export.md)
    ``retention``       ``HTTPTRACK_RETENTION``       how long the log keeps what, applied by the
                                                      writer in small steps:
                                                      ``bodies=30d; rows=1y; size=5GB``
                                                      (docs/retention.md)
    ``writer``          ``HTTPTRACK_WRITER``          ``thread`` (default): rows are built and
                                                      written by a thread of the app's process;
                                                      ``process``: by a writer process fed by
                                                      the spool (docs/architecture.md)
    =================== ============================= ==========================================
    """

    __slots__ = (
        "alert_webhook",
        "cache",
        "cache_dir",
        "cache_key_headers",
        "cache_max_hits",
        "cache_size_limit",
        "cache_ttl",
        "cache_url",
        "cache_wait",
        "db",
        "detect",
        "enabled",
        "given",
        "hosts",
        "include_usage",
        "limits",
        "max_body_bytes",
        "max_queue",
        "on_alert",
        "otel",
        "prices",
        "prices_file",
        "redact",
        "retention",
        "service",
        "store_bodies",
        "user",
        "writer",
    )

    enabled: bool
    db: LogTarget
    cache: CacheMode
    cache_dir: Path
    cache_key_headers: frozenset[bytes]
    cache_max_hits: int
    #: The names of the settings given in code (arguments, ``replace``), not taken from the
    #: environment or the defaults: a cache asked for on a transport (``cache=``,
    #: ``cache_dir=``) also stores what test doubles answer.
    given: frozenset[str]
    cache_size_limit: int | None
    cache_ttl: dict[Operation, float]
    cache_url: str | None
    cache_wait: float
    store_bodies: bool
    max_body_bytes: int
    user: str | None
    service: str | None
    hosts: dict[str, str]
    detect: bool
    prices: dict[str, dict[str, float]]
    prices_file: Path | None
    include_usage: bool
    max_queue: int
    redact: Callable[[str], str] | None
    limits: tuple[Limit, ...]
    on_alert: Callable[[dict[str, Any]], object] | None
    alert_webhook: str | None
    otel: bool
    retention: Retention | None
    writer: WriterMode

    def __init__(
        self,
        *,
        enabled: bool | str | None = None,
        db: str | os.PathLike[str] | DatabaseURL | None = None,
        cache: bool | str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_size_limit: int | str | None = None,
        cache_ttl: Mapping[str, float | str] | str | None = None,
        cache_url: str | None = None,
        cache_key_headers: str | Iterable[str | bytes] | None = None,
        cache_max_hits: int | str | None = None,
        cache_wait: float | str | None = None,
        store_bodies: bool | str | None = None,
        max_body_bytes: int | str | None = None,
        user: str | None = None,
        service: str | None = None,
        hosts: Mapping[str, str] | str | None = None,
        detect: bool | str | None = None,
        prices: Mapping[str, Mapping[str, float]] | None = None,
        prices_file: str | os.PathLike[str] | None = None,
        include_usage: bool | str | None = None,
        max_queue: int | str | None = None,
        redact: Callable[[str], str] | None = None,
        limits: Iterable[Limit | str | Mapping[str, Any]] | Limit | str | os.PathLike[str] | None = None,
        on_alert: Callable[[dict[str, Any]], object] | None = None,
        alert_webhook: str | None = None,
        otel: bool | str | None = None,
        retention: Retention | str | None = None,
        writer: str | None = None,
    ) -> None:
        def pick(arg: Any, env: str) -> tuple[Any, str]:
            if arg is not None:
                return arg, env.removeprefix("HTTPTRACK_").lower()
            return _env(env), env

        set_ = object.__setattr__
        arguments = locals()
        set_(
            self,
            "given",
            frozenset(n for n in self.__slots__ if n != "given" and arguments.get(n) is not None),
        )
        value, name = pick(enabled, "HTTPTRACK_ENABLED")
        set_(self, "enabled", True if value in (None, "") else parse_bool(value, name))

        value, name = pick(db, "HTTPTRACK_DB")
        try:
            set_(self, "db", log_target(value) if value else default_db_path())
        except ValueError as exc:
            raise SettingsError(f"{name}: {exc}") from None

        value, name = pick(cache, "HTTPTRACK_CACHE")
        set_(self, "cache", "on" if value in (None, "") else parse_cache_mode(value, name))

        value, name = pick(cache_dir, "HTTPTRACK_CACHE_DIR")
        set_(self, "cache_dir", Path(value).expanduser() if value else default_cache_dir())

        value, name = pick(cache_size_limit, "HTTPTRACK_CACHE_SIZE")
        set_(self, "cache_size_limit", None if value in (None, "") else parse_size(value, name))

        value, name = pick(cache_ttl, "HTTPTRACK_CACHE_TTL")
        ttl = dict(_DEFAULT_TTL)
        if value not in (None, ""):
            ttl.update(parse_ttls(value, name))
        set_(self, "cache_ttl", ttl)

        value, name = pick(cache_url, "HTTPTRACK_CACHE_URL")
        set_(self, "cache_url", parse_cache_url(value, name) if value else None)

        value, name = pick(cache_key_headers, "HTTPTRACK_CACHE_KEY_HEADERS")
        set_(
            self, "cache_key_headers", frozenset() if value in (None, "") else parse_header_names(value, name)
        )

        value, name = pick(cache_max_hits, "HTTPTRACK_CACHE_MAX_HITS")
        hits = _DEFAULT_CACHE_MAX_HITS if value in (None, "") else parse_count(value, name)
        if hits < 0:
            raise SettingsError(f"{name}: must not be negative (0: no limit), got {value!r}")
        set_(self, "cache_max_hits", hits)

        value, name = pick(cache_wait, "HTTPTRACK_CACHE_WAIT")
        if value in (None, ""):
            wait = _DEFAULT_CACHE_WAIT
        elif value is False or str(value).strip().lower() in _FALSE:
            wait = 0.0
        else:
            wait = parse_duration(value, name)
        set_(self, "cache_wait", wait)

        value, name = pick(store_bodies, "HTTPTRACK_STORE_BODIES")
        set_(self, "store_bodies", True if value in (None, "") else parse_bool(value, name))

        value, name = pick(max_body_bytes, "HTTPTRACK_MAX_BODY_BYTES")
        set_(self, "max_body_bytes", _DEFAULT_MAX_BODY if value in (None, "") else parse_size(value, name))

        value, _ = pick(user, "HTTPTRACK_USER")
        set_(self, "user", value or None)
        value, _ = pick(service, "HTTPTRACK_SERVICE")
        set_(self, "service", value or None)

        value, name = pick(hosts, "HTTPTRACK_HOSTS")
        set_(self, "hosts", {} if value in (None, "") else parse_hosts(value, name))
        value, name = pick(detect, "HTTPTRACK_DETECT")
        set_(self, "detect", True if value in (None, "") else parse_bool(value, name))

        value, name = pick(prices_file, "HTTPTRACK_PRICES")
        set_(self, "prices_file", Path(value).expanduser() if value else None)
        merged: dict[str, dict[str, float]] = {}
        if self.prices_file is not None:
            from .pricing._overrides import load_price_file  # only with prices: keeps import light

            merged.update(load_price_file(self.prices_file))  # read once, here: a bad file fails now
        if prices is not None:
            from .pricing._overrides import check_prices

            merged.update(check_prices(prices, "prices"))  # entries given in code win, whole
        set_(self, "prices", merged)

        value, name = pick(include_usage, "HTTPTRACK_INCLUDE_USAGE")
        set_(self, "include_usage", True if value in (None, "") else parse_bool(value, name))

        value, name = pick(max_queue, "HTTPTRACK_MAX_QUEUE")
        queue = _DEFAULT_MAX_QUEUE if value in (None, "") else parse_count(value, name)
        if queue < 1:
            raise SettingsError(f"{name}: must be at least 1, got {value!r}")
        set_(self, "max_queue", queue)

        if redact is not None and not callable(redact):
            raise SettingsError(f"redact: expected a function taking and returning text, got {redact!r}")
        set_(self, "redact", redact)

        # -- limits (limits/): parsed here, so a bad limit fails when the transport is made.
        value, name = pick(limits, "HTTPTRACK_LIMITS")
        if value in (None, "", ()):
            set_(self, "limits", ())
        else:
            from .limits import coerce_limits

            set_(self, "limits", coerce_limits(value, name))
        if on_alert is not None and not callable(on_alert):
            raise SettingsError(f"on_alert: expected a function taking the alert (a dict), got {on_alert!r}")
        set_(self, "on_alert", on_alert)
        value, name = pick(alert_webhook, "HTTPTRACK_ALERT_WEBHOOK")
        if value and not str(value).lower().startswith(("http://", "https://")):
            raise SettingsError(f"{name}: expected an http:// or https:// URL")
        set_(self, "alert_webhook", str(value) if value else None)

        value, name = pick(otel, "HTTPTRACK_OTEL")
        set_(self, "otel", False if value in (None, "") else parse_bool(value, name))
        value, name = pick(retention, "HTTPTRACK_RETENTION")
        set_(self, "retention", parse_retention(value, name))
        value, name = pick(writer, "HTTPTRACK_WRITER")
        set_(self, "writer", "thread" if value in (None, "") else parse_writer(value, name))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Settings are immutable; use settings.replace(...)")

    def replace(self, **changes: Any) -> Settings:
        """A copy with some values changed (``None`` leaves a value as it is)."""
        current = {name: getattr(self, name) for name in self.__slots__ if name != "given"}
        changed = {k: v for k, v in changes.items() if v is not None}
        current.update(changed)
        copy = Settings(**current)
        object.__setattr__(copy, "given", self.given | frozenset(changed))
        return copy

    def ttl_for(self, operation: Operation) -> float:
        return self.cache_ttl.get(operation, self.cache_ttl["other"])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Settings):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__ if n != "given")

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        # Not the webhook's URL: it is a secret (a Slack hook's holds its token).
        # Nor the cache URL's password.
        hidden = ("redact", "on_alert", "alert_webhook", "given")
        shown = ", ".join(
            f"{n}={_shown_url(self.cache_url) if n == 'cache_url' and self.cache_url else getattr(self, n)!r}"
            for n in sorted(self.__slots__)
            if n not in hidden
        )
        return f"Settings({shown})"
