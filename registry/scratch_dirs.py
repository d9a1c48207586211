"""Scratch directories of one `dockyard serve` (its workers' published metrics, their
shared failed-login counters) in the system's temporary directory.

A server removes its own at exit, but one killed outright (kill -9, the OOM killer)
cannot, and a restarted container keeps its /tmp. So each directory is named after
the serving process (`dockyard-<kind>-<pid>-<random>`), and a server starting removes
those of its kind whose process is gone. A directory named with the starting server's
own PID is a dead one's too: in a container the server is PID 1 after every restart.
Directories of other users, and names of another shape, are left alone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator


def _prefix(kind: str) -> str:
    return f"dockyard-{kind}-"


def _alive(pid: int) -> bool:
    if pid == os.getpid():  # before this server made its own: a predecessor's
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_dead(kind: str) -> list[str]:
    """Remove the `kind` directories of servers no longer running; their paths."""
    prefix = _prefix(kind)
    removed: list[str] = []
    with os.scandir(tempfile.gettempdir()) as entries:
        for entry in entries:
            pid, separator, _ = entry.name.removeprefix(prefix).partition("-")
            if not entry.name.startswith(prefix) or not separator or not pid.isdigit():
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # another server starting removed it
                continue
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or _alive(int(pid)):
                continue
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
    return removed


@contextlib.contextmanager
def scratch_directory(kind: str) -> Iterator[str]:
    """A fresh directory for this server, removed at exit; dead servers' go first."""
    remove_dead(kind)
    directory = tempfile.mkdtemp(prefix=f"{_prefix(kind)}{os.getpid()}-")
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
