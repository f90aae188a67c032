"""Locks on single bytes of a file: the cache folder's single-flight leases across processes.

A lease is a lock on one byte of a ``leases.<n>.lock`` file (``_store``): taken without
waiting, given up when the answer is stored, and given up by the kernel when its holder
dies (``kill -9`` included), so it never blocks anyone after that.

**Without releasing the GIL.** A lease is taken on every cache miss, on the app's thread.
``fcntl.lockf`` releases the GIL around its system call (as every blocking call in CPython
does): the call itself takes ~0.4 µs, but while httptrack's writer thread is runnable it
takes the GIL at that moment, and the app's thread pays for the hand-over and for the
caches the writer evicted (~20-50 µs of CPU per call, measured in the real pipeline). Where
it is safe, the lock is taken through ``ctypes.PyDLL``, which keeps the GIL: Linux's open
file description locks (``F_OFD_SETLK``), asked never to wait, on a local file system (ext4,
xfs, btrfs, tmpfs, overlayfs, zfs ...), where the kernel answers at once (~0.6 µs). On a
network file system (NFS, SMB, FUSE ...) a lock may wait for a server, so there, and on
other systems (macOS, 32-bit builds, kernels before 3.15), ``fcntl.lockf``, which releases
the GIL, is used instead. Both kinds are record locks on the same bytes: the kernel keeps
them exclusive of each other, so processes using either see each other's leases.

Open file description locks belong to the open file, not to the process: a forked child
shares its parent's, so a child closes the files it inherited (``after_fork``) and opens its
own (it then holds none of its parent's leases, and does not keep them alive once the
parent is gone), as POSIX record locks would have it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
import sys
import threading
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the store uses folders instead
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCAL_FILE_SYSTEMS", "LeaseFile", "after_fork", "lease_file", "use_ofd_locks"]

#: Linux's ``fcntl`` commands for open file description locks, and the lock types.
F_OFD_GETLK = 36
F_OFD_SETLK = 37
F_WRLCK = 1
F_UNLCK = 2
#: ``struct flock`` on 64-bit Linux: ``short l_type, l_whence; off_t l_start, l_len; pid_t
#: l_pid`` and its padding (32 bytes).
_FLOCK = struct.Struct("hhqqi4x")
#: Architectures whose ``struct flock`` is laid out so (the generic one).
_LAYOUT_KNOWN = frozenset({"x86_64", "amd64", "aarch64", "arm64", "riscv64", "ppc64le", "s390x"})

#: ``statfs`` magic numbers of local file systems, where a lock request that does not wait
#: is answered by the kernel at once (elsewhere it may ask a server: ``fcntl.lockf``, which
#: releases the GIL while it waits).
LOCAL_FILE_SYSTEMS = frozenset(
    {
        0xEF53,  # ext2/3/4
        0x58465342,  # xfs
        0x9123683E,  # btrfs
        0x01021994,  # tmpfs
        0x858458F6,  # ramfs
        0x794C7630,  # overlayfs
        0x2FC12FC1,  # zfs
        0xF2F52010,  # f2fs
        0xCA451A4E,  # bcachefs
        0x52654973,  # reiserfs
        0x3153464A,  # jfs
        0x3434,  # nilfs
    }
)

#: ``False`` turns open file description locks off (every lease through ``fcntl.lockf``):
#: for tests of that path, and as a switch should a platform misbehave.
use_ofd_locks = True

_ofd_fcntl: Any = None  # libc's fcntl through ctypes.PyDLL, once looked up (False: unavailable)
_get_errno: Any = None  # ctypes.get_errno


def _pydll_fcntl() -> Any:
    """libc's ``fcntl`` called with the GIL held, or ``None`` where that is not possible."""
    global _ofd_fcntl, _get_errno
    if _ofd_fcntl is None:
        _ofd_fcntl = False
        if sys.platform.startswith("linux") and sys.maxsize > 2**32 and _machine() in _LAYOUT_KNOWN:
            try:
                import ctypes

                function = ctypes.PyDLL(None, use_errno=True).fcntl
                function.restype = ctypes.c_int
                _get_errno = ctypes.get_errno
                _ofd_fcntl = function
            except (ImportError, OSError, AttributeError):
                pass
    return _ofd_fcntl or None


def _machine() -> str:
    return os.uname().machine.lower()


def _local(fd: int) -> bool:
    """Whether the file open at ``fd`` is on a local file system (see LOCAL_FILE_SYSTEMS)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        buffer = ctypes.create_string_buffer(512)  # struct statfs: 120 bytes on 64-bit Linux
        if libc.fstatfs(fd, buffer) != 0:
            return False
        kind = int.from_bytes(buffer.raw[:8], sys.byteorder) & 0xFFFFFFFF  # f_type, a long
    except (ImportError, OSError, AttributeError):
        return False
    return kind in LOCAL_FILE_SYSTEMS


class LeaseFile:
    """One open lease file of this process: locks on its bytes (see the module's docstring).
    Kept open for the life of the process (closing it gives up every lease held on it)."""

    __slots__ = ("_fcntl", "fd", "ofd", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        #: Open file description locks through ctypes (the GIL kept), else ``fcntl.lockf``.
        self.ofd = False
        self._fcntl: Any = None
        function = _pydll_fcntl() if use_ofd_locks else None
        if function is not None and _local(self.fd):
            # Kernels before 3.15 refuse the command (EINVAL): lockf then.
            import ctypes

            probe = ctypes.create_string_buffer(_FLOCK.pack(F_WRLCK, os.SEEK_SET, 0, 1, 0), _FLOCK.size)
            if function(self.fd, F_OFD_GETLK, probe) == 0:
                self.ofd = True
                self._fcntl = function

    def try_lock(self, offset: int) -> bool | None:
        """Lock the byte at ``offset`` without waiting: ``True`` taken (or already this
        process's), ``False`` another process holds it, ``None`` this file system has no
        locks (nobody can hold it then)."""
        function = self._fcntl
        if function is not None:
            if function(self.fd, F_OFD_SETLK, _FLOCK.pack(F_WRLCK, os.SEEK_SET, offset, 1, 0)) == 0:
                return True
            code = _get_errno()
        else:
            try:
                fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
                return True
            except OSError as exc:
                code = exc.errno
        return False if code in (errno.EACCES, errno.EAGAIN) else None

    def unlock(self, offset: int) -> None:
        """Give up the lock on the byte at ``offset`` (not an error if not held)."""
        function = self._fcntl
        if function is not None:
            function(self.fd, F_OFD_SETLK, _FLOCK.pack(F_UNLCK, os.SEEK_SET, offset, 1, 0))
            return
        with contextlib.suppress(OSError):
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, offset)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


_files: dict[str, LeaseFile] = {}
_files_lock = threading.Lock()


def lease_file(path: str) -> LeaseFile:
    """This process's one open :class:`LeaseFile` at ``path`` (``OSError``: it cannot be
    opened)."""
    found = _files.get(path)
    if found is None:
        with _files_lock:
            found = _files.get(path)
            if found is None:
                found = _files[path] = LeaseFile(path)
    return found


def after_fork() -> None:
    """In a forked child: close the lease files inherited from the parent (their open file
    description locks are the parent's) and forget them; the child opens its own."""
    global _files_lock
    _files_lock = threading.Lock()
    files = list(_files.values())
    _files.clear()
    for file in files:
        file.close()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=after_fork)
