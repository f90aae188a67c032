"""The per-process background writer.

The app's thread only appends a finished exchange to a queue (``submit``). One daemon
thread per process turns exchanges into rows (parse, price — see ``_row``) and writes
them in batches through the call log (``log/``): one transaction per batch, so many threads
and processes can share one database without slowing each other down.

- ``flush()`` waits until everything submitted before it is written; the same runs at
  interpreter exit (``atexit``), and transports call it on ``close()``.
- After ``fork()`` the child starts with an empty queue and no connections (the parent
  keeps writing its own rows); its writer thread starts on its first call.
- A database that is locked, read-only or full is a tracking fault: rows wait (bounded by
  ``max_queue``) and are retried, the app is never blocked, and the fault is logged once.
"""

from __future__ import annotations

import atexit
import operator
import os
import sqlite3
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from .._exchange import Exchange
from .._faults import get_logger, report_fault
from ..log._schema import COLUMN_NAMES
from ..log._sqlite import Store

__all__ = ["Writer", "flush", "writer"]

BATCH_SIZE = 1000
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
#: (counted in ``Writer.dropped`` and logged once), never the app's memory.
MAX_QUEUED_BYTES = 512 * 1024 * 1024
MAX_PENDING_BYTES = 256 * 1024 * 1024
#: A row's values in column order (in C: this runs for every call).
_row_values = operator.itemgetter(*COLUMN_NAMES)


