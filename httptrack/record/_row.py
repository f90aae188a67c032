"""From a raw exchange to a ``calls`` row: decode, parse, estimate, price, redact.

Runs in the background writer only. Every step is guarded: a payload no parser
understands still yields a row with what could be read, and a note saying what could not.
"""

from __future__ import annotations

import json
import math
import operator
import os
import re
from collections import deque
from datetime import UTC, datetime
from typing import Any

from .._exchange import TAIL_BYTES, BuiltRow, Exchange
from .._faults import report_fault
from .._json import SCAN_IN_C_MAX, STEPPING_DECODER, loads_in_steps, loads_text
from .._redact import CREDENTIAL_IN_RESPONSE, Credentials, read_headers, render_url, scrub_text
from .._usage import Usage
from .._vocab import Outcome, Status
from ..log._schema import COLUMN_NAMES, COLUMNS, TOKEN_COLUMNS
from ..providers import Parsed, Provider, form_fields
from ._decoders import TOO_DEEP, ContentDecoder, JSONArrayDecoder, decoder_for, sse_pairs

__all__ = ["build_row", "salvage_json"]


#: This process's id (``os.getpid()`` is a system call per row otherwise), reset in a forked child.
_pid = os.getpid()


def _reset_pid() -> None:
    global _pid
    _pid = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_pid)


#: The last whole second formatted, and its text ("2026-01-31T12:34:56"): calls come many
#: to a second, so only the milliseconds are formatted per row.
_last_second: tuple[float, str] = (math.nan, "")


def _iso(ts: float) -> str:
    """``"2026-01-31T12:34:56.789Z"``: what ``datetime.fromtimestamp(ts, UTC).isoformat()``
    gives, cut to milliseconds (as the format has always done: strftime's %f cut to three
    digits)."""
    global _last_second
    # datetime.fromtimestamp's own rounding: the fraction to the nearest microsecond (half
    # to even), carried into the seconds when it rounds up to a whole one.
    fraction, second = math.modf(ts)
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        micros -= 1_000_000
        second += 1.0
    elif micros < 0:
        micros += 1_000_000
        second -= 1.0
    cached, text = _last_second
    if cached != second:
        text = datetime.fromtimestamp(second, UTC).isoformat()[:-6]
        _last_second = (second, text)
    return f"{text}.{micros // 1000:03d}Z"


def _decode_json(data: bytes) -> Any:
    """``data`` decoded as JSON; ``None`` when it is not JSON, :data:`TOO_DEEP` when it is
    nested deeper than Python's recursion limit."""
    stripped = data.lstrip()
    if not stripped or stripped[:1] not in b"{[":
        return None
    try:
        return loads_in_steps(data)
    except ValueError:
        return None
    except RecursionError:
        return TOO_DEEP


_DECODER = json.JSONDecoder()
_KEY = re.compile(r'"([A-Za-z_][A-Za-z0-9_]*)"\s*:\s*')
#: Values nested too deeply to decode that salvage_json tries before it gives up: each try
#: descends to the recursion limit first, and in ``{"a": {"a": ...}}`` every key is one.
_DEEP_TRIES = 16


def salvage_json(text: str) -> dict[str, Any]:
    """Whatever ``"key": value`` pairs can be read from a fragment of JSON (the tail of a
    body too long to keep whole, or a body nested too deeply to decode whole): the figures
    providers put at the end of a body are usually found this way. Later occurrences of a
    key win."""
    found: dict[str, Any] = {}
    # A value may be most of the text: never decoded by the C scanner in one go when long.
    decoder = STEPPING_DECODER if len(text) > SCAN_IN_C_MAX else _DECODER
    deep = 0
    for match in _KEY.finditer(text):
        try:
            value, _ = decoder.raw_decode(text, match.end())
        except ValueError:
            continue
        except RecursionError:
            deep += 1
            if deep == _DEEP_TRIES:
                break
            continue
        found[match.group(1)] = value
    return found


