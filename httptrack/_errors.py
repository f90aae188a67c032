"""Every exception httptrack defines, in one light module (importing it imports nothing
else): what it raises into the app (``CacheMiss``), for bad settings (``SettingsError`` and
its ``PriceFileError``), for a file that is no call log (``LogError``), and its own
internal conditions (``EncodingDataError``, ``CorruptEntry``, ``LogUnavailable``)."""

from __future__ import annotations

from typing import Any

__all__ = [
    "CacheMiss",
    "CorruptEntry",
    "EncodingDataError",
    "LogError",
    "LogUnavailable",
    "PriceFileError",
    "SettingsError",
]


class SettingsError(ValueError):
    """A setting (argument or ``HTTPTRACK_*`` variable) has a value httptrack cannot use."""


class PriceFileError(SettingsError):
    """The price override file cannot be used; the message names the file and the entry."""


class EncodingDataError(RuntimeError):
    """A shipped encoding file is missing, unreadable or not the official one."""


class LogError(ValueError):
    """A file given as a call log cannot be read as one: not an SQLite database, or not
    httptrack's (no ``calls`` table of its own), or unreadable. The message names the file."""


class CorruptEntry(ValueError):
    """A stored cache entry that cannot be read back."""


class LogUnavailable(Exception):
    """The call log cannot be written now (locked past the busy timeout, disk full,
    unwritable, unreachable): the whole write did not happen and may be tried again later.
    Raised by a log backend (``log/``) to the writer, never into the app."""


class CacheMiss(Exception):
    """The cache is in ``replay`` mode (``HTTPTRACK_CACHE=replay``) and cannot answer this
    request; nothing was sent.

    It is a plain exception, not one of httpx's transport errors, on purpose: SDKs retry
    transport errors (pointless here) and re-raise them as a generic "connection error".
    ``openai`` and ``ollama`` let it through as it is; SDKs that wrap every exception
    (``anthropic``, ``groq``) raise their ``APIConnectionError`` with this as its
    ``__cause__``. Attributes: ``method``, ``url`` (credentials removed), ``model``
    (``None`` when the body names none) and ``reason``.
    """

    def __init__(
        self, method: str, url: str, model: str | None = None, reason: str = "no cached response"
    ) -> None:
        self.method = method
        self.url = url
        self.model = model
        self.reason = reason
        named = f"{method} {url}" + (f" (model {model!r})" if model else "")
        super().__init__(
            f"httptrack cache is in replay mode and {reason} for {named}; nothing was sent. "
            "Run once with HTTPTRACK_CACHE=on (or refresh) to record it."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.method, self.url, self.model, self.reason)
