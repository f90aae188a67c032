"""Track every ``httpx`` and ``httpx2`` client in the process: ``install()``, ``uninstall()``
and the second half of ``HTTPTRACK=1`` (the first is ``_boot``, which runs at start-up).

Where the hook sits: ``Client._transport_for_url`` (and ``AsyncClient``'s) in both libraries.
A client calls it for every request it sends, to choose the transport — its own connection
pool, a proxy mount built from ``HTTP(S)_PROXY``, a ``transport=`` or ``mounts=`` the app
passed — and then hands the request to what it returns. Patching the method on the class and
wrapping its *result* therefore means:

- clients created before ``install()`` are tracked as well as those created after, including
  module-level clients SDKs create at import (``ollama.chat``);
- proxies, mounts and custom transports keep working: the tracking transport wraps whichever
  transport the client chose and passes the request on to it, untouched;
- ``uninstall()`` puts the method back and every client talks to its own transports again;
- a transport that already is (or holds) a tracking transport is used as it is, so the app's
  own tracking (its database, its cache setting) wins and each call is recorded once.

Each (client, transport) pair gets one tracking transport, made on first use and kept on the
client, so the per-request cost is one dictionary lookup.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import sys
import threading
import types
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from .._faults import report_fault
from .._settings import Settings, SettingsError
from .._transport import AsyncTrackingTransport, TrackingTransport, _make_settings, _Shell, auto_tracking
from ..log._url import DatabaseURL

__all__ = ["install", "installed_settings", "start_from_environment", "uninstall"]

#: Attribute on each client holding its tracking transports: {id(transport): (transport,
#: installation, tracking transport)}.
_MEMO = "_httptrack_transports"
#: How many attributes deep a custom transport is searched for the app's own tracking
#: transport (``RetryTransport(transport=CacheTransport(TrackingTransport()))`` is 2).
_SEARCH_DEPTH = 3
_ORIGINAL = "__httptrack_original__"
#: The version of ``_boot``'s functions this module calls.
_BOOT_API = 1


class _Installation:
    """One ``install()``: the settings every tracking transport it makes uses."""

    __slots__ = ("settings",)

    def __init__(self, settings: Settings) -> None:
        self.settings = settings


_lock = threading.RLock()
_installation: _Installation | None = None
#: Client class -> its own ``_transport_for_url``, for every class patched.
_originals: dict[type, Callable[..., Any]] = {}
#: The request an autoload transport is handling in this context: handed on to another
#: client (openai's X.509 auth forwards it), or to a tracking transport of the app's own that
#: autoload could not see inside the one it wraps, it is not recorded a second time.
_in_flight = auto_tracking


def install(*, settings: Settings | None = None, **options: Any) -> None:
    """Track every ``httpx`` / ``httpx2`` client in this process, sync and async: those that
    exist now and those created later, whichever SDK creates them.

    ``settings`` and keyword options (``db=``, ``cache=``, ``user=``, ``hosts=`` ... any
    :class:`Settings` field) work as for :class:`TrackingTransport`; ``HTTPTRACK_*`` variables
    fill in the rest. Idempotent: calling it again only replaces the settings. Clients that
    already use a tracking transport keep theirs. Raises :class:`SettingsError` for a bad value.
    """
    unknown = sorted(set(options) - set(Settings.__slots__))
    if unknown:
        raise TypeError(f"install() got an unexpected keyword argument {unknown[0]!r}")
    resolved = _make_settings(settings, {k: v for k, v in options.items() if v is not None})
    global _installation
    with _lock:
        if _installation is None or _installation.settings != resolved:
            _installation = _Installation(resolved)
        boot = _boot()
        boot.stop()  # code decides now: a pending HTTPTRACK=1 start-up must not override it
        for name in boot.LIBRARIES:
            boot.when_imported(name, _patch)


def uninstall() -> None:
    """Stop tracking clients that :func:`install` (or ``HTTPTRACK=1``) tracks: every client
    goes back to its own transports. Tracking transports the app passed itself are not
    affected. Idempotent."""
    global _installation
    with _lock:
        _installation = None
        boot = _boot()
        boot.stop()
        boot.cancel(_patch)
        for cls, original in _originals.items():
            current = cls.__dict__.get("_transport_for_url")
            if getattr(current, _ORIGINAL, None) is original:
                cls._transport_for_url = original  # type: ignore[attr-defined]
            # Otherwise someone patched over ours (respx does, while it mocks): ours stays
            # in their chain, inert while nothing is installed.
        _originals.clear()


def installed_settings() -> Settings | None:
    """The settings of the current :func:`install`, or ``None`` when nothing is installed."""
    installation = _installation
    return None if installation is None else installation.settings


def start_from_environment() -> None:
    """``HTTPTRACK=1``: install with the settings from the environment, when httpx or httpx2
    is first imported. Never raises: a bad setting prints one warning and changes nothing."""
    boot = _boot()
    try:
        settings = Settings()
    except SettingsError as exc:
        boot.warn(f"{exc}; this program runs untracked")
        return
    except Exception as exc:  # e.g. an unreadable HTTPTRACK_PRICES file
        boot.warn(f"bad settings ({type(exc).__name__}: {exc}); this program runs untracked")
        return
    if not settings.enabled:  # HTTPTRACK_ENABLED=0 wins over HTTPTRACK=1
        return
    # A Postgres log (a URL) is not checked here: a server that is down is a tracking fault
    # like any other (rows wait for it), never a reason to run untracked.
    problem = None if isinstance(settings.db, DatabaseURL) else _unwritable(settings.db, folder=False)
    if problem is not None:
        boot.warn(
            f"HTTPTRACK_DB: cannot write the call log {settings.db} ({problem}); this program runs untracked"
        )
        return
    if settings.cache != "off" and not settings.cache_url:  # Redis: down is no cache, not a reason
        problem = _unwritable(settings.cache_dir, folder=True)
        if problem is not None:
            boot.warn(
                f"HTTPTRACK_CACHE_DIR: cannot write the response cache {settings.cache_dir} "
                f"({problem}); calls are tracked without the cache"
            )
            try:
                settings = Settings(cache="off")
            except Exception:  # pragma: no cover - it was valid a moment ago
                return
    try:
        install(settings=settings)
    except Exception as exc:
        boot.warn(f"could not start ({type(exc).__name__}: {exc}); this program runs untracked")


def _unwritable(path: Path, *, folder: bool) -> str | None:
    """Why httptrack could not write ``path`` (a database file, or a folder), or ``None``.
    Creates the missing folders, as the writer and the cache would: the last one private
    (0700; the cache makes a folder that already existed private when it opens it)."""
    try:
        target = path if folder else path.parent
        for existing in (target, *target.parents):
            if existing.exists():
                if not existing.is_dir():
                    return f"{existing} is not a folder"
                break
        if not target.is_dir():
            target.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not folder and path.exists():
            if not path.is_file():
                return "it is not a file"
            if not os.access(path, os.R_OK | os.W_OK):
                return "permission denied"
        if not os.access(target, os.W_OK | os.X_OK):
            return f"no permission to write in {target}"
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def _boot() -> Any:
    """The import-hook module: the one ``httptrack.pth`` started, if it did (one registry of
    hooks per process keeps ``install()`` and ``HTTPTRACK=1`` in step); else this package's
    copy; in a wheel, which has only the top-level copy, that one."""
    started = sys.modules.get("_httptrack_boot")
    if started is not None and getattr(started, "API", None) == _BOOT_API:
        return started
    try:
        from .. import _boot as own
    except ImportError:  # installed from a wheel: the hook lives at the top of site-packages
        return importlib.import_module("_httptrack_boot")
    if started is not None:  # an older hook started this process (another httptrack on the path)
        with contextlib.suppress(Exception):
            started.stop()
    return own


# -- the patch ------------------------------------------------------------------------------


class _AutoTrackingTransport(TrackingTransport):
    """What :func:`install` puts around a client's transport."""

    _auto = True

    def handle_request(self, request: Any) -> Any:
        if _in_flight.get() is request:
            return self._inner.handle_request(request)
        token = _in_flight.set(request)
        try:
            return super().handle_request(request)
        finally:
            _in_flight.reset(token)


