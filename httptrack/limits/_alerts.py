"""Delivering alerts: the ``httptrack`` logger, the app's callback, a webhook.

An alert is fired by exactly one process (the counters decide, see ``_sqlite``); that
process logs it at WARNING right away, then hands it to one daemon thread that calls the
app's ``on_alert(payload)`` and POSTs the payload as JSON to the webhook, if any. Neither
ever runs on the app's thread or holds a call up. The payload has a ``text`` field, so a
Slack (or Mattermost, Discord ``/slack``) incoming webhook shows the alert as a message.

A webhook POST is tried up to :data:`ATTEMPTS` times, with growing pauses, while the
answer is a connection error, a timeout, 429 or 5xx; any other answer ends it. What is
still queued at interpreter exit gets up to :data:`EXIT_SECONDS` to go out. The webhook's
URL is a secret (Slack's holds its token): faults name its host only.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from .._faults import get_logger, report_fault
from ._counters import Alert

__all__ = ["ATTEMPTS", "EXIT_SECONDS", "Notifier", "flush_alerts", "post_json"]

ATTEMPTS = 4
#: Pause before each retry (seconds).
BACKOFF = (0.5, 2.0, 5.0)
TIMEOUT = 5.0
EXIT_SECONDS = 5.0

AlertCallback = Callable[[dict[str, Any]], object]


def _host_of(url: str) -> str:
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"


def post_json(url: str, payload: dict[str, Any], *, timeout: float = TIMEOUT) -> int:
    """POST ``payload`` as JSON; the HTTP status (raises ``OSError`` when none came back).
    ``urllib``, not httpx: the alert must not become a tracked call of its own."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "httptrack-alerts"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code


class _Dispatcher:
    """One daemon thread per process that runs callbacks and webhook POSTs in order."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Notifier, dict[str, Any]] | threading.Event] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._busy = 0

    def put(self, notifier: Notifier, payload: dict[str, Any]) -> None:
        with self._lock:
            self._busy += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="httptrack-alerts", daemon=True)
                self._thread.start()
        self._queue.put((notifier, payload))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if isinstance(item, threading.Event):
                item.set()
                continue
            notifier, payload = item
            try:
                notifier.deliver(payload)
            finally:
                with self._lock:
                    self._busy -= 1

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every alert queued so far is delivered (or given up on)."""
        with self._lock:
            if not self._busy or self._thread is None:
                return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)


_dispatcher = _Dispatcher()


def flush_alerts(timeout: float | None = 30.0) -> bool:
    """Deliver the alerts queued in this process (callbacks and webhooks) before returning."""
    return _dispatcher.flush(timeout)


def _at_exit() -> None:
    # The writer's own exit flush settles the last calls, which may fire alerts: flush it
    # first (atexit runs this before it, registered later), then deliver.
    writer = sys.modules.get("httptrack.record._writer")
    if writer is not None:
        with contextlib.suppress(Exception):  # exiting: nothing more to do
            writer.flush(EXIT_SECONDS)
    _dispatcher.flush(EXIT_SECONDS)


atexit.register(_at_exit)


def _after_fork_in_child() -> None:
    global _dispatcher
    _dispatcher = _Dispatcher()  # the parent's thread and queue are not this process's


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Notifier:
    """Where one transport's alerts go: the logger always, plus ``on_alert`` and a webhook."""

    def __init__(self, on_alert: AlertCallback | None = None, webhook: str | None = None) -> None:
        self.on_alert = on_alert
        self.webhook = webhook or None
        self.backoff = BACKOFF

    def send(self, alerts: Iterable[Alert]) -> None:
        """Fire alerts: logged now, delivered to the callback and the webhook in the background."""
        for alert in alerts:
            try:
                get_logger().warning("%s", alert.text)
                if self.on_alert is not None or self.webhook is not None:
                    _dispatcher.put(self, alert.payload())
            except Exception as exc:
                report_fault("limit_alert", "a limit alert could not be sent", exc)

    def deliver(self, payload: dict[str, Any]) -> None:
        """Runs in the dispatcher's thread."""
        if self.on_alert is not None:
            try:
                self.on_alert(payload)
            except Exception as exc:
                report_fault("limit_alert", "the on_alert callback raised", exc)
        if self.webhook is not None:
            self._post(self.webhook, payload)

    def _post(self, url: str, payload: dict[str, Any]) -> None:
        problem = ""
        for attempt in range(ATTEMPTS):
            if attempt:
                time.sleep(self.backoff[min(attempt - 1, len(self.backoff) - 1)])
            try:
                status = post_json(url, payload)
            except (OSError, ValueError) as exc:  # refused, timed out, DNS, a malformed URL
                problem = type(exc).__name__
                if isinstance(exc, ValueError):
                    break
                continue
            if status < 300:
                return
            problem = f"HTTP {status}"
            if status != 429 and status < 500:
                break  # the hook refuses this payload: trying again will not change that
        report_fault(
            "limit_alert",
            f"a limit alert could not be delivered to the webhook at {_host_of(url)} ({problem})",
        )
