"""Who made a call: ``attribute()`` (contextvars) and the ``X-Httptrack-*`` control headers.

Attribution is carried in a ``ContextVar``, so it follows the code that runs inside
``with attribute(...)``: across ``await`` points, into tasks created inside the block (they
copy the context), and never leaks between threads or concurrent tasks.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

__all__ = ["CONTROL_PREFIX", "Attribution", "ControlHeaders", "attribute", "current_attribution"]

CONTROL_PREFIX = b"x-httptrack-"
_PROPERTY_PREFIX = "property-"
_name = operator.itemgetter(0)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Attribution:
    user: str | None = None
    service: str | None = None
    session: str | None = None
    properties: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def merged(self, inner: Attribution) -> Attribution:
        """``inner`` (the more specific scope) wins field by field; properties merge."""
        props = dict(self.properties)
        props.update(inner.properties)
        return Attribution(
            user=inner.user if inner.user is not None else self.user,
            service=inner.service if inner.service is not None else self.service,
            session=inner.session if inner.session is not None else self.session,
            properties=MappingProxyType(props),
        )


_EMPTY = Attribution()
_current: ContextVar[Attribution] = ContextVar("httptrack_attribution", default=_EMPTY)
#: The ``with attribute(...)`` blocks open in this context, innermost last: (the object's id,
#: the attribution to restore when it exits).
_entered: ContextVar[tuple[tuple[int, Attribution], ...]] = ContextVar(
    "httptrack_attribute_entered", default=()
)


def current_attribution() -> Attribution:
    """The attribution in force here (empty when no ``attribute()`` block is active)."""
    return _current.get()


class attribute:
    """Attribute every tracked call made inside a block (or decorated function).

    ```python
    with httptrack.attribute(user="alice", service="summarizer", feature="digest"):
        client.chat.completions.create(...)

    @httptrack.attribute(service="nightly-report")
    async def build_report(): ...
    ```

    Nested blocks refine the outer one: inner values win, properties are merged. Extra
    keyword arguments become ``properties`` (stored as JSON in the ``calls`` table).
    """

    __slots__ = ("_attribution",)

    def __init__(
        self,
        user: str | None = None,
        service: str | None = None,
        session: str | None = None,
        **properties: Any,
    ) -> None:
        self._attribution = Attribution(
            user=None if user is None else str(user),
            service=None if service is None else str(service),
            session=None if session is None else str(session),
            properties=MappingProxyType({str(k): str(v) for k, v in properties.items()}),
        )

    # What to restore on exit is kept in a ContextVar too, not on the object: one `attribute`
    # object (a module-level constant, say) can be entered by many threads and tasks at once,
    # and re-entered (nested) in one of them; each context unwinds its own entries.
    def __enter__(self) -> Attribution:
        outer = _current.get()
        merged = outer.merged(self._attribution)
        _entered.set((*_entered.get(), (id(self), outer)))
        _current.set(merged)
        return merged

    def __exit__(self, *exc_info: object) -> None:
        entered = _entered.get()
        for i in range(len(entered) - 1, -1, -1):
            if entered[i][0] == id(self):
                _entered.set(entered[:i] + entered[i + 1 :])
                _current.set(entered[i][1])
                return

    def __call__(self, func: F) -> F:
        attribution = self._attribution

        import inspect  # here, not at import: it is heavy, and only the decorator needs it

        # Each call gets its own scope; the decorator object itself is never entered, so it
        # is safe to call the decorated function from many threads or tasks at once.
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with _scope(attribution):
                    return await func(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _scope(attribution):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


@contextmanager
def _scope(attribution: Attribution) -> Iterator[None]:
    token = _current.set(_current.get().merged(attribution))
    try:
        yield
    finally:
        _current.reset(token)


@dataclass(slots=True)
class ControlHeaders:
    """What the app asked for with ``X-Httptrack-*`` request headers."""

    user: str | None = None
    service: str | None = None
    session: str | None = None
    properties: dict[str, str] = field(default_factory=dict)
    cache: str | None = None  # "no-cache" | "no-store" | "off"
    cache_ttl: str | None = None

    @classmethod
    def pop_from(cls, headers: Any, raw: list[tuple[bytes, bytes]] | None = None) -> ControlHeaders | None:
        """Remove every ``X-Httptrack-*`` header from an httpx/httpx2 ``Headers`` object and
        return what they said (``None`` when there were none: the common, cheap case).
        ``raw``: ``headers.raw``, when the caller has it already."""
        if raw is None:
            raw = headers.raw
        # One C-level search over all names: the common case (no control header) is cheap.
        if CONTROL_PREFIX not in b"\n".join(map(_name, raw)).lower():
            return None
        found = cls()
        names: set[str] = set()
        for name_b, value_b in raw:
            name = name_b.decode("latin-1").lower()
            if not name.startswith("x-httptrack-"):
                continue
            names.add(name)
            key = name[len("x-httptrack-") :]
            value = value_b.decode("utf-8", "replace").strip()
            if key in ("user", "service", "session"):
                setattr(found, key, value)
            elif key == "cache":
                found.cache = value.lower()
            elif key == "cache-ttl":
                found.cache_ttl = value
            elif key.startswith(_PROPERTY_PREFIX) and len(key) > len(_PROPERTY_PREFIX):
                found.properties[key[len(_PROPERTY_PREFIX) :]] = value
        for name in names:
            del headers[name]
        return found

    def apply_to(self, attribution: Attribution) -> Attribution:
        return attribution.merged(
            Attribution(self.user, self.service, self.session, MappingProxyType(self.properties))
        )
