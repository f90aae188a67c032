"""The cache folder's single-flight leases across processes (``cache/_lease.py`` under
``EntryStore.acquire``): a byte lock on a lease file, taken without releasing the GIL
(open file description locks through ctypes) where that is safe, else ``fcntl.lockf``.
Either way a lease is taken once across processes, is free at once when its holder dies,
and is not shared with a forked child; the two kinds exclude each other."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from httptrack.cache import _lease
from httptrack.cache._store import EntryStore

ROOT = Path(__file__).resolve().parents[2]
OFD_AVAILABLE = _lease._pydll_fcntl() is not None

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="Windows leases are folders")

KINDS = [
    pytest.param(
        "ofd",
        marks=pytest.mark.skipif(not OFD_AVAILABLE, reason="open file description locks: 64-bit Linux only"),
    ),
    "lockf",
]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """This process's kind of lock."""
    monkeypatch.setattr(_lease, "use_ofd_locks", request.param == "ofd")
    monkeypatch.setattr(_lease, "_files", {})  # lease files opened anew, of that kind
    yield request.param


def _store(cache_dir: Path, kind: str) -> EntryStore:
    store = EntryStore(cache_dir, None)
    assert store.acquire("probe", 60) is True
    file = next(f for f in store._lease_files if f is not None)
    assert file.ofd is (kind == "ofd")  # the kind asked for is the kind in use
    store.release("probe")
    return store


def _run(script: str, cache_dir: Path, kind: str) -> subprocess.Popen[str]:
    preamble = f"from httptrack.cache import _lease\n_lease.use_ofd_locks = {kind == 'ofd'}\n"
    return subprocess.Popen(
        [sys.executable, "-c", preamble + textwrap.dedent(script), str(cache_dir)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )


HOLDER = """
    import sys, time
    from pathlib import Path
    from httptrack.cache._store import EntryStore

    store = EntryStore(Path(sys.argv[1]), None)
    taken = store.acquire("k1", 60), store.acquire("k2", 60)
    store.release("k2")
    kinds = {f.ofd for f in store._lease_files if f is not None}
    print(*taken, *kinds, flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("holder_kind", KINDS)
def test_a_lease_is_taken_once_across_processes_and_freed_when_its_holder_dies(
    cache_dir: Path, kind: str, holder_kind: str
) -> None:
    """Both kinds, in both roles: an open file description lock and a POSIX record lock on
    the same byte exclude each other (processes of either kind share one folder)."""
    holder = _run(HOLDER, cache_dir, holder_kind)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().split() == ["True", "True", str(holder_kind == "ofd")]
        store = _store(cache_dir, kind)
        assert store.acquire("k1", 60) is False and store.held("k1")
        assert not store.held("k2") and store.acquire("k2", 60) is True  # given back
        assert store.acquire("k2", 60) is False  # this process holds it now (another thread)
        store.release("k1")  # not its lease: left to its holder
        assert store.held("k1") and store.acquire("k1", 60) is False
        assert store.acquire("k3", 0.001) is True
        time.sleep(0.01)
        assert store.acquire("k3", 60) is True  # its own lease, expired: taken again
    finally:
        holder.kill()
        holder.communicate(timeout=30)
    # Free at once: no waiting for an expiry.
    assert not store.held("k1") and store.acquire("k1", 60) is True  # its holder died
    for key in ("k1", "k2", "k3"):
        store.release(key)
    assert not store.held("k2")


FORKER = """
    import os, sys, time
    from pathlib import Path
    from httptrack.cache._store import EntryStore

    store = EntryStore(Path(sys.argv[1]), None)
    assert store.acquire("k1", 60)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: none of its parent's leases, its own are its own
        os.write(write, f"{store.acquire('k1', 60)} {store.acquire('k2', 60)}".encode())
        time.sleep(60)
        os._exit(0)
    print(pid, os.read(read, 100).decode(), flush=True)
    time.sleep(60)
"""


def test_a_forked_child_holds_none_of_its_parent_s_leases(cache_dir: Path, kind: str) -> None:
    """An open file description lock belongs to the open file, which a child inherits:
    the child must neither take its parent's lease nor keep it alive once the parent dies."""
    forker = _run(FORKER, cache_dir, kind)
    child = 0
    try:
        assert forker.stdout is not None
        pid, *taken = forker.stdout.readline().split()
        child = int(pid)
        assert taken == ["False", "True"]  # the parent's lease; one of its own
        store = _store(cache_dir, kind)
        assert store.held("k1") and store.held("k2")
        forker.kill()  # the parent dies; its child lives on (holding the pipe open)
        forker.wait(timeout=30)
        assert not store.held("k1") and store.acquire("k1", 60) is True  # free at once
        assert store.held("k2") and store.acquire("k2", 60) is False  # the child's
    finally:
        forker.kill()
        if child:
            os.kill(child, 9)
        forker.wait(timeout=30)
        assert forker.stdout is not None
        forker.stdout.close()
    for _ in range(1000):  # the child is gone once its lock is (not our child: not waited for)
        if not store.held("k2"):
            break
        time.sleep(0.01)
    assert store.acquire("k2", 60) is True


@pytest.mark.skipif(not OFD_AVAILABLE, reason="open file description locks: 64-bit Linux only")
def test_a_lease_file_on_a_network_file_system_uses_lockf(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where a lock may wait for a server (NFS, SMB, FUSE: not a local file system), the
    lock that keeps the GIL is not used: ``fcntl.lockf`` lets other threads run meanwhile."""
    cache_dir.mkdir()
    assert _lease.LeaseFile(str(cache_dir / "local.lock")).ofd is True
    monkeypatch.setattr(_lease, "_local", lambda fd: False)
    file = _lease.LeaseFile(str(cache_dir / "remote.lock"))
    assert file.ofd is False
    assert file.try_lock(7) is True
    file.unlock(7)
    file.close()
