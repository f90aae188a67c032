"""The per-process background writer.

The app's thread appends a finished exchange to this process's spool (``_spool``: a few
microseconds, so the call survives the process from then on) and to a queue (``submit``).
One daemon thread per process turns exchanges into rows (parse, price — see ``_row``) and
writes them in batches through the call log's backend (``log/``: it knows no SQL here), one
transaction per batch, then releases them from the spool.

- ``flush()`` waits until everything submitted before it is written and says whether it
  was: ``False`` (and why, in the log) while rows wait for a database that cannot be
  written. The same runs at interpreter exit (``atexit``), bounded by ``EXIT_FLUSH_SECONDS``;
  what is not written by then stays in the spool for the next process that opens the log.
- A database that is locked, read-only or full is a tracking fault: rows wait (bounded by
  ``MAX_PENDING_ROWS``/``MAX_PENDING_BYTES``) and are retried with a growing back-off, in
  smaller transactions after each failure, so what fits is written as soon as it fits. A
  row the database refuses for itself is counted and logged, and the others are written.
- ``fork()`` at any moment: a fork waits while the writer imports, builds a row or is inside
  SQLite (so the child never inherits a half-imported module, or a lock held by a thread
  it does not have: SQLite's own global mutexes included); the child starts with an empty
  queue, no connections and a spool of its own, and its writer starts with its first call.
"""

from __future__ import annotations

import atexit
import operator
import os
import sys
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, NamedTuple

from .._errors import LogUnavailable
from .._exchange import Exchange, RecordSink
from .._faults import FaultKind, get_logger, report_fault
from ..log._backend import LogBackend
from ..log._open import open_backend
from ..log._schema import COLUMN_NAMES
from ..log._url import LogTarget
from ._feeds import Feeds
from ._recover import recover
from ._row import build_row
from ._spool import Spool

if TYPE_CHECKING:
    from .._settings import Retention

__all__ = ["EXIT_FAILING_SECONDS", "EXIT_FLUSH_SECONDS", "Writer", "flush", "writer"]

BATCH_SIZE = 1000
#: While calls keep coming, the writer wakes on its own every BATCH_WAIT seconds (or when
#: WAKE_ROWS calls wait), so a transaction holds the calls of that span and the app's
#: thread never wakes the writer for one call (a wake hands the writer the GIL mid-call).
#: Only the first call after the writer has been idle for IDLE_AFTER seconds wakes it.
BATCH_WAIT = 0.05
WAKE_ROWS = 256
IDLE_AFTER = 0.25
#: A log whose migration left indexes to build (``log/_indexes``) gets them once the writer
#: has been idle this long (seconds), and again this much longer after each time calls
#: came meanwhile and the build gave way to them (up to INDEX_IDLE_MAX).
INDEX_IDLE = 2.0
INDEX_IDLE_MAX = 60.0
#: Back-pressure. A thread that makes calls without ever waiting (cache hits in a loop, an
#: in-memory transport) holds the GIL nearly all the time, and the writer, which gives the
#: GIL up at every SQLite call, gets it back only every switch interval (5 ms): it falls
#: behind without end, and the queue's memory grows until calls are dropped. So once
#: BACKLOG_CALLS calls wait, a new call waits for the writer to finish a transaction, at most
#: BACKLOG_WAIT seconds (the GIL released meanwhile). An app that waits for the network
#: never gets here: the writer runs while it waits.
BACKLOG_CALLS = 1000
BACKLOG_WAIT = 0.005
#: A transaction holds at most this many bytes of rows (and at least one row).
BATCH_BYTES = 8 * 1024 * 1024
#: After a failed write, the next one waits this long, doubling up to RETRY_MAX seconds.
RETRY_MIN = 0.25
RETRY_MAX = 5.0
#: The spools of processes that ended are looked for when a log is first written, and at a
#: flush at most this often (seconds).
RECOVER_EVERY = 10.0
#: The longest an interpreter's exit waits for the writer (seconds). Calls not written by
#: then are in the spool: the next process that opens the log writes them.
EXIT_FLUSH_SECONDS = 5.0
#: What exit waits instead while a log's last write failed.
EXIT_FAILING_SECONDS = 0.5
#: How long a fork() waits for the writer to finish an import, a row or a transaction, at
#: most (a transaction waits up to the busy timeout, 5 s, for a locked database).
FORK_WAIT_SECONDS = 6.0
#: The writer lets go of the GIL for a moment (YIELD_FOR seconds) now and then: Python hands
#: the GIL to a waiting thread only after the switch interval (5 ms), so an app thread that
#: needs it back (a response arrived, a call ended, its own work) would otherwise wait up to
#: that long while the writer builds rows. A release shorter than a thread's wake-up does
#: nothing (the writer takes the GIL back first), hence a short sleep, not sleep(0). How
#: often adapts: every YIELD_EVERY_MIN seconds of work while the app is running (calls came
#: in, or the sleep took long: another thread had the GIL meanwhile), backing off to
#: YIELD_EVERY_MAX while nothing else wants the GIL (then the writer runs flat out).
YIELD_FOR = 0.0001
#: ``time.sleep`` as it was when this module loaded: a test that patches ``time.sleep`` to
#: count an SDK's retry delays (openai's test_retry_limits_and_backoff) must not count the
#: writer's pauses too.
_sleep = time.sleep
YIELD_EVERY_MIN = 0.001
YIELD_EVERY_MAX = 0.05
#: Rows kept in memory per database while it cannot be written (locked, full, read-only).
MAX_PENDING_ROWS = 200_000
#: Memory bounds, whatever the number of calls: bodies of calls waiting for the writer, and
#: of rows waiting for a database that cannot be written. Past them, calls are dropped
#: (counted in ``Writer.dropped`` and ``fault_counts()["rows_dropped"]``, logged once),
#: never the app's memory.
MAX_QUEUED_BYTES = 512 * 1024 * 1024
MAX_PENDING_BYTES = 256 * 1024 * 1024
#: A row's values in column order (in C: this runs for every call).
_row_values = operator.itemgetter(*COLUMN_NAMES)