def _salvage_deep(data: bytes, cap: int, what: str, notes: list[str]) -> dict[str, Any]:
    notes.append(f"{what} nested too deeply to decode whole: read from its outer members")
    return salvage_json(data[:cap].decode("utf-8", "replace"))


#: A compressed body is decoded for the record up to this many times what is kept of it
#: (``Exchange.limit``: the body cap, 1 MiB at least); past that it is a compression bomb,
#: not an answer, and decoding stops. Only the head and the last TAIL_BYTES are ever held.
DECODE_FACTOR = 64


class _Body:
    """A response body decoded once, split as an uncompressed one is on the app's thread:
    the head (its first ``Exchange.limit`` bytes) and the tail (the last ``TAIL_BYTES`` of
    a body longer than that). ``cut``: the head is not the whole body."""

    def __init__(self, ex: Exchange, encoding: str | None, notes: list[str]) -> None:
        #: The body decoded as JSON, once read (``None``: a stream, or not JSON).
        self.json: Any = None
        self.head: list[bytes] = ex.chunks
        self.tail: list[bytes] = list(ex.tail) if ex.tail is not None else []
        self.cut = ex.tail is not None
        #: The head was decoded from a Content-Encoding.
        self.decoded = False
        self._data: bytes | None = None
        if not encoding or encoding.strip().lower() == "identity":
            return
        try:
            decoder = ContentDecoder(encoding)
        except ValueError as exc:
            notes.append(f"could not decode content-encoding {encoding}: {exc}")
            return
        if self.tail:
            notes.append("body longer than the cap and compressed: its end could not be read")
            self.tail = []
        self._decode(ex, decoder, encoding, notes)

    def data(self) -> bytes:
        """The head as one ``bytes`` (joined once)."""
        if self._data is None:
            self._data = b"".join(self.head)
        return self._data

    def _decode(self, ex: Exchange, decoder: ContentDecoder, encoding: str, notes: list[str]) -> None:
        limit = ex.limit
        budget = limit * DECODE_FACTOR
        head: list[bytes] = []
        tail: deque[bytes] = deque()
        held = tail_bytes = total = 0
        try:
            for piece in decoder.decode_all(ex.chunks, final=ex.tail is None):
                total += len(piece)
                if held < limit:
                    kept = piece[: limit - held]
                    head.append(kept)
                    held += len(kept)
                    piece = piece[len(kept) :]
                    if not piece:
                        continue
                self.cut = True
                if total > budget:
                    notes.append(
                        f"compressed body decodes to more than {budget:,} bytes (a compression bomb?): "
                        "decoded no further"
                    )
                    tail.clear()
                    break
                tail.append(piece)
                tail_bytes += len(piece)
                while tail_bytes - len(tail[0]) >= TAIL_BYTES:
                    tail_bytes -= len(tail.popleft())
        except Exception as exc:
            notes.append(f"could not decode content-encoding {encoding}: {exc}")
            if not head:
                return  # not what it says it is: the bytes are kept as they came
            self.cut = True
        self.head, self.tail, self.decoded = head, list(tail), True


def build_row(ex: Exchange) -> BuiltRow:
    """The ``calls`` row for one finished exchange, and what was learned building it. Reads
    ``ex``, never writes on it (it is the app's object). Never raises: whatever goes wrong while
    the exchange is read (a parser's bug, a recursion too deep, memory) still leaves a row
    with what the transport saw, a note, and a fault counted."""
    try:
        return _build_row(ex)
    except Exception as exc:
        report_fault("record", "a call could not be read; only what the transport saw was recorded", exc)
        return BuiltRow(_transport_row(ex, exc), False)