class _FlushMarker:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


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
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stores: dict[Path, Store] = {}
        #: Rows that could not be written yet (database locked, disk full), per store.
        self._pending: dict[Path, list[tuple[Any, ...]]] = {}
        self._pending_bytes: dict[Path, int] = {}
        self._retry_at = 0.0
        self._closed = False
        #: This process is a multiprocessing.Pool worker (decided at its first call): see submit.
        self._worker: bool | None = None

    # -- the app's side (cheap) -------------------------------------------------------------

    def submit(self, exchange: Exchange) -> None:
        queue = self._queue
        size = _held_bytes(exchange)
        if len(queue) >= exchange.settings.max_queue or (
            queue and self._queued_bytes + size > MAX_QUEUED_BYTES
        ):
            self.dropped += 1
            report_fault("queue_full", f"the writer is {len(queue)} calls behind; a call was not recorded")
            return
        with self._bytes_lock:
            self._queued_bytes += size
            self._submitted += 1
        queue.append(exchange)
        if self._thread is None:
            self._start()
        wake = self._wake
        # Setting an Event takes its lock and notifies: skipped while it is still set. Safe:
        # the writer clears it *before* draining, so whatever was appended before this test
        # saw it set is drained after the clear.
        if not wake.is_set():
            wake.set()
        worker = self._worker
        if worker is None:
            worker = self._worker = _multiprocessing_child()
        if worker:
            # A multiprocessing.Pool worker is terminated by its pool (`with Pool() as pool:`
            # ends with terminate()): what the writer still holds then is lost. So a pool
            # worker's call is written before it returns: a millisecond or two per call, in
            # processes that do batch work. (Other multiprocessing children flush at their
            # end: see _multiprocessing_child.)
            self.flush(timeout=WORKER_FLUSH_SECONDS)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="httptrack-writer", daemon=True)
                self._thread = thread
                thread.start()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far is written. ``False`` on timeout."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            self._drain()  # no writer running (never started, or interpreter shutting down)
            return not self._queue
        marker = _FlushMarker()
        self._queue.append(marker)
        self._wake.set()
        return marker.done.wait(timeout)

    # -- the writer thread ------------------------------------------------------------------

    def _run(self) -> None:
        warmed = False
        while True:
            behind = any(store.behind for store in self._stores.values())
            self._wake.wait(timeout=1.0 if self._pending or behind else None)
            self._wake.clear()
            # Woken by calls: the app is running. Yield often until that proves unneeded.
            self._yield_every = YIELD_EVERY_MIN
            self._slice_start = time.perf_counter()
            if not warmed:
                warmed = True
                _warm_up()
            try:
                self._drain()
            except Exception as exc:  # pragma: no cover - a bug in httptrack: keep running
                report_fault("writer", "the writer hit an unexpected error", exc)

    def _drain(self) -> None:
        """Process everything queued (runs in the writer thread, or inline at exit)."""
        with self._lock:  # one drainer at a time (writer thread vs. a flush at exit)
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
                if batch:
                    self._write(batch)
                if markers:
                    self._write_pending(force=True)
                    self._catch_up(force=True)
                    for marker in markers:
                        marker.done.set()
                if not queue:
                    break
            self._write_pending(force=False)
            self._catch_up(force=False)

    def _catch_up(self, *, force: bool) -> None:
        """Bring each database's search index and rollup up to date if due (or now)."""
        for store in list(self._stores.values()):
            if store.behind and (force or store.due()):
                try:
                    store.catch_up()
                except sqlite3.Error as exc:  # locked: the next write or flush tries again
                    report_fault("database", f"could not index new calls in {store.path}: {exc}", exc)

    def _write(self, batch: list[Exchange]) -> None:
        from ._row import build_row

        by_store: dict[Path, list[tuple[Any, ...]]] = {}
        built: list[tuple[Exchange, dict[str, Any]]] = []
        self._slice_start = time.perf_counter()
        for exchange in batch:
            self._pause()
            try:
                row = build_row(exchange)
            except Exception as exc:
                report_fault("record", "a call could not be turned into a row", exc)
                continue
            built.append((exchange, row))
            by_store.setdefault(exchange.settings.db, []).append(_row_values(row))
        for path, rows in by_store.items():
            self._pending.setdefault(path, []).extend(rows)
            self._pending_bytes[path] = self._pending_bytes.get(path, 0) + sum(map(_row_bytes, rows))
        # Not forced: while a database is failing, retries wait for their back-off instead of
        # holding every batch for the busy timeout.
        self._write_pending(force=False)
        sinks: dict[int, Any] = {}
        for exchange, row in built:
            self._pause()
            sink = exchange.sink
            hook = getattr(sink, "after_record", None)
            if hook is not None:
                sinks[id(sink)] = sink
                try:
                    hook(exchange, row)
                except Exception as exc:
                    report_fault("after_record", "a post-record hook failed", exc)
        for sink in sinks.values():
            done = getattr(sink, "after_batch", None)
            if done is not None:
                try:
                    done()
                except Exception as exc:
                    report_fault("after_record", "a post-record hook failed", exc)

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
        if not self._pending or (not force and time.monotonic() < self._retry_at):
            return
        for path in list(self._pending):
            rows = self._pending[path]
            store = self._stores.get(path)
            if store is None:
                store = self._stores[path] = Store(path, self._pause)
            try:
                store.write(rows)
            except sqlite3.Error as exc:
                store.close()
                self._retry_at = time.monotonic() + 1.0
                report_fault("database", f"could not write to {path}: {exc}; will retry", exc)
                self._bound_pending(path)
                continue
            except OSError as exc:
                self._retry_at = time.monotonic() + 1.0
                report_fault("database", f"could not open {path}: {exc}; will retry", exc)
                self._bound_pending(path)
                continue
            self.written += len(rows)
            del self._pending[path]
            self._pending_bytes.pop(path, None)

    def _bound_pending(self, path: Path) -> None:
        """Keep the rows waiting for ``path`` within bounds: the oldest wait, the newest
        beyond the bounds are lost (and counted)."""
        rows = self._pending[path]
        keep, total = 0, 0
        for keep, row in enumerate(rows):
            total += _row_bytes(row)
            if keep >= MAX_PENDING_ROWS or total > MAX_PENDING_BYTES:
                break
        else:
            return
        self.dropped += len(rows) - keep
        report_fault(
            "pending_full", f"{path} could not be written for too long; newer calls were not recorded"
        )
        del rows[keep:]
        self._pending_bytes[path] = sum(map(_row_bytes, rows))

    def close_connections(self) -> None:
        with self._lock:
            for store in self._stores.values():
                store.close()
            self._stores.clear()

    def _after_fork_in_child(self) -> None:
        # The parent's thread does not exist here and its connections must not be used.
        for store in self._stores.values():
            store.forget()
        dropped, written = self.dropped, self.written
        self._reset()
        self.dropped, self.written = dropped, written


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


_BODY_COLUMNS = tuple(COLUMN_NAMES.index(c) for c in ("request_body", "response_body", "response_text"))


def _row_bytes(row: tuple[Any, ...]) -> int:
    return 512 + sum(len(row[i]) for i in _BODY_COLUMNS if row[i])


def _warm_up() -> None:
    """Load the price data in the writer thread before the first row needs it, off the
    app's thread."""
    try:
        from ..pricing._prices import warm_up

        warm_up()
    except Exception as exc:
        report_fault("pricing", "price data could not be loaded", exc)


_writer = Writer()


def writer() -> Writer:
    return _writer


def flush(timeout: float | None = 30.0) -> bool:
    """Write every pending record of this process to its database now. Returns ``False``
    if that did not finish within ``timeout`` seconds."""
    return _writer.flush(timeout)


def _at_exit() -> None:
    try:
        from .._streams import finish_open_streams

        finish_open_streams()
        if not _writer.flush(timeout=10.0):
            get_logger().warning("httptrack: not every call was recorded before exit (timed out)")
    except Exception:  # pragma: no cover
        pass


atexit.register(_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_writer._after_fork_in_child)