class _FlushMarker:
    __slots__ = ("done", "reason")

    def __init__(self) -> None:
        self.done = threading.Event()
        #: Why not everything was written (``None``: it was).
        self.reason: str | None = None


class _Row(NamedTuple):
    """A row waiting to be written: its values, its spool segment, its size."""

    values: tuple[Any, ...]
    segment: int
    size: int


class _Log:
    """One call log as this process's writer sees it: its backend, its spool, what waits."""

    __slots__ = (
        "backend",
        "batch",
        "error",
        "path",
        "pending",
        "pending_bytes",
        "recovered_at",
        "retry",
        "retry_at",
    )

    def __init__(self, path: LogTarget, backend: LogBackend) -> None:
        self.path = path
        self.backend = backend
        self.pending: deque[_Row] = deque()
        self.pending_bytes = 0
        #: Rows per transaction now: BATCH_SIZE, a quarter after each failure, back up after.
        self.batch = BATCH_SIZE
        self.retry = 0.0
        self.retry_at = 0.0
        #: The last write's failure, while it lasts.
        self.error: str | None = None
        self.recovered_at: float | None = None


class Writer:
    """The per-process background writer. Use the module's ``writer()``."""

    def __init__(self) -> None:
        self._reset()
        self.dropped = 0
        self.written = 0

    def _reset(self) -> None:
        self._queue: deque[Any] = deque()
        self._queued_bytes = 0
        self._bytes_lock = threading.Lock()
        #: Calls submitted so far, and the count when the writer last looked (see _pause).
        self._submitted = 0
        self._seen = 0
        self._slice_start = 0.0
        self._yield_every = YIELD_EVERY_MIN
        self._wake = threading.Event()
        #: The writer waits for a wake (nothing came for IDLE_AFTER seconds); else it wakes
        #: on its own every BATCH_WAIT seconds and calls do not wake it.
        self._idle = True
        #: Transactions written (with ``written``: rows per transaction, for benchmarks).
        self.transactions = 0
        #: Set by the writer after each transaction it commits; calls wait on it while
        #: BACKLOG_CALLS calls are queued. ``backlog_waits``: how many did (benchmarks).
        self._progress = threading.Event()
        self.backlog_waits = 0
        #: One drainer at a time (the writer thread, or a flush when there is none).
        self._lock = threading.Lock()
        #: Held by the writer thread while it imports, builds a row or is inside SQLite: fork()
        #: waits for it. Re-entrant: the writer thread itself may fork (a helper process).
        self._fork_lock = threading.RLock()
        self._fork_held = False
        #: A fork() waits for the writer (an index being built gives way at once).
        self._fork_waiting = False
        #: How long the writer waits, idle, before building indexes a migration left.
        self._index_idle = INDEX_IDLE
        self._thread: threading.Thread | None = None
        self._logs: dict[LogTarget, _Log] = {}
        #: This process's spool for each log (the app's side; ``None``: could not be made).
        self._spools: dict[LogTarget, Spool | None] = {}
        #: The spool the last call was appended to (a closed one is not used again).
        self._last_spool: Spool | None = None
        self._spool_lock = threading.Lock()
        #: This process is a multiprocessing.Pool worker (decided at its first call): see submit.
        self._worker: bool | None = None
        #: Process mode (HTTPTRACK_WRITER=process): this process's feeds (``_feeds``).
        self._feeds = Feeds(self._spool_lock, self._feed_given_up)

    # -- the app's side (cheap) -------------------------------------------------------------

    def submit(self, exchange: Exchange) -> None:
        if exchange.settings.writer == "process" and self._feeds.feed(exchange):
            return  # the writer process takes it from the feed
        queue = self._queue
        size = _held_bytes(exchange)
        if len(queue) >= exchange.settings.max_queue or (
            queue and self._queued_bytes + size > MAX_QUEUED_BYTES
        ):
            self.dropped += 1
            report_fault(
                "queue_full", f"the writer is {len(queue)} calls behind; a call was not recorded", dropped=1
            )
            return
        db = exchange.settings.db
        spool = self._last_spool  # the one log of nearly every app: no hashing of its path
        if spool is None or spool.db is not db or not spool.live:
            spools = self._spools
            spool = spools[db] if db in spools else self._open_spool(db)
            if spool is not None:
                self._last_spool = spool
        if spool is not None:
            # Before the app has the end of its response (the tee calls this before its last
            # read returns): from here on the call survives this process.
            exchange.spooled = spool.append(exchange)
        with self._bytes_lock:
            self._queued_bytes += size
            self._submitted += 1
        queue.append(exchange)
        if self._thread is None:
            self._start()
        # While calls keep coming the writer wakes on its own (see BATCH_WAIT): a call wakes
        # it only when it is idle, or when many calls wait. Safe: the writer marks itself idle
        # *before* it looks at the queue a last time, and clears the event *before* draining,
        # so a call appended before either test is drained.
        if self._idle or len(queue) >= WAKE_ROWS:
            wake = self._wake
            if not wake.is_set():  # setting an Event takes its lock and notifies
                wake.set()
        if len(queue) >= BACKLOG_CALLS:
            self._wait_for_writer()
        worker = self._worker
        if worker is None:
            worker = self._worker = _multiprocessing_child()
        if worker:
            # A multiprocessing.Pool worker is terminated by its pool (`with Pool() as pool:`
            # ends with terminate()): its spool keeps the calls, but they would wait for the
            # next process to open the log. So a pool worker's call is written before it
            # returns: a millisecond or two per call, in processes that do batch work.
            # (Other multiprocessing children flush at their end: see _multiprocessing_child.)
            self.flush(timeout=WORKER_FLUSH_SECONDS)

    def _feed_given_up(self, db: LogTarget) -> None:
        """A log's writer process cannot run: this writer thread writes its calls from now
        on, and what its feed held (recovered as a spool of a process gone)."""
        self._log(db).recovered_at = None
        if self._thread is None:
            self._start()

    def _wait_for_writer(self) -> None:
        """Let the writer catch up (see BACKLOG_CALLS): wait for its next transaction, at
        most BACKLOG_WAIT seconds. Not in the writer thread itself, nor without one."""
        thread = self._thread
        if thread is None or thread.ident == threading.get_ident() or not thread.is_alive():
            return
        self.backlog_waits += 1
        progress = self._progress
        progress.clear()
        progress.wait(BACKLOG_WAIT)

    def _open_spool(self, db: LogTarget) -> Spool | None:
        """This process's spool for ``db``, made on its first call (once)."""
        with self._spool_lock:
            if db in self._spools:
                return self._spools[db]
            spool: Spool | None = None
            try:
                spool = Spool(db)
            except OSError as exc:
                report_fault(
                    "spool",
                    f"no spool beside {db} ({exc}): calls are recorded, but those not yet "
                    "written when the process dies are lost",
                    exc,
                )
            self._spools[db] = spool
        return spool

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="httptrack-writer", daemon=True)
                self._thread = thread
                thread.start()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far is written. ``False`` if it was not (the
        database could not be written, or ``timeout`` passed): the reason is logged, and the
        calls wait, in memory and in the spool, to be written later."""
        thread = self._thread
        timed_out = False
        reason: str | None = None
        if self._feeds.by_log:  # process mode: the writer process writes the feeds
            started = time.monotonic()
            reason, timed_out = self._feeds.flush(timeout)
            if timeout is not None:
                timeout = max(0.0, timeout - (time.monotonic() - started))
            thread = self._thread  # (started if the writer process could not be)
        if reason is not None:
            pass
        elif thread is None or not thread.is_alive():
            self._drain()  # no writer running (never started, or interpreter shutting down)
            reason = self._unwritten_reason()
        else:
            marker = _FlushMarker()
            self._queue.append(marker)
            self._wake.set()
            if marker.done.wait(timeout):
                reason = marker.reason
            else:
                reason = f"the writer did not finish within {timeout} s"
                timed_out = True
        if reason is None:
            return True
        message = (
            f"flush: {self.unwritten()} calls not written yet: {reason}. They are kept (in memory and "
            "in the spool) and written as soon as the log can be"
        )
        if timed_out:  # nothing else has said so
            report_fault("flush_timeout", message)
        else:  # the database's fault was logged when it happened
            get_logger().debug("httptrack: %s", message)
        return False

    def failing(self) -> bool:
        """The last write to some log failed (it is locked, full, unwritable)."""
        return any(log.error is not None for log in list(self._logs.values()))

    def logged(self, db: LogTarget) -> bool:
        """Whether every row handed to the log ``db`` so far is in it (none waits): asked by
        the response cache in ``after_record``, to store an answer by reference to its row."""
        log = self._logs.get(db)
        return log is not None and not log.pending and log.error is None

    def unwritten(self) -> int:
        """Calls submitted and not yet in their log (queued or waiting for a database)."""
        queued = sum(1 for item in list(self._queue) if not isinstance(item, _FlushMarker))
        return queued + sum(len(log.pending) for log in list(self._logs.values()))

    def _unwritten_reason(self) -> str | None:
        for log in list(self._logs.values()):
            if log.pending:
                return log.error or f"{len(log.pending)} calls wait for {log.path}"
        if any(not isinstance(item, _FlushMarker) for item in list(self._queue)):
            return "calls are still queued"
        return None

    # -- the writer thread ------------------------------------------------------------------

    def _run(self) -> None:
        with self._fork_lock:
            _warm_up()
        wake = self._wake
        quiet_since: float | None = None
        while True:
            if not self._idle:
                wake.wait(timeout=BATCH_WAIT)
            elif not self._queue:  # (calls left by the last turn are not waited for)
                waiting = any(log.pending or log.backend.behind for log in self._logs.values())
                building = not waiting and self._indexes_pending()
                woken = wake.wait(timeout=1.0 if waiting else self._index_idle if building else None)
                if building and not woken and not self._queue:
                    self._build_indexes()
            wake.clear()
            if self._queue:
                quiet_since = None
                self._idle = False
            elif not self._idle:
                now = time.monotonic()
                if quiet_since is None:
                    quiet_since = now
                elif now - quiet_since >= IDLE_AFTER:
                    # Nothing came for a while: from here on, a call wakes the writer. One
                    # appended before it saw this is in the queue: the drain below takes it.
                    self._idle = True
                    quiet_since = None
            # Woken by calls: the app is running. Yield often until that proves unneeded.
            self._yield_every = YIELD_EVERY_MIN
            self._slice_start = time.perf_counter()
            try:
                self._drain(whole=False)
            except Exception as exc:  # pragma: no cover - a bug in httptrack: keep running
                report_fault("writer", "the writer hit an unexpected error", exc)

    def _indexes_pending(self) -> bool:
        return any(log.backend.indexes_pending for log in self._logs.values())

    def _build_indexes(self) -> None:
        """Build what migrations left for an idle writer (``log/_indexes``): interrupted as
        soon as calls (or a flush, or a fork) have waited ``YIELD_SECONDS`` for it."""
        from ..log._indexes import yield_to

        queue = self._queue
        stop = yield_to(lambda: bool(queue) or self._fork_waiting)
        for log in list(self._logs.values()):
            backend = log.backend  # (the SQLite log's: see log/_sqlite.Store.build_indexes)
            if not backend.indexes_pending:
                continue
            try:
                with self._lock, self._fork_lock:
                    done = backend.build_indexes(stop)
            except LogUnavailable as exc:  # locked by another process: later
                report_fault("database", str(exc), exc.__cause__)
                done = False
            # Gave way to calls: wait for a longer quiet stretch next time.
            self._index_idle = INDEX_IDLE if done else min(self._index_idle * 2, INDEX_IDLE_MAX)
            if not done:
                return

    def _drain(self, *, whole: bool = True) -> None:
        """Process everything queued (inline at exit, or at a flush without a writer thread).
        The writer thread passes ``whole=False``: it stops once fewer than WAKE_ROWS calls
        are left (those that came while it wrote), so they wait for its next turn and share
        one transaction, instead of a transaction each as they trickle in (a flush, or
        WAKE_ROWS calls, wake it at once)."""
        with self._lock:
            while True:
                batch: list[Any] = []
                markers: list[_FlushMarker] = []
                queue = self._queue
                while queue and len(batch) < BATCH_SIZE:
                    item = queue.popleft()
                    if isinstance(item, _FlushMarker):
                        markers.append(item)
                        break
                    batch.append(item)
                if batch:
                    released = sum(map(_held_bytes, batch))
                    with self._bytes_lock:
                        self._queued_bytes -= released
                    self._write(batch)
                if markers:
                    self._write_pending(force=True)
                    self._catch_up(force=True)
                    reason = (
                        self._unwritten_reason() if any(log.pending for log in self._logs.values()) else None
                    )
                    if _otel_live is not None:
                        _otel_live.flush()  # httptrack's own OpenTelemetry exporters, if any
                    for marker in markers:
                        marker.reason = reason
                        marker.done.set()
                if not queue or (not whole and len(queue) < WAKE_ROWS):
                    break
            self._write_pending(force=False)
            self._catch_up(force=False)

    def _catch_up(self, *, force: bool) -> None:
        """Bring each log's derived data (search index, rollups) up to date if due (or now)."""
        for log in list(self._logs.values()):
            backend = log.backend
            if backend.behind and (force or backend.due()):
                try:
                    with self._fork_lock:
                        backend.catch_up()
                except LogUnavailable as exc:  # locked: the next write or flush tries again
                    report_fault("database", str(exc), exc.__cause__)

    def _write(self, batch: list[Exchange]) -> None:
        built = []
        self._slice_start = time.perf_counter()
        fork_lock = self._fork_lock
        for exchange in batch:
            self._pause()
            try:
                with fork_lock:
                    result = build_row(exchange)
            except Exception as exc:
                self._lost(
                    exchange.settings.db,
                    [exchange.spooled],
                    "record",
                    "a call could not be turned into a row",
                    exc,
                )
                continue
            built.append((exchange, result))
            row = result.row
            values = _row_values(row)
            log = self._log(exchange.settings.db, exchange.settings.retention)
            log.pending.append(_Row(values, exchange.spooled, _row_bytes(values)))
            log.pending_bytes += log.pending[-1].size
        # Not forced: while a database is failing, retries wait for their back-off instead of
        # holding every batch for the busy timeout.
        self._write_pending(force=False)
        sinks: dict[int, RecordSink] = {}
        for exchange, result in built:
            sink = exchange.sink
            if sink is None:
                continue
            self._pause()
            sinks[id(sink)] = sink
            try:
                with fork_lock:
                    sink.after_record(exchange, result)
            except Exception as exc:
                report_fault("after_record", "a post-record hook failed", exc)
        for sink in sinks.values():
            try:
                with fork_lock:
                    sink.after_batch()
            except Exception as exc:
                report_fault("after_record", "a post-record hook failed", exc)
        exported = [item for item in built if item[0].settings.otel]
        if exported:  # HTTPTRACK_OTEL: the batch's spans and metrics (otel/_live)
            with fork_lock:
                _otel().export_batch(exported, self._pause)

    def _log(self, path: LogTarget, retention: Retention | None = None) -> _Log:
        log = self._logs.get(path)
        if log is None:
            log = self._logs[path] = _Log(path, open_backend(path, self._pause, retention))
        elif retention is not None and hasattr(log.backend, "retention"):
            log.backend.retention = retention  # the latest call's HTTPTRACK_RETENTION
        return log

    def _pause(self) -> None:
        """Let other threads have the GIL for a moment, every so often (see YIELD_FOR)."""
        now = time.perf_counter()
        if now - self._slice_start < self._yield_every:
            return
        _sleep(YIELD_FOR)
        after = time.perf_counter()
        # Back from the sleep much later than asked: another thread ran meanwhile.
        if after - now > YIELD_FOR + 0.0005 or self._submitted != self._seen:
            self._yield_every = YIELD_EVERY_MIN
        else:
            self._yield_every = min(self._yield_every * 2, YIELD_EVERY_MAX)
        self._seen = self._submitted
        self._slice_start = after

    def _write_pending(self, *, force: bool) -> None:
        now = time.monotonic()
        for log in list(self._logs.values()):
            due = force or now >= log.retry_at
            if due and (log.pending or (force and _due(log.recovered_at, now))):
                with self._fork_lock:
                    self._write_log(log, force=force)
            spool = self._spools.get(log.path)
            if spool is not None:
                spool.tidy()

    def _write_log(self, log: _Log, *, force: bool) -> None:
        """Write what waits for ``log``, a transaction at a time, until done or it fails."""
        backend = log.backend
        spool = self._spools.get(log.path)
        try:
            if log.recovered_at is None or (force and _due(log.recovered_at, time.monotonic())):
                backend.open()
                recover(log.path, backend, spool)
                log.recovered_at = time.monotonic()
            pending = log.pending
            while pending:
                rows: list[_Row] = []
                size = 0
                for row in pending:
                    if len(rows) >= log.batch or (rows and size + row.size > BATCH_BYTES):
                        break
                    rows.append(row)
                    size += row.size
                result = backend.write([row.values for row in rows])
                self.transactions += 1
                self._progress.set()
                for _ in rows:
                    pending.popleft()
                log.pending_bytes -= size
                self.written += result.written
                if result.refused:
                    _, why = result.refused[0]
                    self.dropped += len(result.refused)
                    report_fault(
                        "refused",
                        f"{backend.location} refused {len(result.refused)} call(s) ({why}); "
                        "they are not recorded, the others are",
                        count=len(result.refused),
                        dropped=len(result.refused),
                    )
                if spool is not None:
                    _release(spool, [row.segment for row in rows])
                log.batch = min(BATCH_SIZE, log.batch * 2)
                log.retry = 0.0
                log.error = None
        except LogUnavailable as exc:
            log.error = str(exc)
            log.batch = max(1, log.batch // 4)
            log.retry = min(RETRY_MAX, max(RETRY_MIN, log.retry * 2))
            log.retry_at = time.monotonic() + log.retry
            report_fault(
                "database",
                f"{exc}; {len(log.pending)} calls not written yet wait (in memory and in the spool) "
                "and are written as soon as it can be",
                exc.__cause__,
            )
            self._bound_pending(log)

    def _bound_pending(self, log: _Log) -> None:
        """Keep the rows waiting for a log within bounds: the oldest wait, the newest
        beyond the bounds are lost (and counted)."""
        rows = log.pending
        if len(rows) <= MAX_PENDING_ROWS and log.pending_bytes <= MAX_PENDING_BYTES:
            return
        keep, total = 0, 0
        for keep, row in enumerate(rows):
            total += row.size
            if keep >= MAX_PENDING_ROWS or total > MAX_PENDING_BYTES:
                break
        lost = [rows.pop().segment for _ in range(len(rows) - keep)]
        log.pending_bytes = sum(row.size for row in rows)
        self._lost(
            log.path,
            lost,
            "pending_full",
            f"{log.path} could not be written for too long; {len(lost)} newer calls were not recorded",
        )

    def _lost(
        self,
        path: LogTarget,
        segments: list[int],
        kind: FaultKind,
        message: str,
        exc: BaseException | None = None,
    ) -> None:
        """Count calls lost to the log (``rows_dropped``) and let their spool records go."""
        self.dropped += len(segments)
        report_fault(kind, message, exc, count=len(segments), dropped=len(segments))
        spool = self._spools.get(path)
        if spool is not None:
            _release(spool, segments)

    def close(self, timeout: float = 1.0) -> None:
        """Close every log (folding its journal into the file when this process is the last
        writer) and delete this process's spools if all their calls are written. At exit;
        also reopened as needed if calls come after."""
        if not self._lock.acquire(timeout=timeout):
            return  # the writer is stuck in a write: leave everything to the spool
        try:
            for log in list(self._logs.values()):
                with self._fork_lock:
                    if not log.pending:
                        log.backend.checkpoint()
                    log.backend.close()
                log.recovered_at = None
            for path, spool in list(self._spools.items()):
                if spool is not None:
                    spool.tidy()
                    spool.close()
                del self._spools[path]
            self._last_spool = None
            self._feeds.close()
        finally:
            self._lock.release()

    def discard(self) -> None:
        """Forget every call waiting for a log, close the logs and delete this process's
        spools (for tests: what one test left unwritable must not stay for the next)."""
        with self._lock:
            for log in self._logs.values():
                log.backend.close()
            self._logs.clear()
            for spool in self._spools.values():
                if spool is not None:
                    spool.discard()
            self._spools.clear()
            self._last_spool = None
            self._feeds.discard()

    def close_connections(self) -> None:
        with self._lock:
            for log in self._logs.values():
                log.backend.close()
                log.recovered_at = None

    # -- fork -------------------------------------------------------------------------------

    def _before_fork(self) -> None:
        # Not while the writer thread imports a module, builds a row or is inside SQLite:
        # the child would inherit a half-imported module (ImportError) or a lock nobody
        # will release (SQLite's VFS mutex: the child's first connect would hang).
        self._fork_waiting = True  # an index being built gives way (_build_indexes)
        try:
            self._fork_held = self._fork_lock.acquire(timeout=FORK_WAIT_SECONDS)
        finally:
            self._fork_waiting = False

    def _after_fork_in_parent(self) -> None:
        if self._fork_held:
            self._fork_held = False
            self._fork_lock.release()

    def _after_fork_in_child(self) -> None:
        # The parent's thread does not exist here; its connections and spool files are the
        # parent's (what it had queued, it writes).
        for log in self._logs.values():
            log.backend.forget()
        for spool in self._spools.values():
            if spool is not None:
                spool.forget()
        self._feeds.forget()
        dropped, written = self.dropped, self.written
        self._reset()
        self.dropped, self.written = dropped, written


#: ``otel._live``, imported with the first call that has ``HTTPTRACK_OTEL`` on.
_otel_live: Any = None


def _otel() -> Any:
    global _otel_live
    if _otel_live is None:
        from ..otel import _live

        _otel_live = _live
    return _otel_live


def _release(spool: Spool, segments: list[int]) -> None:
    """Release the spool records of ``segments`` (one per row): one call per run of rows in
    the same segment, not one per row (each takes the spool's lock, which the app's
    threads take to append)."""
    start = 0
    for end in range(1, len(segments) + 1):
        if end == len(segments) or segments[end] != segments[start]:
            spool.release(segments[start], end - start)
            start = end


def _due(last: float | None, now: float) -> bool:
    return last is None or now - last >= RECOVER_EVERY


#: How long a multiprocessing pool worker's call waits for its row to be written, at most.
WORKER_FLUSH_SECONDS = 5.0


def _multiprocessing_child() -> bool:
    """For a process started by ``multiprocessing`` (fork or spawn), which ends with
    ``os._exit`` and so never runs ``atexit``: register a flush among multiprocessing's own
    exit finalizers (``Process``, ``ProcessPoolExecutor`` workers, and servers such as
    uvicorn's workers end through them). Returns whether this is a ``multiprocessing.Pool``
    worker, which its pool may terminate instead: its calls are written as they end."""
    mp = sys.modules.get("multiprocessing")
    if mp is None:
        return False
    try:
        if mp.parent_process() is None:
            return False
        from multiprocessing import util

        util.Finalize(None, _at_exit, exitpriority=10)  # what atexit would have run
        name: str = mp.current_process().name
        return name.split("-")[0].endswith("PoolWorker")
    except Exception:  # pragma: no cover - a stripped-down multiprocessing
        return False


def _held_bytes(exchange: Exchange) -> int:
    """The body bytes an exchange holds in memory while it waits for the writer."""
    return len(exchange.request_body) + min(exchange.received, exchange.limit) + exchange.tail_bytes


_body_values = operator.itemgetter(
    *(COLUMN_NAMES.index(c) for c in ("request_body", "response_body", "response_text"))
)


def _row_bytes(row: tuple[Any, ...]) -> int:
    return 512 + sum(map(len, filter(None, _body_values(row))))  # in C: once per row


def _warm_up() -> None:
    """Everything the writer thread will import, imported now (with fork() held off, see
    ``Writer._before_fork``), and the price data loaded before the first row needs it, off
    the app's thread."""
    try:
        import sqlite_utils  # noqa: F401  (migrations)

        from .._faults import get_logger as logger
        from . import _tokens  # noqa: F401  (estimates)

        logger()
        from ..pricing._prices import warm_up

        warm_up()
    except Exception as exc:
        report_fault("pricing", "price data could not be loaded", exc)


_writer = Writer()


def writer() -> Writer:
    return _writer


def flush(timeout: float | None = 30.0) -> bool:
    """Write every pending record of this process to its database now. Returns ``False``
    (and logs why) if some could not be written: the database is locked, full or
    unwritable, or ``timeout`` seconds passed. Those calls are not lost: they wait in
    memory and in the spool, and are written when the log can be (by this process, or the
    next one that opens the log)."""
    return _writer.flush(timeout)


def _at_exit() -> None:
    try:
        from .._streams import finish_open_streams

        finish_open_streams()
        # A log whose last write failed (locked, full) is not waited for: its calls are in
        # the spool, and the next process that opens the log writes them.
        failing = _writer.failing()
        # Process mode: nothing to wait for, the feeds hold the calls (the writer process
        # writes them, or the next process that opens the log does).
        _writer._feeds.close()
        if not _writer.flush(timeout=EXIT_FAILING_SECONDS if failing else EXIT_FLUSH_SECONDS):
            # (Why was logged when it happened, or by flush on a timeout.)
            get_logger().debug(
                "httptrack: not every call was written before exit; they are in the spool beside "
                "the database, and the next process that opens the log writes them"
            )
            _writer.close(timeout=EXIT_FAILING_SECONDS)
        else:
            _writer.close()
        if _otel_live is not None:
            _otel_live.shutdown()  # after the last rows: their spans go too
    except Exception:  # pragma: no cover
        pass


atexit.register(_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_writer._before_fork,
        after_in_parent=_writer._after_fork_in_parent,
        after_in_child=_writer._after_fork_in_child,
    )