def _transport_row(ex: Exchange, exc: Exception) -> dict[str, Any]:
    """A row from what the transport saw, none of it parsed: where, when, how it ended, who
    made it. No bodies (they were not read, so not redacted either)."""
    row: dict[str, Any] = dict.fromkeys(COLUMN_NAMES)
    row.update(_seen(ex))
    status, error_code, error_message = _status(ex, ex.outcome, Parsed(operation=ex.operation))
    row.update(
        endpoint=ex.path,
        stream=0,
        status=status,
        outcome=ex.outcome,
        error_code=error_code,
        error_message=scrub_text(ex.request_headers, error_message) if error_message else None,
        tokens_estimated=0,
        user=ex.attribution.user or ex.settings.user,
        body_truncated=0,
        parse_notes=f"httptrack could not read this call ({type(exc).__name__}): only what the transport saw "
        "is recorded",
    )
    return row


def _seen(ex: Exchange) -> dict[str, Any]:
    """The columns read off the exchange as the transport captured it, the same in every
    row (a parsed one and :func:`_transport_row`'s alike: :func:`_build_row` writes the
    same expressions into its one dict, column by column)."""
    attribution = ex.attribution
    return {
        "id": ex.call_id,
        "started_at": _iso(ex.started_at),
        "provider": ex.provider.name,
        "host": ex.host if ex.port is None else f"{ex.host}:{ex.port}",
        "method": ex.method,
        "url": _url(ex),
        "operation": ex.operation,
        "http_status": ex.status,
        "latency_ms": _ms(ex.t0, ex.t_end),
        "cached": int(ex.cached),
        "cache_key": ex.cache_key,
        "service": attribution.service or ex.settings.service,
        "session": attribution.session,
        "properties": _properties(attribution.properties) if attribution.properties else None,
        "request_bytes": _request_bytes(ex),
        "response_bytes": ex.received if ex.status is not None else None,
        "pid": _pid,
    }


#: The values of a row's text columns (``scrub_row`` searches them all at once).
_texts = operator.itemgetter(*[name for name, sqltype, _ in COLUMNS if sqltype == "TEXT"])


def _properties(properties: Any) -> str:
    return json.dumps(dict(properties), sort_keys=True)


