"""File system calls that never wait for the disk, so they may run on the event loop.

A thread hop costs a request more CPU than the system calls it carries (a small
file's open, read and close: a few µs; the hop around them: ~40 µs of submit, wake-up
and callback, bench/RESULTS.md). When the kernel's caches hold everything a call
needs, it is made here directly:

- names are looked up with `openat2(RESOLVE_CACHED)`, which answers EAGAIN instead of
  reading a directory from disk;
- file contents are read with `preadv(RWF_NOWAIT)`, which answers EAGAIN instead of
  waiting for a page (and the file is opened `O_NOATIME`: no inode write either);
- `fstat` of an open descriptor needs the inode, which an open already holds.

Each function answers None where the caches fall short (or the kernel lacks the
calls: before Linux 5.12, or not Linux): the caller then does the same work in a
thread. Errors that need no disk (a missing name) are raised as usual.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Callable

_SYS_OPENAT2 = 437  # the same number on every Linux architecture
_AT_FDCWD = -100
_RESOLVE_CACHED = 0x20
_O_NOATIME = getattr(os, "O_NOATIME", 0)
_RWF_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)
_CACHE_MISS = frozenset({errno.EAGAIN, errno.EWOULDBLOCK})
SMALL = 64 << 10  # files up to this size are read whole on the event loop


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _load_syscall() -> Callable[..., int] | None:
    if os.uname().sysname != "Linux" or _RWF_NOWAIT is None:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syscall = libc.syscall
    except (OSError, AttributeError):
        return None
    syscall.restype = ctypes.c_long
    return syscall


_syscall: Callable[..., int] | None = _load_syscall()
_READ = _OpenHow(os.O_RDONLY | os.O_CLOEXEC | _O_NOATIME, 0, _RESOLVE_CACHED)
_PATH = _OpenHow(os.O_PATH | os.O_CLOEXEC, 0, _RESOLVE_CACHED) if hasattr(os, "O_PATH") else None
_READ_HOW = ctypes.byref(_READ)
_PATH_HOW = ctypes.byref(_PATH) if _PATH is not None else None
_HOW_SIZE = ctypes.sizeof(_OpenHow)


def _open(path: bytes, how: object) -> int | None:
    """A descriptor of `path`, or None if opening it could wait for the disk."""
    global _syscall
    if _syscall is None:
        return None
    fd = _syscall(_SYS_OPENAT2, _AT_FDCWD, path, how, _HOW_SIZE)
    if fd >= 0:
        return fd
    code = ctypes.get_errno()
    if code in _CACHE_MISS:
        return None
    if code in (errno.ENOSYS, errno.EINVAL):  # no openat2 (< 5.6), no RESOLVE_CACHED (< 5.12)
        _syscall = None
        return None
    if code == errno.EPERM:  # O_NOATIME on a file another user owns: the thread reads it
        return None
    raise OSError(code, os.strerror(code), os.fsdecode(path))


def stat_cached(path: bytes) -> os.stat_result | None:
    """`os.stat(path)` from the caches, or None."""
    if _PATH_HOW is None:
        return None
    fd = _open(path, _PATH_HOW)
    if fd is None:
        return None
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def open_cached(path: bytes) -> int | None:
    """A descriptor of `path` for reading, opened from the caches, or None."""
    return _open(path, _READ_HOW)


def read_cached(path: bytes) -> bytes | None:
    """The whole content of a regular file of at most `SMALL` bytes from the caches,
    or None (larger, not a regular file, or not all cached)."""
    fd = _open(path, _READ_HOW)
    if fd is None:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > SMALL:
            return None
        if info.st_size == 0:
            return b""
        buffer = bytearray(info.st_size)
        try:
            count = os.preadv(fd, [buffer], 0, _RWF_NOWAIT)  # type: ignore[arg-type]
        except OSError as error:
            if error.errno in _CACHE_MISS or error.errno == errno.EOPNOTSUPP:
                return None
            raise
        return bytes(buffer) if count == info.st_size else None
    finally:
        os.close(fd)
