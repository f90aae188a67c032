"""Call ids and the capture of response bodies (cap and tail)."""

from __future__ import annotations

from helpers import make_exchange

from httptrack import _exchange
from httptrack._exchange import TAIL_BYTES, new_call_id

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def reference_ulid(value: int) -> str:
    digits = []
    for _ in range(26):
        digits.append(CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(digits))


def test_ids_are_ulids_that_sort_by_time_and_by_order_within_a_millisecond() -> None:
    for moment in (0.0, 1.5, 1735689600.123, 2**47 / 1000 - 1):
        _exchange._last_id[:] = [0, 0]
        first = new_call_id(moment)
        ms, rand = _exchange._last_id
        assert first == reference_ulid((ms << 80) | rand)
        assert ms == int(moment * 1000)
        second = new_call_id(moment)  # same millisecond: counts up
        assert second > first and second == reference_ulid((ms << 80) | (rand + 1))
    later = new_call_id(2**47 / 1000)
    assert later > second and len(later) == 26 and set(later) <= set(CROCKFORD)
    _exchange._last_id[:] = [0, 0]


def test_ids_sort_in_creation_order() -> None:
    ids = [new_call_id() for _ in range(5000)]
    assert ids == sorted(ids) and len(set(ids)) == 5000


def _exchange_with_limit(limit: int) -> _exchange.Exchange:
    from httptrack._settings import Settings

    return make_exchange(settings=Settings(max_body_bytes=limit), request_headers=[], request_body=b"")


def test_body_is_kept_whole_up_to_the_cap_then_only_its_tail() -> None:
    ex = _exchange_with_limit(TAIL_BYTES)  # the limit is never below the tail window
    chunk = bytes(range(256)) * 256  # 64 KiB
    for _ in range(40):  # 2.5 MiB in all
        ex.add_chunk(chunk)
    assert ex.received == 40 * len(chunk)
    assert b"".join(ex.chunks) == (chunk * 16)[:TAIL_BYTES]
    assert ex.truncated
    tail = b"".join(ex.tail or [])
    assert TAIL_BYTES <= len(tail) < TAIL_BYTES + len(chunk)
    assert (chunk * 40).endswith(tail)
    ex.add_chunk(b"")  # empty chunks change nothing
    assert ex.received == 40 * len(chunk)