def _build_row(ex: Exchange) -> BuiltRow:
    """:func:`build_row`'s work: decode, parse, estimate, price, redact."""
    settings = ex.settings
    outcome = ex.outcome
    provider = ex.provider
    parsed = Parsed(operation=ex.operation)
    notes = parsed.notes
    parser: Provider = provider
    try:
        # The host's family may hand this path to another family's parser (Anthropic's
        # API on Ollama or Azure, GraphQL on a generic host); the row keeps the family.
        parser = provider.parser_for(ex.method, ex.path)
    except Exception as exc:
        notes.append(f"parser selection error: {exc!r}")

    request_json = _decode_json(ex.request_body)
    if request_json is TOO_DEEP:
        request_json = _salvage_deep(ex.request_body, settings.max_body_bytes, "request body", notes)
    request_headers, request_headers_json, repeated, carried = read_headers(ex.request_headers)
    # The first Content-Type, as request_content_type() reads it (the dict joins repeats).
    request_type = request_content_type(ex) if repeated else request_headers.get("content-type", "").lower()
    if request_json is None and ex.request_body and request_type.startswith("multipart/form-data"):
        request_json = form_fields(ex.request_body, request_type) or None
    # Every credential the request carried: looked for, by value, in everything stored.
    credentials = Credentials()
    credentials.add_found(carried)
    credentials.add_query(ex.query)
    if request_json is not None:
        credentials.add_fields(request_json)
    elif ex.request_body and request_type.startswith("application/x-www-form-urlencoded"):
        credentials.add_form(ex.request_body)
    try:
        parser.read_request(parsed, ex.method, ex.path, ex.query, request_json)
    except Exception as exc:
        notes.append(f"request parser error: {exc!r}")
    if ex.rewritten:
        notes.append(f"httptrack added {ex.rewritten} to the request; the app did not see what it added")
    if ex.cache_note:
        notes.append(ex.cache_note)

    if ex.status is not None:
        response_headers, response_headers_json, _, _ = read_headers(ex.response_headers)
    else:
        response_headers, response_headers_json = {}, None
    content_type = response_headers.get("content-type", "").lower()
    told = len(notes)  # notes from here on are about the response
    body = _Body(ex, response_headers.get("content-encoding"), notes) if ex.status is not None else None

    replayed = ex.replayed_row
    if replayed is not None and ex.received == replayed.get("response_bytes"):
        # A cache hit read to its end: the response is the stored one, byte for byte, so what
        # the original call's row read from it still holds. Nothing is parsed again, and the
        # notes are the original's: they already say what was noted about the same request
        # (read again above, it would be noted twice).
        notes.clear()
        _take_replayed_reading(parsed, replayed)
        if outcome == "cut_short":
            outcome = "complete"  # every byte was delivered
    elif body is not None and ex.status is not None:
        whole = _read_response(ex, parser, parsed, body, content_type)
        try:
            parser.finish(parsed)
        except Exception as exc:
            notes.append(f"parser error: {exc!r}")
            whole = False
        # An end marker followed by a half-written event, or a JSON array never closed:
        # not the response the provider sent.
        if not whole:
            parsed.complete = False

    if outcome == "cut_short" and parsed.stream_done:
        outcome = "complete"  # the SDK stopped reading after the stream's end marker
    status, error_code, error_message = _status(ex, outcome, parsed)
    usage = (
        parsed.usage if replayed is not None else _with_estimates(ex, outcome, parser, parsed, request_json)
    )
    if (
        status == "success"
        and parsed.usage.is_empty
        and not parsed.output
        and parsed.operation in ("chat", "completion")
        and parsed.billed is not False
        and body is not None
        and len(notes) == told  # else what went wrong is said already (a body that is not JSON ...)
    ):
        notes.append("no usage and no generated text found in the response: a shape httptrack does not know")

    if replayed is not None:
        # A cache hit: the original call's token figures, as recorded then (not re-counted);
        # nothing billed, and what the original cost is what the hit saved (not re-priced,
        # so the saving always equals the cost once recorded).
        tokens = tuple(map(replayed.get, TOKEN_COLUMNS))
        note = replayed.get("cost_note")
        cost: tuple[float | None, float | None, str | None] = (
            0.0,
            replayed.get("cost_usd"),
            _FROM_CACHE + (f"; {note}" if note else ""),
        )
    else:
        tokens = (
            usage.input_tokens,
            usage.output_tokens,
            usage.total_tokens,
            usage.cached_input_tokens,
            usage.cache_write_tokens,
            usage.reasoning_tokens,
            int(usage.estimated),
        )
        cost = _price(ex, parsed, usage, status)
    request_body, response_body, response_text, body_truncated = _bodies(
        ex, body, parsed, content_type, request_type
    )
    attribution = ex.attribution
    # Every column, in table order (see _seen: the columns read off the exchange alone).
    row = {
        "id": ex.call_id,
        "started_at": _iso(ex.started_at),
        "provider": provider.name,
        "host": ex.host if ex.port is None else f"{ex.host}:{ex.port}",
        "method": ex.method,
        "endpoint": ex.path if not parsed.endpoint_detail else f"{ex.path}#{parsed.endpoint_detail}",
        "url": _url(ex),
        "operation": ex.operation,
        "model": parsed.model,
        "response_model": parsed.response_model,
        "stream": int(parsed.stream),
        "status": status,
        "outcome": outcome,
        "http_status": ex.status,
        "error_code": error_code,
        "error_message": scrub_text(ex.request_headers, error_message) if error_message else None,
        "input_tokens": tokens[0],
        "output_tokens": tokens[1],
        "total_tokens": tokens[2],
        "cached_input_tokens": tokens[3],
        "cache_write_tokens": tokens[4],
        "reasoning_tokens": tokens[5],
        "tokens_estimated": tokens[6],
        "cost_usd": cost[0],
        "cost_saved_usd": cost[1],
        "cost_note": cost[2],
        "latency_ms": _ms(ex.t0, ex.t_end),
        "ttft_ms": _ms(ex.t0, ex.t_first) if parsed.stream else None,
        "cached": int(ex.cached),
        "cache_key": ex.cache_key,
        "user": attribution.user or parsed.user or settings.user,
        "service": attribution.service or settings.service,
        "session": attribution.session,
        "properties": _properties(attribution.properties) if attribution.properties else None,
        "request_id": _request_id(provider.request_id_headers + parser.request_id_headers, response_headers),
        "response_id": parsed.response_id,
        "finish_reason": parsed.finish_reason,
        "request_headers": request_headers_json,
        "request_body": request_body,
        "request_bytes": _request_bytes(ex),
        "response_headers": response_headers_json,
        "response_body": response_body,
        "response_bytes": ex.received if ex.status is not None else None,
        "response_text": response_text,
        "body_truncated": body_truncated,
        "parse_notes": "; ".join(notes) if notes else None,
        "pid": _pid,
    }
    # A response that mints credentials (an OAuth token, a new API key) holds some of its own.
    minted = body is not None and credentials.add_answer(body.json, ex.path)
    if credentials and (credentials.scrub_row(row, _texts) or minted or _echoed(ex, body, credentials)):
        row[CREDENTIAL_IN_RESPONSE] = True
    return BuiltRow(row, parsed.complete)


