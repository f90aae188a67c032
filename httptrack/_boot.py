"""The start-up half of ``HTTPTRACK=1``; installed at the top level as ``_httptrack_boot``.

``httptrack.pth`` (next to it in site-packages) runs while the interpreter starts. When
``HTTPTRACK`` is set to anything but an off value it imports this module and calls
:func:`start`. That is all that happens at start-up: this module imports nothing beyond what
the interpreter has already loaded and never raises. It registers a post-import hook on
``httpx`` and ``httpx2``; when the program (or an SDK) first imports either, httptrack itself
is imported and patches both libraries (the entry point the .pth line names,
``httptrack.autoload:start_from_environment``). A program that never imports them pays for
this module and nothing more.

This module names nothing of httptrack: the package depends on it (``httptrack.autoload``
registers its hooks here), not the other way round, and the one link back is the entry
point written in ``httptrack.pth``, the file that wires the two together.

Why a top-level module: importing ``httptrack._anything`` runs ``httptrack/__init__``, which
costs far more than the start-up budget. Why a post-import hook and not an import of httpx
now: importing httpx at start-up would cost every Python program in the environment the
price of httpx, and could shadow ``httpx2.alias_httpx()``.

``httptrack.install()`` uses :func:`when_imported` for a library not imported yet, so one
registry of hooks serves both paths.
"""

# No `from __future__ import annotations` here, unlike the rest of httptrack: importing
# __future__ costs a third of this module's start-up time. Annotations are quoted instead.
import os
import sys
from _thread import allocate_lock, get_ident

# `typing` is not loaded at start-up and costs milliseconds: type-checkers only.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType
    from typing import Any

    Hook = Callable[[ModuleType], None]

__all__ = ["API", "LIBRARIES", "cancel", "start", "stop", "warn", "when_imported"]

#: Bumped when these functions change in a way ``httptrack.autoload`` notices: a process may
#: have been started by the hook of another installed httptrack than the one it imports.
API = 1

#: The libraries whose clients are tracked.
LIBRARIES = ("httpx", "httpx2")
#: Values of ``HTTPTRACK`` that mean on and off (the .pth line repeats the off ones so that it
#: imports nothing when the variable is off); the same spellings ``Settings`` accepts.
ON_VALUES = frozenset({"1", "true", "yes", "on", "y", "t"})
OFF_VALUES = frozenset({"", "0", "false", "no", "off", "n", "f"})

_lock = allocate_lock()  # guards _hooks / _finder; never held while a hook runs
_hooks: "dict[str, list[Hook]]" = {}
_finder: "_Finder | None" = None
_started = False
#: ``"module:function"`` that :func:`start` calls when the first library is imported.
_entry = ""


def warn(message: str) -> None:
    """Print one ``httptrack: ...`` line on stderr (start-up problems have no logger yet)."""
    stream = sys.stderr
    if stream is not None:
        try:  # noqa: SIM105 - contextlib is not loaded at start-up
            print(f"httptrack: {message}", file=stream, flush=True)
        except Exception:  # a closed or broken stderr: nothing more to do
            pass


def when_imported(name: str, hook: "Hook") -> None:
    """Call ``hook(module)`` once ``name`` is imported: now if it already is, else right after
    the import executes the module (before the importer gets it)."""
    module = sys.modules.get(name)
    if module is not None:
        hook(module)
        return
    global _finder
    with _lock:
        hooks = _hooks.setdefault(name, [])
        if hook not in hooks:
            hooks.append(hook)
        if _finder is None:
            _finder = _Finder()
            sys.meta_path.insert(0, _finder)


def cancel(hook: "Hook") -> None:
    """Forget ``hook`` for every library; the finder leaves ``sys.meta_path`` once idle."""
    with _lock:
        for name in list(_hooks):
            hooks = [h for h in _hooks[name] if h != hook]
            if hooks:
                _hooks[name] = hooks
            else:
                del _hooks[name]
        _drop_finder_if_idle()


def _drop_finder_if_idle() -> None:
    global _finder
    if not _hooks and _finder is not None:
        try:  # noqa: SIM105 - contextlib is not loaded at start-up
            sys.meta_path.remove(_finder)
        except ValueError:  # someone else rebuilt sys.meta_path
            pass
        _finder = None


