"""GraphQL calls on a host mapped in as ``generic`` (an internal gateway, say).

A ``POST .../graphql`` with ``{"operationName": ..., "query": ...}`` (or a ``GET`` with
those as query parameters, or a batch: a JSON array of them) is recorded as operation
``other`` with ``model`` left NULL, and the operation's name appended to the ``endpoint``
column: ``/graphql#GetUser`` (``#mutation`` / ``#query`` when the operation is anonymous;
names joined with ``,`` for a batch). The fragment never reaches a server, so the endpoint
stays unambiguous, and grouping calls by endpoint groups them by operation.

A reply with ``errors`` and no ``data`` is an error whatever its HTTP status; errors beside
data (a partial success) keep the call a success with the first error's message noted.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from ._base import Parsed, Provider, add_shape, dig, first_str

__all__ = ["GraphQL", "operation_name"]

# `query Name`, `mutation Name(...)`, `subscription Name {` after optional comments/whitespace.
_NAMED = re.compile(r"^\s*(?:#[^\n]*\n\s*)*(query|mutation|subscription)\s+([_A-Za-z][_0-9A-Za-z]*)")
_KIND = re.compile(r"^\s*(?:#[^\n]*\n\s*)*(query|mutation|subscription)\b")


def operation_name(request: Any) -> str | None:
    """The operation a GraphQL request names, or its kind when it is anonymous."""
    if not isinstance(request, dict):
        return None
    name = first_str(request.get("operationName"))
    if name:
        return name
    query = request.get("query")
    if not isinstance(query, str):
        return None
    match = _NAMED.match(query)
    if match:
        return match.group(2)
    match = _KIND.match(query)
    return match.group(1) if match else "query"  # `{ field }` is shorthand for a query


class GraphQL(Provider):
    name = "generic"

    def read_request(self, parsed: Parsed, method: str, path: str, query: str, body: Any) -> None:
        parsed.billed = False
        if body is None and query:
            body = dict(parse_qsl(query))
        requests = body if isinstance(body, list) else [body]
        names = [name for name in (operation_name(r) for r in requests) if name]
        if names:
            parsed.endpoint_detail = ",".join(names)

    def read_body(self, parsed: Parsed, status: int, body: Any) -> None:
        replies = body if isinstance(body, list) else [body]
        for reply in replies:
            if not isinstance(reply, dict):
                continue
            errors = reply.get("errors")
            if isinstance(errors, list) and errors:
                message = first_str(dig(errors, 0, "message"))
                code = first_str(dig(errors, 0, "extensions", "code")) or "graphql_error"
                if reply.get("data") is None:
                    parsed.stream_error = True
                    parsed.fail(code, message)
                else:
                    parsed.notes.append(f"graphql partial success: {message or code}")


#: The reader of GraphQL calls on OpenAI-compatible (generic) hosts.
add_shape("graphql", GraphQL())