def _echoed(ex: Exchange, body: _Body | None, credentials: Credentials) -> bool:
    """With bodies not stored (so not searched above), whether a response the cache may
    store quotes a credential."""
    if ex.settings.store_bodies or body is None or ex.cache_ttl is None:
        return False
    return credentials.found_in(body.data())


def request_content_type(ex: Exchange) -> str:
    for name, value in ex.request_headers:
        if name.lower() == b"content-type":
            return value.decode("latin-1").lower()
    return ""


def _url(ex: Exchange) -> str:
    return render_url(ex.scheme, ex.host, ex.port, ex.path, ex.query)


def _ms(start: float, end: float | None) -> float | None:
    return None if end is None else round((end - start) * 1000.0, 3)


def _request_id(names: tuple[str, ...], headers: dict[str, str]) -> str | None:
    for name in names:
        if headers.get(name):
            return headers[name]
    return None


def _read_response(ex: Exchange, provider: Provider, parsed: Parsed, body: _Body, content_type: str) -> bool:
    """Read the response into ``parsed``; ``False`` when it is certainly not whole (a
    stream with a half-written event, a body too long to read whole). A plain body that
    parses as JSON, labelled JSON, is ``parsed.complete``; a stream is when its parser
    saw the provider's end marker."""
    status = ex.status or 0
    fmt = None
    try:
        fmt = provider.stream_format(parsed, content_type) if status < 400 else None
    except Exception as exc:
        parsed.notes.append(f"parser error: {exc!r}")
    if fmt is not None:
        parsed.stream = True
        whole = _read_events(provider, parsed, fmt, body.head)
        if body.tail:
            # The tail starts mid-event; a fresh decoder skips the broken first piece.
            _read_events(provider, parsed, fmt, body.tail)
        return whole and not body.cut
    data = body.data()
    if not data:
        return False
    if not body.cut:
        decoded = _decode_json(data)
        if decoded is TOO_DEEP:
            # Not known whole (so never cached), but what its outer members say is read.
            decoded = _salvage_deep(data, len(data), "response body", parsed.notes)
        elif decoded is None:
            if content_type.startswith("application/json") or status >= 400:
                parsed.notes.append("response body is not valid JSON")
            if status >= 400:
                text = data.decode("utf-8", "replace").strip()
                parsed.fail(None, text[:500] or None)
            return False
        else:
            parsed.complete = "json" in content_type
        body.json = decoded
    else:
        # Too long to keep whole: read the figures from the start and the end.
        decoded = body.json = salvage_json(data[:65536].decode("utf-8", "replace"))
        decoded.update(salvage_json(b"".join(body.tail).decode("utf-8", "replace")))
        where = "its start and end" if body.tail else "its start"
        longer = "body longer than the cap once decoded" if body.decoded else "body longer than the cap"
        parsed.notes.append(f"{longer}: figures read from {where}")
    try:
        provider.read_body(parsed, status, decoded)
    except Exception as exc:
        parsed.notes.append(f"parser error: {exc!r}")
        return False
    return True


