"""Byte-pair encoding as tiktoken does it, in Python, in steps that never hold the GIL long.

tiktoken's ``Encoding`` hands its 100,000-200,000 ranks to a Rust constructor that copies
them and builds its tables with the GIL held: 100-200 ms during which no other thread of
the app runs (an asyncio app's event loop stops). httptrack only needs token *counts* for
its estimates, so it encodes with the same ranks and the same split pattern by the same
algorithm here instead, and gets the same token ids (``tests/record/test_bounded.py`` compares
them with tiktoken's over a corpus):

1. the text is split into *pieces* by the encoding's regular expression (the ``regex``
   module, which tiktoken's own pure-Python reference uses too), a segment at a time, with
   the GIL released while it matches (a character assigned in a Unicode version newer than
   tiktoken's Rust tables may be a letter here and not there: pieces of it may differ);
2. a piece that is a token (most words) is one dictionary lookup;
3. any other piece is merged byte pair by byte pair, lowest rank first (leftmost on a tie),
   exactly as tiktoken's ``_byte_pair_merge``; pieces seen before are remembered.

Two bounds keep every step short, whatever the text: a text is matched in segments of
:data:`_SEGMENT` characters, each next one starting where the last pieces that its end
cannot have changed end (so the pieces are those of the whole text); and a piece
longer than :data:`_LONG_PIECE` bytes (a run of letters with no break: an adversarial or
degenerate text, merging is quadratic in it) is merged in windows of that size, which counts
within a few tokens of the exact figure.

The cost: counting is 2-3 times slower than tiktoken's Rust on English and code, faster on
CJK text (whole pieces are remembered). It runs in the writer thread, only for calls whose
provider reported no usage.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise
from typing import Any

__all__ = ["BytePairEncoding"]

#: Characters matched at a time (the GIL is released while the regular expression matches,
#: and taken again to build each segment's pieces).
_SEGMENT = 64 * 1024
#: Pieces longer than this (bytes) are merged in windows of this size.
_LONG_PIECE = 512
#: Merged pieces remembered, per encoding, before the memory is cleared.
_MEMO_SIZE = 16384
_NO_RANK = 1 << 62

#: How far past a piece's end the patterns look (``'ll`` after a word, ``(?!\S)``, ``$``):
#: a piece that ends this close to the end of a segment may differ from the text's own.
_LOOKAHEAD = 4
#: A segment with no whole piece in it grows, up to this many times the segment's size.
_GROWTH = 16


def _split(findall: Any, text: str, size: int) -> Iterator[list[str]]:
    """The pieces of ``text``, found about ``size`` characters at a time: each segment's
    pieces but the last few, which its end may have cut (or decided otherwise), and the
    next segment starts where they did. A segment holding no whole piece is tried twice as
    long, up to :data:`_GROWTH` times; past that a piece is cut (no piece of real text is
    a megabyte long)."""
    pos, length = 0, len(text)
    while pos < length:
        window = size
        while True:
            end = pos + window
            if end >= length:
                yield findall(text, pos, concurrent=True)
                return
            found = findall(text, pos, end, concurrent=True)
            keep, taken = len(found), window  # the pieces cover every character
            while keep and taken > window - _LOOKAHEAD:
                keep -= 1
                taken -= len(found[keep])
            if keep or window >= _GROWTH * size:
                break
            window *= 2
        if not keep:
            keep, taken = len(found), window
        yield found[:keep]
        pos += taken


class BytePairEncoding:
    """One encoding (``o200k_base``, ``cl100k_base``): its ranks and split pattern, with
    ``encode`` and ``count``. Special-token strings count as plain text."""

    def __init__(
        self, name: str, pat_str: str, ranks: dict[bytes, int], special_tokens: dict[str, int]
    ) -> None:
        import regex  # type: ignore[import-untyped]

        self.name = name
        self.pat_str = pat_str
        self.special_tokens = special_tokens
        self.n_vocab = max([max(ranks.values()), *special_tokens.values()]) + 1
        self._ranks = ranks
        self._findall = regex.compile(pat_str).findall
        self._merged: dict[bytes, tuple[int, ...]] = {}

    def encode(self, text: str, *, disallowed_special: Any = ()) -> list[int]:
        """The token ids of ``text``, as tiktoken's ``encode(text, disallowed_special=())``."""
        ids: list[int] = []
        for pieces in self._pieces(text):
            ranks = self._ranks
            for piece in pieces:
                rank = ranks.get(piece)
                if rank is not None:
                    ids.append(rank)
                else:
                    ids += self._merge(piece)
        return ids

    def count(self, text: str) -> int:
        """``len(self.encode(text))``, without the list."""
        total = 0
        for pieces in self._pieces(text):
            ranks = self._ranks
            total += len(pieces)
            for piece in pieces:
                if piece not in ranks:
                    total += len(self._merge(piece)) - 1
        return total

    def _pieces(self, text: str) -> Iterator[list[bytes]]:
        """The pieces of ``text`` as UTF-8, a segment at a time."""
        for found in _split(self._findall, text, _SEGMENT):
            try:
                yield [piece.encode("utf-8") for piece in found]
            except UnicodeEncodeError:
                # A lone surrogate: tiktoken encodes the text with it replaced (U+FFFD).
                yield [
                    piece.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode()
                    for piece in found
                ]

    def _merge(self, piece: bytes) -> tuple[int, ...]:
        ids = self._merged.get(piece)
        if ids is None:
            if len(piece) <= _LONG_PIECE:
                ids = tuple(self._byte_pair_merge(piece))
            else:
                ids = ()
                for start in range(0, len(piece), _LONG_PIECE):
                    ids += self._merge(piece[start : start + _LONG_PIECE])
            if len(self._merged) >= _MEMO_SIZE:
                self._merged.clear()
            self._merged[piece] = ids
        return ids

    def _byte_pair_merge(self, piece: bytes) -> list[int]:
        """tiktoken's ``_byte_pair_merge``: join the adjacent parts whose joined bytes rank
        lowest (the leftmost of equals), until no adjacent pair is a token."""
        ranks = self._ranks
        get = ranks.get
        bounds = list(range(len(piece) + 1))
        pairs = [get(piece[i : i + 2], _NO_RANK) for i in range(len(piece) - 1)]
        while pairs:
            best = min(pairs)
            if best == _NO_RANK:
                break
            i = pairs.index(best)
            del bounds[i + 1]
            del pairs[i]
            if i:
                pairs[i - 1] = get(piece[bounds[i - 1] : bounds[i + 1]], _NO_RANK)
            if i < len(pairs):
                pairs[i] = get(piece[bounds[i] : bounds[i + 2]], _NO_RANK)
        return [ranks[piece[start:end]] for start, end in pairwise(bounds)]
