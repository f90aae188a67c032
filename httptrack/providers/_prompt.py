"""Counting a request's prompt, for the estimate made when a provider reports no usage.

Each family says how its requests are shaped (:meth:`Provider.count_prompt`); the tally adds
up the tokens of what it is shown, with the encoding the writer picked for the model
(``_tokens``), and skips whatever it cannot read. An image counts :data:`IMAGE_TOKENS`,
audio and files nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["IMAGE_TOKENS", "MAX_DEPTH", "PartReader", "PromptTally", "dumps"]

#: Tokens counted for one image part: OpenAI's documented cost of a low-detail image on
#: gpt-4o, a floor for what an image really costs on most models.
IMAGE_TOKENS = 85

#: How deep content nests (parts inside tool results inside parts ...) before the rest is
#: skipped.
MAX_DEPTH = 12


def dumps(value: Any) -> str | None:
    """``value`` as compact JSON text (a string as it is), or ``None`` when it has none."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    except (TypeError, ValueError, RecursionError):
        return None


class PromptTally:
    """Adds up the tokens of whatever it is shown, skipping what it cannot read.

    ``count`` gives the tokens of a text; ``encoding`` names the encoding it counts with
    (some formulas have constants measured per encoding). ``found`` says whether anything
    countable was seen at all: a body with nothing countable has no estimate (``None``),
    not an estimate of 0.
    """

    __slots__ = ("count", "encoding", "found", "total")

    def __init__(self, count: Callable[[str], int], encoding: str) -> None:
        self.count = count
        self.encoding = encoding
        self.total = 0
        self.found = False

    def text(self, value: Any) -> None:
        if isinstance(value, str):
            self.found = True
            if value:
                self.total += self.count(value)

    def json(self, value: Any) -> None:
        """A structured value (tool arguments, a schema) as its compact JSON text."""
        if value is not None:
            self.text(dumps(value))

    def ids(self, value: Any) -> bool:
        """A list of token ids counts its length; True when ``value`` was one."""
        if isinstance(value, list) and value and all(type(i) is int for i in value):
            self.found = True
            self.total += len(value)
            return True
        return False

    def prompt(self, value: Any) -> None:
        """A completions/embeddings ``prompt`` or ``input``: str, [str], [id], [[id]]."""
        if isinstance(value, str):
            self.text(value)
        elif isinstance(value, list) and not self.ids(value):
            for item in value:
                if isinstance(item, str):
                    self.text(item)
                else:
                    self.ids(item)

    def images(self, count: int = 1) -> None:
        """``count`` images, at :data:`IMAGE_TOKENS` each."""
        self.found = True
        self.total += IMAGE_TOKENS * count

    def content(self, value: Any, part: PartReader, depth: int = 0) -> None:
        """Message content: a string, a list of parts, or one part, each part read by the
        family's ``part`` reader (which may call back here for nested content)."""
        if depth > MAX_DEPTH:
            return
        if isinstance(value, str):
            self.text(value)
        elif isinstance(value, list):
            for item in value:
                self.content(item, part, depth + 1)
        elif isinstance(value, dict):
            part(self, value, depth)


#: How a family reads one content part: ``(tally, part, depth)``.
PartReader = Callable[[PromptTally, dict[str, Any], int], None]