def _read_events(provider: Provider, parsed: Parsed, fmt: str, chunks: list[bytes]) -> bool:
    """Feed every event to ``provider``; ``False`` when one was not whole: an event (SSE
    data or NDJSON line) that is not JSON, as the last one is when a stream is cut off
    mid-event (but for the provider's own end marker), or a JSON array with no closing
    bracket."""
    if fmt == "sse":
        return _read_sse(provider, parsed, chunks)
    notes = _EventNotes(parsed)
    whole = True
    read_event = provider.read_event
    decoder = decoder_for(fmt)
    for data in decoder.decode_all(chunks):
        if data.__class__ is str:  # NDJSON: a line that is not JSON
            whole = False
        if data is TOO_DEEP:
            notes.too_deep()
            continue
        try:
            read_event(parsed, None, data)
        except Exception as exc:
            notes.failed(exc)
    if decoder.__class__ is JSONArrayDecoder and not decoder.closed:
        whole = False
    return whole


def _read_sse(provider: Provider, parsed: Parsed, chunks: list[bytes]) -> bool:
    """:func:`_read_events` for an SSE body. Each event goes first to the provider's
    :meth:`~Provider.sse_reader` where it has one (reading only what it needs from the
    data's text), else is decoded in full for its ``read_event``."""
    notes = _EventNotes(parsed)
    whole = True
    read_event = provider.read_event
    end_markers = provider.stream_end_markers
    fast = None
    try:
        fast = provider.sse_reader(parsed)
    except Exception as exc:
        parsed.notes.append(f"parser error: {exc!r}")
    for name, text in sse_pairs(chunks):
        if text in end_markers:  # the family's own end of stream (never JSON: not decoded)
            parsed.stream_done = parsed.complete = True
            continue
        try:
            if fast is not None and len(text) <= SCAN_IN_C_MAX and fast(parsed, name, text):
                continue
        except Exception as exc:
            notes.failed(exc)
            continue
        try:
            # (An event's data is short: decoded in C, without a call around it.)
            data: Any = loads_text(text) if len(text) <= SCAN_IN_C_MAX else loads_in_steps(text)
        except ValueError:
            data = text
            if data.strip():  # an empty data line is a keep-alive
                whole = False
        except RecursionError:
            data = TOO_DEEP
        if data is TOO_DEEP:
            notes.too_deep()
            continue
        try:
            read_event(parsed, name, data)
        except Exception as exc:
            notes.failed(exc)
    return whole


class _EventNotes:
    """What went wrong reading a stream's events, noted on ``parsed`` once of each kind:
    the first parser error (with its count kept), an event too deep to decode."""

    __slots__ = ("deep", "errors", "parsed")

    def __init__(self, parsed: Parsed) -> None:
        self.parsed = parsed
        self.errors = 0
        self.deep = False

    def failed(self, exc: Exception) -> None:
        self.errors += 1
        if self.errors == 1:
            self.parsed.notes.append(f"parser error on a stream event: {exc!r}")

    def too_deep(self) -> None:
        if not self.deep:
            self.deep = True
            self.parsed.notes.append("a stream event nested too deeply to decode was skipped")


def _status(ex: Exchange, outcome: Outcome, parsed: Parsed) -> tuple[Status, str | None, str | None]:
    if outcome in ("transport_error", "cache_miss", "limited"):  # limited: refused by a limit
        return "error", ex.error_type, ex.error_message
    status = ex.status or 0
    if status >= 400:
        return "error", parsed.error_code or f"http_{status}", parsed.error_message
    if parsed.stream_error:
        return "error", parsed.error_code or "stream_error", parsed.error_message
    if outcome == "failed":
        return "error", ex.error_type, ex.error_message
    return "success", parsed.error_code, parsed.error_message


