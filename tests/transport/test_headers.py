"""The tracker reads a request's headers and adds its own to a response through httpx's and
httpx2's (name, lower-case name, value) triples when a ``Headers`` class is seen to keep
them, else through the public API; either way with the same result."""

from __future__ import annotations

from typing import Any

import httpx
import httpx2
import pytest

from httptrack import _tracker
from httptrack._tracker import raw_headers, set_header


class PublicOnly:
    """A headers class with the public API only (no ``_list``)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = [(k.encode(), v.encode()) for k, v in pairs]

    @property
    def raw(self) -> list[tuple[bytes, bytes]]:
        return list(self.pairs)

    def __setitem__(self, name: str, value: str) -> None:
        self.pairs = [p for p in self.pairs if p[0].lower() != name.lower().encode()]
        self.pairs.append((name.encode(), value.encode()))


class Reordered(PublicOnly):
    """A class with a ``_list`` of triples in another order: not taken for httpx's."""

    @property
    def _list(self) -> list[tuple[bytes, bytes, bytes]]:
        return [(value, name, name.lower()) for name, value in self.pairs]

    def get(self, name: str) -> str | None:
        found = [v for k, v in self.pairs if k.lower() == name.lower().encode()]
        return found[-1].decode() if found else None


@pytest.mark.parametrize("library", [httpx, httpx2], ids=["httpx", "httpx2"])
def test_httpx_headers_are_read_and_set_through_their_triples(library: Any) -> None:
    headers = library.Headers([("Content-Type", "application/json"), ("X-Twice", "1"), ("x-twice", "2")])
    assert raw_headers(headers) == headers.raw
    assert raw_headers(headers) is not raw_headers(headers)  # a new list each time
    assert _tracker._triples[library.Headers] is True
    set_header(headers, b"X-Httptrack-Call-Id", "01ABC")
    assert headers["x-httptrack-call-id"] == "01ABC"
    assert headers.raw[-1] == (b"X-Httptrack-Call-Id", b"01ABC")
    set_header(headers, b"X-Twice", "3")  # replaces every header of that name, as headers[...] = does
    assert headers.get_list("x-twice") == ["3"]


@pytest.mark.parametrize("kind", [PublicOnly, Reordered])
def test_other_headers_classes_go_through_their_public_api(kind: type) -> None:
    headers = kind([("Content-Type", "application/json")])
    assert raw_headers(headers) == [(b"Content-Type", b"application/json")]
    assert _tracker._triples[kind] is False
    set_header(headers, b"X-Httptrack-Call-Id", "01ABC")
    assert headers.raw[-1] == (b"X-Httptrack-Call-Id", b"01ABC")