def _take_hooks(name: str) -> "list[Hook]":
    with _lock:
        hooks = _hooks.pop(name, [])
        _drop_finder_if_idle()
    return hooks


class _Finder:
    """A ``sys.meta_path`` finder that only watches the names in ``_hooks``: it asks the
    other finders for the spec and wraps its loader so the hooks run after the module has
    executed. Every other import passes by after one dictionary lookup."""

    def __init__(self) -> None:
        self._busy: set[tuple[int, str]] = set()  # (thread, name) being resolved, against re-entry

    def find_spec(
        self, fullname: str, path: "Sequence[str] | None" = None, target: "ModuleType | None" = None
    ) -> "ModuleSpec | None":
        if fullname not in _hooks:
            return None
        key = (get_ident(), fullname)
        if key in self._busy:
            return None
        self._busy.add(key)
        spec: ModuleSpec | None = None
        try:
            for finder in list(sys.meta_path):
                find = None if finder is self else getattr(finder, "find_spec", None)
                if find is not None:
                    spec = find(fullname, path, target)
                    if spec is not None:
                        break
        finally:
            self._busy.discard(key)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None  # not found, a namespace package or a legacy loader: leave it to the import system
        spec.loader = _HookedLoader(spec.loader)  # type: ignore[assignment]
        return spec


class _HookedLoader:
    """Runs the real loader, then the hooks. Puts the real loader back on the module first,
    so ``__loader__`` / ``__spec__.loader`` (importlib.resources, inspect ...) never see us."""

    def __init__(self, loader: "Any") -> None:
        self._loader = loader

    def create_module(self, spec: "ModuleSpec") -> "ModuleType | None":
        create = getattr(self._loader, "create_module", None)
        return None if create is None else create(spec)

    def exec_module(self, module: "ModuleType") -> None:
        spec = module.__spec__
        if spec is not None and getattr(spec, "loader", None) is self:
            spec.loader = self._loader
        if getattr(module, "__loader__", None) is self:
            module.__loader__ = self._loader
        self._loader.exec_module(module)
        name = spec.name if spec is not None else module.__name__
        for hook in _take_hooks(name):
            try:
                hook(module)
            except Exception as exc:  # a hook must never break the app's import
                warn(f"could not hook into {name} ({type(exc).__name__}: {exc}); its calls are not tracked")

    def __getattr__(self, name: str) -> object:
        return getattr(self._loader, name)


def start(entry: str = "") -> None:
    """Called by ``httptrack.pth`` when ``HTTPTRACK`` is set: track every httpx/httpx2 client
    this program creates, from the moment either library is imported, by calling ``entry``
    (``"module:function"``, i.e. ``httptrack.autoload:start_from_environment``) then. Never
    raises; a bad value prints one warning and the program runs untracked."""
    global _started, _entry
    if _started:  # site processes a venv's site-packages twice on some Pythons
        return
    _started = True
    try:
        raw = os.environ.get("HTTPTRACK", "")
        if raw.strip().lower() not in ON_VALUES:
            warn(f"HTTPTRACK: expected on/off (1/0, true/false), got {raw!r}; this program runs untracked")
            return
        if ":" not in entry:  # an httptrack.pth older than this module
            warn("the start-up hook is out of date; reinstall httptrack. This program runs untracked")
            return
        _entry = entry
        for name in LIBRARIES:
            when_imported(name, _start_tracking)
    except Exception as exc:
        warn(f"could not start ({type(exc).__name__}: {exc}); this program runs untracked")


def stop() -> None:
    """Cancel what :func:`start` arranged, if no library was imported yet (``install()`` and
    ``uninstall()`` from code take over)."""
    cancel(_start_tracking)


def _start_tracking(module: "ModuleType") -> None:
    # The first of httpx/httpx2 is being imported: now httptrack may load. It reads the
    # settings (a bad one prints one warning) and patches both libraries.
    cancel(_start_tracking)
    name, _, function = _entry.partition(":")
    try:
        __import__(name)
        begin = getattr(sys.modules[name], function)
    except Exception as exc:
        warn(f"could not load httptrack ({type(exc).__name__}: {exc}); this program runs untracked")
        return
    begin()