def _with_estimates(
    ex: Exchange, outcome: Outcome, parser: Provider, parsed: Parsed, request_json: Any
) -> Usage:
    """Count tokens locally where the provider sent none (streams without a usage chunk,
    streams cut short or broken off, bodies without usage), and flag the figures as
    estimated. Only for generations and embeddings that reached the app: a call refused with
    an HTTP error produced nothing to count. The prompt is counted as ``parser`` (the one
    that read the call) says its requests are shaped."""
    usage = parsed.usage
    if parsed.operation not in ("chat", "completion", "embeddings") or parsed.billed is False:
        return usage
    if ex.status is None or ex.status >= 400 or ex.cached:
        return usage
    # A stream that ended before its end: what arrived was generated (and billed) all the same.
    incomplete = parsed.stream and (outcome in ("cut_short", "failed") or parsed.stream_error)
    if parsed.stream_error and not parsed.output and usage.is_empty:
        return usage  # an error event before any output: nothing was generated
    if (
        not incomplete
        and usage.input_tokens is not None
        and (usage.output_tokens is not None or parsed.operation == "embeddings")
    ):
        return usage
    try:
        from . import _tokens
    except ImportError:  # pragma: no cover - encodings missing from a broken install
        return usage
    model = parsed.response_model or parsed.model
    estimated = Usage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        estimated=usage.estimated,
        extra=dict(usage.extra),
    )
    try:
        if estimated.input_tokens is None and request_json is not None:
            count = _tokens.estimate_prompt_tokens(parser, parsed.operation, request_json, model)
            if count is not None:
                estimated.input_tokens = count
                estimated.estimated = True
        if parsed.operation != "embeddings":
            text = parsed.text
            counted = _tokens.count_output_text(text, model) if text else 0
            # A stream cut short reports (at best) a provisional output figure: what was
            # actually received is the better number, unless the final figure had arrived.
            provisional = incomplete and not parsed.usage_final
            if estimated.output_tokens is None or (provisional and counted > estimated.output_tokens):
                estimated.output_tokens = counted
                estimated.estimated = True
    except Exception as exc:
        report_fault("estimate", "could not count tokens locally", exc)
        return usage
    return estimated


_FROM_CACHE = "served from httptrack's cache"
#: (cost_usd, cost_saved_usd, cost_note)
_Cost = tuple[float | None, float | None, str | None]
_LIMITED: _Cost = (0.0, None, "not sent: refused by a limit")
_HTTP_ERROR: _Cost = (0.0, None, "not billed: HTTP error")
_FAILED: _Cost = (0.0, None, "not billed: the call failed")
_NOT_BILLED: _Cost = (0.0, None, "not a billed operation")
_NO_INPUT: _Cost = (None, None, "input tokens unknown: none reported and the prompt could not be counted")


def _price(ex: Exchange, parsed: Parsed, usage: Usage, status: Status) -> _Cost:
    """The cost columns: ``cost_usd``, ``cost_saved_usd``, ``cost_note``."""
    if ex.outcome == "limited":  # limits/: refused before it was sent
        return _LIMITED
    billed = parsed.billed
    if billed is None:
        billed = parsed.operation in ("chat", "completion", "embeddings")
    if usage.is_empty:
        if status == "error" and not parsed.stream:
            return _HTTP_ERROR if (ex.status or 0) >= 400 else _FAILED
        if not billed:
            return _NOT_BILLED
    if (
        usage.input_tokens is None
        and usage.output_tokens is not None
        and parsed.operation in ("chat", "completion")
        and parsed.reported_cost_usd is None
    ):
        # Output alone would price the call as if its prompt were free: unknown instead.
        return _NO_INPUT
    if parsed.reported_cost_usd is not None and not usage.estimated:
        # The provider's own bill for the call (OpenRouter, xAI, Perplexity): exact by definition.
        if ex.cached:
            return 0.0, parsed.reported_cost_usd, f"{_FROM_CACHE}; cost as reported by the provider"
        return parsed.reported_cost_usd, None, "as reported by the provider"
    price_usage = _price_usage or _load_pricing()
    overrides = ex.settings.prices or None
    provider = ex.provider.name
    started = datetime.fromtimestamp(ex.started_at, UTC)
    # The model that answered, else (no price for it) the one asked for.
    answered, asked = parsed.response_model, parsed.model
    models = (answered, asked) if answered and asked and asked != answered else (answered or asked,)
    result: Any = None
    for model in models:
        priced = price_usage(
            provider,
            model,
            usage,
            host=ex.host,
            at=started,
            overrides=overrides,
            batch=parsed.batch,
            tier=parsed.price_tier,
        )
        if result is None or priced.cost_usd is not None:
            result = priced
        if priced.cost_usd is not None:
            break
    if ex.cached:
        return 0.0, result.cost_usd, _FROM_CACHE + (f"; {result.reason}" if result.reason else "")
    return result.cost_usd, None, result.reason


