"""``CallRecord``: one row of the ``calls`` table as a typed object, for reading the log
from Python (``httptrack.open_log(...).calls()``). Its fields are the table's columns
(``_schema.COLUMNS``, checked by a test), so the two cannot drift apart."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from .._usage import Usage

__all__ = ["CallRecord"]


class CallRecord(BaseModel):
    """One recorded call. Token figures follow the normalized convention: ``input_tokens``
    includes cache reads and writes, ``output_tokens`` includes reasoning."""

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    id: str
    started_at: datetime
    provider: str
    host: str | None = None
    method: str | None = None
    endpoint: str | None = None
    url: str | None = None
    operation: str | None = None
    model: str | None = None
    response_model: str | None = None
    stream: bool = False
    status: str = "success"
    outcome: str | None = None
    http_status: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    tokens_estimated: bool = False
    cost_usd: float | None = None
    cost_saved_usd: float | None = None
    cost_note: str | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    cached: bool = False
    cache_key: str | None = None
    user: str | None = None
    service: str | None = None
    session: str | None = None
    properties: dict[str, str] | None = None
    request_id: str | None = None
    response_id: str | None = None
    finish_reason: str | None = None
    request_headers: dict[str, str] | None = None
    request_body: str | None = None
    request_bytes: int | None = None
    response_headers: dict[str, str] | None = None
    response_body: str | None = None
    response_bytes: int | None = None
    response_text: str | None = None
    body_truncated: bool = False
    parse_notes: str | None = None
    pid: int | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> CallRecord:
        """Build from a ``calls`` row as SQLite returns it (JSON columns as text)."""
        data = dict(row)
        for key in ("properties", "request_headers", "response_headers"):
            if isinstance(data.get(key), str):
                try:
                    data[key] = json.loads(data[key])
                except (ValueError, RecursionError):
                    data[key] = None
        for key in ("stream", "tokens_estimated", "cached", "body_truncated"):
            if data.get(key) is None:
                data.pop(key, None)
        return cls.model_validate(data)

    @property
    def usage(self) -> Usage:
        return Usage(
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cached_input_tokens=self.cached_input_tokens,
            cache_write_tokens=self.cache_write_tokens,
            reasoning_tokens=self.reasoning_tokens,
            estimated=self.tokens_estimated,
        )

    def request_json(self) -> Any:
        """The request body decoded from JSON (``None`` if absent or not JSON)."""
        return _loads(self.request_body)

    def response_json(self) -> Any:
        """The response body decoded from JSON (``None`` for streams and non-JSON bodies)."""
        return _loads(self.response_body)


def _loads(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested too deeply to decode
        return None
