"""Call ids: ULIDs (48-bit milliseconds + 80 random bits, Crockford base32) that sort by time."""

from __future__ import annotations

import random

from httptrack._exchange import new_call_id

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def decode(call_id: str) -> int:
    value = 0
    for char in call_id:
        value = value * 32 + CROCKFORD.index(char)
    return value


def test_ids_carry_their_millisecond_and_sort_in_the_order_made() -> None:
    ms = 1_800_000_000_123
    ids = [new_call_id((ms + 0.5) / 1000) for _ in range(1000)]
    ids += [new_call_id((ms + n + 0.5) / 1000) for n in range(1, 200)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for call_id in ids:
        assert len(call_id) == 26 and set(call_id) <= set(CROCKFORD)
        assert decode(call_id) >> 128 == 0  # 130 bits of text, the top two always zero
    assert decode(ids[0]) >> 80 == ms
    assert decode(ids[-1]) >> 80 == ms + 199
    # Within one millisecond the random part counts up by one.
    assert decode(ids[1]) - decode(ids[0]) == 1


def test_a_seeded_random_module_does_not_fix_the_random_part() -> None:
    random.seed(0)
    first = new_call_id(1_900_000_000.0)
    random.seed(0)
    second = new_call_id(1_900_000_001.0)
    assert first[10:] != second[10:]