#: ``pricing.price_usage``, imported on first use (genai-prices is heavy to import, and
#: this module is also imported on the app's thread); an import statement per row costs too.
_price_usage: Any = None


def _load_pricing() -> Any:
    global _price_usage
    from ..pricing import price_usage

    _price_usage = price_usage
    return price_usage


def _take_replayed_reading(parsed: Parsed, original: dict[str, Any]) -> None:
    """What the original call's row read from the response (see ``_cache.ORIGINAL_COLUMNS``)."""
    parsed.stream = bool(original.get("stream"))
    parsed.response_model = original.get("response_model")
    parsed.response_id = original.get("response_id")
    parsed.finish_reason = original.get("finish_reason")
    if original.get("response_text"):
        parsed.output.append(original["response_text"])
    if original.get("parse_notes"):
        parsed.notes.append(original["parse_notes"])


def _request_bytes(ex: Exchange) -> int:
    """The request body's size: all of it, for a streamed body kept only in part."""
    return len(ex.request_body) if ex.request_parts is None else ex.request_sent


def _text_of(data: bytes, content_type: str, cap: int) -> tuple[str, bool]:
    truncated = len(data) > cap
    if truncated:
        data = data[:cap]
    try:
        text = data.decode("utf-8", "strict" if not truncated else "ignore")
    except UnicodeDecodeError:
        if content_type.startswith(("text/", "application/json")) or "json" in content_type:
            text = data.decode("utf-8", "replace")
        else:
            return f"[binary body: {len(data)} bytes, {content_type or 'unknown type'}]", truncated
    return text, truncated


def _bodies(
    ex: Exchange, body: _Body | None, parsed: Parsed, content_type: str, request_type: str
) -> tuple[str | None, str | None, str | None, int]:
    """The body columns: ``request_body``, ``response_body``, ``response_text``,
    ``body_truncated``."""
    settings = ex.settings
    if not settings.store_bodies:
        return None, None, None, 0
    cap = settings.max_body_bytes
    request_text, request_cut = _text_of(ex.request_body, request_type, cap)
    sent = _request_bytes(ex)
    request_cut = request_cut or sent > len(ex.request_body)  # a streamed body kept in part
    response_text = None
    response_cut = False
    if body is not None:
        data = body.data()
        response_text, response_cut = _text_of(data, content_type, cap)
        response_cut = response_cut or body.cut
        if response_cut:
            response_text += f"\n[httptrack: truncated; {ex.received} bytes received in all]"
    if request_cut:
        request_text += f"\n[httptrack: truncated; {sent} bytes sent in all]"
    generated = parsed.text or None
    if generated is not None and len(generated) > cap:
        generated = generated[:cap]
    redact = settings.redact
    if redact is not None:
        try:
            request_text = redact(request_text) if request_text else request_text
            response_text = redact(response_text) if response_text else response_text
            generated = redact(generated) if generated else generated
        except Exception as exc:
            report_fault("redact", "the redact hook raised; bodies of this call were not stored", exc)
            request_text = response_text = generated = "[not stored: the redact hook failed]"
    return request_text or None, response_text or None, generated, int(request_cut or response_cut)
