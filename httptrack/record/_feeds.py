"""Process mode's side in the app's process (``HTTPTRACK_WRITER=process``): the feeds.

A call whose row the writer process (``_daemon``) can build is appended to this process's
feed for its log (``_spool.Feed``) and is done with: no queue, no writer thread, no wake,
no system call. Calls that need what only this process has (a ``redact`` hook, limits,
OpenTelemetry spans, a response to store in the cache, ...) take the writer thread
(``_writer``), as do all of a log's calls once its writer process cannot be started or
keeps dying (reported once). ``flush()`` waits until the writer process has written every
call fed so far, waking it, and starting it again if it is gone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .._faults import report_fault
from ._spool import Feed

if TYPE_CHECKING:
    from types import ModuleType

    from .._exchange import Exchange
    from .._settings import Settings
    from ..log._url import LogTarget

__all__ = ["DAEMON_RESTARTS", "DAEMON_RESTART_WINDOW", "Feeds"]

#: Process mode: a writer process started this many times within DAEMON_RESTART_WINDOW
#: seconds (it keeps dying) is given up on: the app's writer thread writes its calls.
DAEMON_RESTARTS = 5
DAEMON_RESTART_WINDOW = 60.0

_daemon_module: ModuleType | None = None


def _daemon() -> ModuleType:
    """``record._daemon`` (the writer process's module), imported with the first
    process-mode call."""
    global _daemon_module
    if _daemon_module is None:
        from . import _daemon as module

        _daemon_module = module
    return _daemon_module


#: ``time.sleep`` as it was when this module loaded (see ``_writer._sleep``).
_sleep = time.sleep


class Feeds:
    """This process's feeds, one per log (``None``: none, its calls take the writer
    thread), and its writer processes. ``given_up(db)`` is called when a log's writer
    process cannot run: the writer thread then writes what its feed held."""

    def __init__(self, lock: threading.Lock, given_up: Callable[[LogTarget], None]) -> None:
        self._lock = lock
        self._given_up = given_up
        self.by_log: dict[LogTarget, Feed | None] = {}
        #: The feed the last call went to (the one log of nearly every app: no hashing).
        self.last: Feed | None = None
        #: Whether a Settings object's calls may go to the writer process (by its id).
        self._feedable: dict[int, tuple[Settings, bool]] = {}
        #: Calls fed so far; when writer processes were started for each log.
        self.fed = 0
        self._started: dict[LogTarget, list[float]] = {}

    def feed(self, exchange: Exchange) -> bool:
        """Process mode: append the call to this process's feed for its log, for the writer
        process (``_daemon``); ``False`` if it must take the writer thread instead: what
        only this process has (a ``redact`` hook, limits, OpenTelemetry spans, a response
        to store in the cache, ...), or no feed (a file system not mapped, no writer
        process). No system call."""
        settings = exchange.settings
        known = self._feedable.get(id(settings))
        if known is None or known[0] is not settings:
            fits = settings.redact is None and not settings.limits and not settings.otel
            if len(self._feedable) > 64:
                self._feedable.clear()
            known = self._feedable[id(settings)] = (settings, fits)
        if not known[1]:
            return False
        if (
            exchange.limit_ticket is not None
            or exchange.cache_flight is not None
            or exchange.cache_note is not None
            or exchange.request_parts is not None
            or (exchange.cache_ttl is not None and exchange.cache_key is not None and not exchange.cached)
        ):
            return False
        db = settings.db
        feed = self.last
        if feed is None or feed.db is not db or not feed.live:
            feed = self.by_log[db] if db in self.by_log else self.open(db)
            if feed is None:
                return False
            self.last = feed
        if feed.append(exchange) < 0:
            return False  # (a credential the writer process could not take out, a full disk)
        self.fed += 1
        if not self.fed & 4095 and not self.keep_daemon(db, feed):  # now and then: still there?
            self.give_up(db, feed)
        return True

    def open(self, db: LogTarget) -> Feed | None:
        """This process's feed for ``db``, made on its first process-mode call (once), and
        the writer process started if none runs."""
        with self._lock:
            if db in self.by_log:
                return self.by_log[db]
            feed: Feed | None = None
            try:
                feed = Feed.open(db)
            except OSError as exc:
                report_fault("spool", f"no spool beside {db} ({exc}): calls take the writer thread", exc)
            if feed is not None and not self.keep_daemon(db, feed):
                feed.discard()
                feed = None
            self.by_log[db] = feed
        return feed

    def keep_daemon(self, db: LogTarget, feed: Feed) -> bool:
        """Start the writer process for ``db`` if none runs; ``False`` (reported once) if it
        cannot be, or keeps dying: this process then writes its calls itself."""
        if _daemon().running(feed.folder):
            return True
        now = time.monotonic()
        started = [at for at in self._started.get(db, []) if now - at < DAEMON_RESTART_WINDOW]
        if len(started) >= DAEMON_RESTARTS:
            why: BaseException | str = f"it was started {len(started)} times in {DAEMON_RESTART_WINDOW:.0f} s"
        else:
            try:
                _daemon().start(db)
            except Exception as exc:
                why = exc
            else:
                self._started[db] = [*started, now]
                return True
        report_fault(
            "writer",
            f"no writer process for {db} ({why}); this process's writer thread writes its calls",
            why if isinstance(why, BaseException) else None,
        )
        return False

    def give_up(self, db: LogTarget, feed: Feed) -> None:
        """The writer process cannot run: this process's calls take the writer thread from
        now on, and what its feed holds is written by it (as a spool of a process gone)."""
        with self._lock:
            self.by_log[db] = None
            if self.last is feed:
                self.last = None
        feed.close()  # unlocked: recovered by the writer thread (below), or by the next process
        self._given_up(db)

    def flush(self, timeout: float | None) -> tuple[str | None, bool]:
        """Process mode: wait until the writer process has written every call this process
        fed it (waking it, and starting it again if it is gone). (Why not, timed out)."""
        feeds = [(db, feed) for db, feed in list(self.by_log.items()) if feed is not None and feed.live]
        if not feeds or all(feed.written() for _, feed in feeds):
            return None, False
        daemon = _daemon()
        since = time.time()
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.001
        checked = 0.0
        while True:
            waiting = [(db, feed) for db, feed in feeds if not feed.written()]
            if not waiting:
                return None, False
            now = time.monotonic()
            if now - checked >= 0.25:  # (system calls: not every turn)
                checked = now
                for db, feed in waiting:
                    if not self.keep_daemon(db, feed):
                        self.give_up(db, feed)
                        feeds.remove((db, feed))
                        continue
                    daemon.wake(feed.folder)
                    reason = daemon.status(feed.folder, since)
                    if reason is not None:
                        return reason, False
                if not any(feed.live for _, feed in feeds):
                    return None, False
            if deadline is not None and now >= deadline:
                return f"the writer process did not write them within {timeout} s", True
            _sleep(pause if deadline is None else max(0.0, min(pause, deadline - now)))
            pause = min(pause * 2, 0.02)

    def close(self) -> None:
        """At exit: nothing to wait for (the writer process writes what the feeds hold, or
        the next process that opens the log does); delete what is written, wake it."""
        for db, feed in list(self.by_log.items()):
            if feed is not None:
                written = feed.close()
                if not written:
                    _daemon().wake(feed.folder)
            del self.by_log[db]
        self.last = None

    def discard(self) -> None:
        """Delete the feeds' files, whatever they hold (tests)."""
        for feed in self.by_log.values():
            if feed is not None:
                feed.discard()
        self.by_log.clear()
        self.last = None

    def forget(self) -> None:
        """In a forked child: the feeds' files are the parent's."""
        for feed in self.by_log.values():
            if feed is not None:
                feed.forget()
