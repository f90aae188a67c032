"""``httptrack show``: one call in full."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .._format import count, duration, money
from ._common import db_option, echo_json, json_option_saying, open_log_or_fail

if TYPE_CHECKING:
    from ..log._records import CallRecord

__all__ = ["pretty_body", "show"]


@click.command()
@click.argument("call_id", metavar="[ID]", required=False)
@click.option("--no-bodies", is_flag=True, help="Leave out the request and response bodies.")
@click.option("--headers", "with_headers", is_flag=True, help="Also print the request and response headers.")
@json_option_saying(
    "Print the call as JSON instead of text (bodies unless --no-bodies; headers with --headers)."
)
@db_option
def show(call_id: str | None, no_bodies: bool, with_headers: bool, as_json: bool, db: Path | None) -> None:
    """Show one call in full.

    Its figures, attribution, timings, request and response. ID is a call id as
    `httptrack calls` lists it, or a unique start of one; without it, the newest call.
    Streams are shown reassembled into the text they generated, and as received.

    \b
    Examples:
      httptrack show                 # the newest call
      httptrack show 01JH3K9Z        # by the start of its id
      httptrack show 01JH3K9Z --json | jq .usage
    """
    with open_log_or_fail(db) as log:
        if call_id is None:
            record = next(log.calls(limit=1), None)
            if record is None:
                raise click.ClickException("no calls recorded yet")
        else:
            record = log.get(call_id)
            if record is None:
                raise click.ClickException(f"no call with id {call_id!r} (or more than one starts so)")
    if as_json:
        data = record.model_dump(mode="json")
        if no_bodies:
            for key in ("request_body", "response_body", "response_text"):
                data.pop(key, None)
        if not with_headers:
            data.pop("request_headers", None)
            data.pop("response_headers", None)
        echo_json(data)
        return
    click.echo(describe(record))
    if with_headers:
        for title, headers in (
            ("Request headers", record.request_headers),
            ("Response headers", record.response_headers),
        ):
            click.echo(_rule(title))
            for name, value in (headers or {}).items():
                click.echo(f"{name}: {value}")
    if not no_bodies:
        click.echo(bodies(record))


_LABEL = 12
#: The output rate is shown only when generating took at least this long (ms): after the
#: first token, latency minus time to first token.
MIN_RATE_MS = 50.0


def _line(label: str, text: str) -> str:
    return f"{label:<{_LABEL}}{text}"


def _rule(title: str) -> str:
    return click.style(f"── {title} " + "─" * max(0, 60 - len(title)), bold=True)


def describe(r: CallRecord) -> str:
    """The figures of one call, one topic per line."""
    lines = [
        click.style(f"Call {r.id}", bold=True)
        + f"  {r.started_at.isoformat(sep=' ', timespec='milliseconds')}"
    ]
    lines.append(_line("request", f"{r.method or ''} {r.url or r.endpoint or ''}".strip()))
    lines.append(
        _line(
            "provider",
            f"{r.provider} ({r.host}), {r.operation or 'other'}" + (", stream" if r.stream else ""),
        )
    )
    model = r.model or "-"
    if r.response_model and r.response_model != r.model:
        model += f" → {r.response_model}"
    lines.append(_line("model", model))
    status = r.status
    if r.http_status is not None:
        status += f", HTTP {r.http_status}"
    if r.outcome and r.outcome != "complete":
        status += f", {r.outcome.replace('_', ' ')}"
    if r.finish_reason:
        status += f", finished: {r.finish_reason}"
    lines.append(_line("status", status))
    if r.error_code or r.error_message:
        lines.append(
            _line(
                "error",
                " ".join(
                    x for x in (f"[{r.error_code}]" if r.error_code else "", r.error_message or "") if x
                ),
            )
        )
    if r.input_tokens is not None or r.output_tokens is not None:
        tokens = f"{count(r.input_tokens)} in"
        parts = [
            f"{count(v)} {name}"
            for name, v in (("cache read", r.cached_input_tokens), ("cache write", r.cache_write_tokens))
            if v
        ]
        if parts:
            tokens += f" ({', '.join(parts)})"
        tokens += f" + {count(r.output_tokens)} out"
        if r.reasoning_tokens:
            tokens += f" ({count(r.reasoning_tokens)} reasoning)"
        tokens += f" = {count(r.total_tokens)}"
        if r.tokens_estimated:
            tokens += "  (estimated locally: the provider sent no usage)"
        lines.append(_line("tokens", tokens))
    cost = "not priced" if r.cost_usd is None else money(r.cost_usd)
    if r.cost_saved_usd:
        cost += f", saved {money(r.cost_saved_usd)} by httptrack's cache"
    if r.cost_note:
        cost += f"  ({r.cost_note})"
    lines.append(_line("cost", cost))
    timing = f"{duration(r.latency_ms)}"
    if r.ttft_ms is not None:
        timing += f", first token after {duration(r.ttft_ms)}"
        generating = (r.latency_ms or 0) - r.ttft_ms
        # A rate over a few milliseconds (a buffered stream arrives all at once) says nothing.
        if r.output_tokens and generating >= MIN_RATE_MS:
            timing += f", {r.output_tokens * 1000 / generating:.0f} tokens/s"
    lines.append(_line("latency", timing))
    lines.append(
        _line(
            "cache",
            "hit (served by httptrack, not sent)" if r.cached else ("miss" if r.cache_key else "not used"),
        )
    )
    who = [f"{k} {v}" for k, v in (("user", r.user), ("service", r.service), ("session", r.session)) if v]
    who += [f"{k}={v}" for k, v in (r.properties or {}).items()]
    lines.append(_line("attribution", ", ".join(who) or "-"))
    ids = [f"{k} {v}" for k, v in (("request", r.request_id), ("response", r.response_id)) if v]
    if ids:
        lines.append(_line("ids", ", ".join(ids)))
    sizes = f"{count(r.request_bytes)} bytes sent, {count(r.response_bytes)} received"
    if r.body_truncated:
        sizes += " (bodies cut at the size cap)"
    lines.append(_line("size", sizes))
    if r.parse_notes:
        lines.append(_line("notes", r.parse_notes))
    return "\n".join(lines)


def pretty_body(text: str | None) -> str:
    """A body for reading: JSON indented; anything else (streams, text) as it is."""
    if not text:
        return "(none)"
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        try:
            return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except (ValueError, RecursionError):  # not JSON, or nested too deeply to indent
            pass
    return text.rstrip("\n")


def bodies(r: CallRecord) -> str:
    parts = [_rule("Request"), pretty_body(r.request_body)]
    if r.response_text:
        parts += [_rule("Generated text"), r.response_text]
    title = "Response" + (" (as streamed)" if r.stream else "")
    parts += [_rule(title), pretty_body(r.response_body)]
    return "\n".join(parts)