class _AutoAsyncTrackingTransport(AsyncTrackingTransport):
    """What :func:`install` puts around an async client's transport."""

    _auto = True

    async def handle_async_request(self, request: Any) -> Any:
        if _in_flight.get() is request:
            return await self._inner.handle_async_request(request)
        token = _in_flight.set(request)
        try:
            return await super().handle_async_request(request)
        finally:
            _in_flight.reset(token)


def _patch(module: ModuleType) -> None:
    """Patch ``module.Client`` and ``module.AsyncClient``, unless ours is already on top
    (under ``httpx2.alias_httpx()`` both names are the same module).

    Whatever is there now is what ours calls. If that is someone else's patch around ours
    (a mock library's), the outer one of ours finds a tracking transport already chosen and
    returns it as it is: a call is never tracked twice. If it is the original again (that
    library, stopping, put back what it found), tracking resumes."""
    with _lock:
        for name, wrapper in (
            ("Client", _AutoTrackingTransport),
            ("AsyncClient", _AutoAsyncTrackingTransport),
        ):
            cls = getattr(module, name, None)
            if not isinstance(cls, type):
                continue
            original = cls.__dict__.get("_transport_for_url")
            if getattr(original, _ORIGINAL, None) is not None:
                continue
            if not callable(original):
                report_fault(
                    "autoload",
                    f"{module.__name__}.{name} has no _transport_for_url: "
                    "its clients cannot be tracked automatically",
                )
                continue
            _originals[cls] = original
            cls._transport_for_url = _patched(original, wrapper)  # type: ignore[attr-defined]


