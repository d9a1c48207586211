"""Keep the C allocator from hoarding the big buffers uploads pass through.

glibc serves allocations above a threshold with mmap and unmaps them on free, but
after the first such free it raises the threshold to that size, so later
multi-megabyte buffers (upload batches, S3 parts) come from heap arenas that keep
their pages. Fixing the threshold keeps a process's memory flat: every big buffer
goes back to the system when freed. No-op where the C library is not glibc.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util

_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 20


def return_big_buffers_to_the_system() -> bool:
    """Fix glibc's mmap threshold at 1 MiB; True if it was applied."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    with contextlib.suppress(OSError, AttributeError):
        return bool(ctypes.CDLL(name).mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    return False
