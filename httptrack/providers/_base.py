"""What every provider module implements, and the record of what a parser read.

A provider turns one raw exchange into figures. It is called in the background writer,
never on the app's thread, with the request body already decoded from JSON and the
response either as one decoded JSON body or as a sequence of stream events. Parsers read
what is there rather than what one version of the docs shows: a missing or oddly shaped
field leaves a figure ``None`` (and, where useful, a note), it never raises into the app.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from .._usage import Usage

__all__ = ["Parsed", "Provider", "as_int", "dig", "first_str"]


@dataclass(slots=True)
class Parsed:
    """Everything the parsers learned about one call."""

    operation: str = "other"
    model: str | None = None
    stream: bool = False
    user: str | None = None
    response_model: str | None = None
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    #: The provider's id for the response (``chatcmpl-...``, ``msg_...``), when in the body.
    response_id: str | None = None
    #: Generated text as it arrived, for estimates and for reading a stream back.
    output: list[str] = field(default_factory=list)
    #: Things a parser could not read, for the ``parse_notes`` column.
    notes: list[str] = field(default_factory=list)
    #: The stream carried an error event (an error even under HTTP 200).
    stream_error: bool = False
    #: The stream's own end marker arrived (``[DONE]``, ``message_stop``, ``done: true``):
    #: the response is complete even if the app closed it before the connection's end,
    #: as SDKs do once they see that marker.
    stream_done: bool = False
    #: The request went to a batch API (priced at the batch discount).
    batch: bool = False
    #: Parser scratch space for stream state (e.g. usage seen so far).
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "".join(self.output)

    def fail(self, code: str | None, message: str | None) -> None:
        """Record an error (the first one wins: later errors are usually consequences)."""
        if self.error_code is None and self.error_message is None:
            self.error_code = code
            self.error_message = message


class Provider:
    """Base class for a provider family. Subclasses set ``name`` and ``hosts`` and override
    the ``read_*`` methods for their wire format."""

    #: httptrack's provider id (the ``provider`` column) and the key prices are looked up by.
    name: ClassVar[str] = "generic"
    #: Hosts (``host`` or ``host:port``) served by this provider out of the box.
    hosts: ClassVar[tuple[str, ...]] = ()
    #: Response headers carrying the provider's request id, in order of preference.
    request_id_headers: ClassVar[tuple[str, ...]] = ("x-request-id", "request-id")

    def operation(self, method: str, path: str) -> str:
        """``chat`` | ``completion`` | ``embeddings`` | ``models`` | ``other``."""
        return "other"

    def cacheable(self, method: str, path: str, operation: str) -> bool:
        """Whether a response may be served from the response cache. Only reads that are
        safe to repeat: model generations and lists, never uploads, batches or deletes."""
        if operation == "models":
            return method == "GET"
        return method == "POST" and operation in ("chat", "completion", "embeddings")

    def read_request(self, parsed: Parsed, method: str, path: str, query: str, body: Any) -> None:
        """Fill ``model``, ``stream`` and ``user`` from the request (``body`` is decoded JSON,
        or ``None`` when the request had no JSON body)."""
        if isinstance(body, dict):
            parsed.model = first_str(body.get("model"))
            parsed.stream = body.get("stream") is True

    def stream_format(self, parsed: Parsed, content_type: str) -> str | None:
        """How to split the response body into events (``sse`` | ``ndjson`` |
        ``json-array``), or ``None`` for one plain body."""
        if content_type.startswith("text/event-stream"):
            return "sse"
        if content_type.startswith(("application/x-ndjson", "application/jsonl", "application/ndjson")):
            return "ndjson"
        return None

    def read_body(self, parsed: Parsed, status: int, body: Any) -> None:
        """Read a whole (non-stream) response body, decoded from JSON."""

    def read_event(self, parsed: Parsed, event: str | None, data: Any) -> None:
        """Read one stream event: ``event`` is the SSE event name (``None`` for NDJSON and
        unnamed events); ``data`` its decoded JSON (or text when it was not JSON)."""

    def finish(self, parsed: Parsed) -> None:
        """Called once after the body or all events were read."""


def dig(obj: Any, *path: str | int) -> Any:
    """``obj[a][b][c]`` or ``None`` when any step is missing or of another type."""
    for key in path:
        if isinstance(key, int):
            if not isinstance(obj, list) or not -len(obj) <= key < len(obj):
                return None
        elif not isinstance(obj, dict):
            return None
        obj = obj[key] if isinstance(key, int) else obj.get(key)
    return obj


def as_int(value: Any) -> int | None:
    """A token count, or ``None`` for anything that is not a sane non-negative integer."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value if 0 <= value < 1 << 53 else None
    if isinstance(value, float) and value.is_integer():
        return as_int(int(value))
    if isinstance(value, str) and value.isdigit():
        return as_int(int(value))
    return None


def first_str(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    return None
