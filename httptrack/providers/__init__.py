"""The provider registry: which host belongs to which provider family.

Lookups run on the app's thread for every request, so they are dictionary hits: an exact
``host:port`` entry, then the bare host, then suffix rules (``*.openai.azure.com``), with
the answer for each host memoized — including "not an LLM provider", the common case for
an app's other HTTP traffic. A ``POST`` to a host no family names is tracked when its path
has the shape of an LLM API (:func:`provider_for_shape`, see ``_detect``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from . import graphql as graphql  # a shape other families' hosts serve: no hosts of its own
from ._base import Parsed, Provider, form_fields, shape_parser
from ._detect import SHAPE_FAMILIES, LocalOpenAICompatibleShape, is_loopback, shape_of
from ._prompt import PromptTally
from .anthropic import Anthropic
from .azure import AzureOpenAI
from .cohere import Cohere
from .compatible import COMPATIBLE
from .gemini import Gemini, VertexAI
from .ollama import Ollama
from .openai import OpenAI, OpenAICompatible

__all__ = [
    "Parsed",
    "PromptTally",
    "Provider",
    "cache_key_headers",
    "form_fields",
    "prompt_readers",
    "provider_by_name",
    "provider_for_host",
    "provider_for_shape",
    "register_provider",
    "registered_providers",
    "shape_parser",
]

_lock = threading.Lock()
#: Provider families by name. ``generic`` is any OpenAI-compatible endpoint mapped in by hand.
_BY_NAME: dict[str, Provider] = {}
#: ``host`` / ``host:port`` → provider, from the families' own host lists and registrations.
_BY_HOST: dict[str, Provider] = {}
#: ``.suffix`` → provider, for hosts named per customer (Azure OpenAI deployments ...).
_BY_SUFFIX: dict[str, Provider] = {}
_memo: dict[tuple[str, int | None], Provider | None] = {}


def _add(provider: Provider) -> None:
    _BY_NAME[provider.name] = provider
    for host in provider.hosts:
        if host.startswith("*"):  # "*.openai.azure.com", "*-aiplatform.googleapis.com"
            _BY_SUFFIX[host[1:]] = provider
        else:
            _BY_HOST[host] = provider


_FAMILIES: tuple[type[Provider], ...] = (
    OpenAI,
    Anthropic,
    Ollama,
    Gemini,
    VertexAI,
    AzureOpenAI,
    OpenAICompatible,
    Cohere,
    *COMPATIBLE,
    *SHAPE_FAMILIES,
)
for _provider in (family() for family in _FAMILIES):
    _add(_provider)

#: The family that reads each API shape on a host no family names (see ``_detect``).
_BY_SHAPE: dict[str, Provider] = {
    "openai": _BY_NAME["openai_compatible"],
    "anthropic": _BY_NAME["anthropic_compatible"],
    "gemini": _BY_NAME["gemini_compatible"],
    "ollama": _BY_NAME["ollama"],
    "cohere": _BY_NAME["cohere_compatible"],
}
#: ``openai_compatible`` on this machine: asked for a stream's usage (see ``_detect``).
_LOCAL_OPENAI = LocalOpenAICompatibleShape()


def provider_by_name(name: str) -> Provider:
    """The provider family called ``name`` (``openai``, ``anthropic``, ``generic`` ...);
    unknown names are treated as OpenAI-compatible endpoints of that name."""
    provider = _BY_NAME.get(name)
    if provider is None:
        with _lock:
            provider = _BY_NAME.get(name)
            if provider is None:
                provider = type(f"{name.title()}Compatible", (OpenAICompatible,), {"name": name})()
                _BY_NAME[name] = provider
    return provider


def register_provider(host: str, provider: str | Provider) -> None:
    """Track calls to ``host`` (``"llm.internal"`` or ``"127.0.0.1:8000"``) as ``provider``:
    a family name (``"openai"``, ``"anthropic"``, ``"ollama"`` ... ; any other name is read as
    an OpenAI-compatible API) or a ``Provider`` instance. Applies process-wide; a transport's
    ``hosts`` setting (``HTTPTRACK_HOSTS``) takes precedence for that transport."""
    if isinstance(provider, str):
        provider = provider_by_name(provider.strip().lower())
    elif not isinstance(provider, Provider):
        raise TypeError(f"provider must be a name or a Provider instance, got {provider!r}")
    key = host.strip().lower()
    if "://" in key:
        key = key.split("://", 1)[1]
    key = key.rstrip("/")
    with _lock:
        if key.startswith("*"):
            _BY_SUFFIX[key[1:]] = provider
        else:
            _BY_HOST[key] = provider
        _BY_NAME.setdefault(provider.name, provider)
        _memo.clear()


def registered_providers() -> dict[str, Provider]:
    return dict(_BY_NAME)


def cache_key_headers() -> frozenset[bytes]:
    """Every family's :attr:`Provider.cache_key_headers`: the request headers that select
    what a provider answers. All of them are keyed on every host (a host may serve a second
    family's API, and a header no API reads changes nothing)."""
    return frozenset().union(*(family.cache_key_headers for family in _BY_NAME.values()))


#: The API shapes a request body is tried in, in this order, when the call's own parser
#: finds no prompt in it (a ``Provider`` of the app's own, a body of another family's shape
#: on a host mapped by hand).
_PROMPT_SHAPES = ("openai", "anthropic", "gemini")


def prompt_readers(parser: Provider) -> Iterator[Provider]:
    """Who may count a request's prompt (:meth:`Provider.count_prompt`), first to last: the
    parser that reads the call, then each known API shape."""
    yield parser
    for name in _PROMPT_SHAPES:
        shape = shape_parser(name)
        if type(shape) is not type(parser):
            yield shape


def provider_for_host(host: str, port: int | None, extra: dict[str, str] | None = None) -> Provider | None:
    """The provider serving ``host[:port]``, or ``None`` for any other host."""
    if extra:
        name = extra.get(f"{host}:{port}") if port is not None else None
        name = name or extra.get(host)
        if name:
            return provider_by_name(name)
    key = (host, port)
    try:
        return _memo[key]
    except KeyError:
        pass
    found = _lookup(host, port)
    if len(_memo) > 4096:  # an app talking to many hosts: don't grow without bound
        _memo.clear()
    _memo[key] = found
    return found


def provider_for_shape(path: str, host: str = "") -> Provider | None:
    """The family that reads a ``POST`` to ``path`` on ``host``, a host no family names, when
    the path has the shape of an LLM API (``/v1/chat/completions``, ``/v1/messages``,
    ``/api/chat`` ...); ``None`` for any other path. A dictionary lookup once a path has
    been seen."""
    shape = shape_of(path)
    if shape is None:
        return None
    if shape == "openai" and is_loopback(host):
        return _LOCAL_OPENAI
    return _BY_SHAPE[shape]


def _lookup(host: str, port: int | None) -> Provider | None:
    if port is not None:
        provider = _BY_HOST.get(f"{host}:{port}")
        if provider is not None:
            return provider
        if ":" in host:  # IPv6 literal: registered as [::1]:port
            provider = _BY_HOST.get(f"[{host}]:{port}")
            if provider is not None:
                return provider
    provider = _BY_HOST.get(host)
    if provider is not None:
        return provider
    for suffix, provider in _BY_SUFFIX.items():
        if host.endswith(suffix):
            return provider
    return None
