"""The words httptrack writes into its rows and reads from its settings, each as a
``Literal`` type (so mypy rejects a typo) and a tuple of its values (for checks at run time).

Literals rather than enums on purpose: the values are what the database, the environment
variables and the CLI hold (``operation = 'chat'``), so a plain string is the value itself,
with nothing to convert on the way in or out. Importing this module imports only ``typing``.
"""

from __future__ import annotations

from typing import Literal, TypeGuard, get_args

__all__ = [
    "CACHE_MODES",
    "OPERATIONS",
    "OUTCOMES",
    "STATUSES",
    "CacheMode",
    "Operation",
    "Outcome",
    "Status",
    "is_cache_mode",
    "is_operation",
]

#: What a call was for (the ``operation`` column); a provider's ``operation()`` says which.
Operation = Literal["chat", "completion", "embeddings", "models", "other"]

#: How a call ended (the ``outcome`` column): ``complete``; ``cut_short`` (the app closed the
#: stream early); ``failed`` (the stream raised); ``transport_error`` (no response at all);
#: ``cache_miss`` (replay mode had no answer, nothing was sent).
Outcome = Literal["complete", "cut_short", "failed", "transport_error", "cache_miss"]

#: The ``status`` column: whether the call did what it was asked.
Status = Literal["success", "error"]

#: The response cache's modes: ``on`` read and write; ``off`` neither; ``refresh`` always
#: call, then store; ``replay`` serve only from the cache (a miss is an error, nothing sent).
CacheMode = Literal["on", "off", "refresh", "replay"]

OPERATIONS: tuple[Operation, ...] = get_args(Operation)
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
STATUSES: tuple[Status, ...] = get_args(Status)
CACHE_MODES: tuple[CacheMode, ...] = get_args(CacheMode)


def is_operation(value: str) -> TypeGuard[Operation]:
    return value in OPERATIONS


def is_cache_mode(value: str) -> TypeGuard[CacheMode]:
    return value in CACHE_MODES