def _patched(original: Callable[..., Any], wrapper: type[_Shell]) -> Callable[..., Any]:
    def _transport_for_url(self: Any, url: Any) -> Any:
        transport = original(self, url)
        installation = _installation
        if installation is None or isinstance(transport, _Shell):
            return transport
        try:
            return _tracking_for(self, transport, installation, wrapper)
        except Exception as exc:  # tracking must never stop the request
            report_fault("autoload", "a client's transport could not be tracked", exc)
            return transport

    _transport_for_url.__name__ = original.__name__
    _transport_for_url.__qualname__ = original.__qualname__
    _transport_for_url.__doc__ = original.__doc__
    _transport_for_url.__wrapped__ = original  # type: ignore[attr-defined]
    setattr(_transport_for_url, _ORIGINAL, original)
    return _transport_for_url


def _tracking_for(client: Any, transport: Any, installation: _Installation, wrapper: type[_Shell]) -> Any:
    memo: dict[int, tuple[Any, _Installation, Any]] | None = client.__dict__.get(_MEMO)
    if memo is None:
        memo = client.__dict__.setdefault(_MEMO, {})
    entry = memo.get(id(transport))
    if entry is not None and entry[0] is transport and entry[1] is installation:
        return entry[2]
    tracking = transport if _holds_tracking(transport) else wrapper(transport, settings=installation.settings)
    memo[id(transport)] = (transport, installation, tracking)
    return tracking


def _holds_tracking(transport: Any) -> bool:
    """Whether a custom transport wraps the app's own tracking transport: looked for in its
    attributes (``__dict__`` and ``__slots__``; lists, tuples and dicts of them) and in the
    functions it holds (a bound method's object, a closure's cells, a ``partial``'s
    arguments), then in theirs, ``_SEARCH_DEPTH`` deep. One it cannot see still records each
    call once: it passes the call on to autoload's wrapper (see ``auto_tracking``)."""
    seen: set[int] = set()
    level = [transport]
    for _ in range(_SEARCH_DEPTH):
        found: list[Any] = []
        for item in level:
            if id(item) in seen:
                continue
            seen.add(id(item))
            for candidate in _referents(item):
                if isinstance(candidate, _Shell):
                    return True
                if not isinstance(candidate, type) and (_is_transport(candidate) or callable(candidate)):
                    found.append(candidate)
        level = found
    return False


def _referents(item: Any) -> list[Any]:
    """What ``item`` holds: its attributes, or for a function what it calls on."""
    values: list[Any] = []
    if isinstance(item, functools.partial):
        values = [item.func, *item.args, *item.keywords.values()]
    elif isinstance(item, types.MethodType):
        values = [item.__self__, item.__func__]
    elif isinstance(item, types.FunctionType):
        for cell in item.__closure__ or ():
            try:
                values.append(cell.cell_contents)
            except ValueError:  # an empty cell
                continue
    else:
        try:
            values = list(vars(item).values())
        except TypeError:  # no __dict__
            values = []
        for cls in type(item).__mro__:
            for name in getattr(cls, "__slots__", ()):
                if isinstance(name, str) and name not in ("__dict__", "__weakref__"):
                    try:
                        values.append(getattr(item, name))
                    except Exception:  # unset, or a descriptor that refuses
                        continue
    flat: list[Any] = []
    for value in values:
        if isinstance(value, dict):
            flat.extend(value.values())
        elif isinstance(value, list | tuple):
            flat.extend(value)
        else:
            flat.append(value)
    return flat


def _is_transport(value: Any) -> bool:
    if isinstance(value, type):
        return False
    return hasattr(value, "handle_request") or hasattr(value, "handle_async_request")
