"""The deletion generation: how every process learns, within a bound, that something
it may have cached was deleted.

Only deletions change what the read caches hold (a manifest revision, a repository's
link to a blob, a vouched blob): content never changes under its digest, and a PUT
only adds. So each cache entry keeps the `Generation` it was read under, and a hit
counts only while that is still the current one. A deletion (manifest or blob
DELETE, retention, the collector's sweep) calls `published()` after its removals
and before it answers: that bumps this process's own counter at once (a DELETE then
GET on the same process misses) and writes a fresh value to `_gc/deletions`, which
every process reads again when its last read is `check_every` seconds old.

Bound: a deletion answered at time t is seen by every process by t + `check_every`
(1 s) plus one storage read. Why it holds: a fill reads the generation before the
data it caches. A hit at time T on process P means P's last read of the generation
began after T - `check_every`; if that was after the deletion's write, P's current
generation differs from that of any entry filled before it, and any entry filled
after it read the data after the removal. A process killed between its removals and
its write leaves other processes a stale entry: `MAX_AGE` bounds that case.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import NamedTuple

from storage import paths
from storage.driver import PathNotFoundError, StorageDriver

CHECK_EVERY = 1.0
MAX_AGE = 60.0  # no entry outlives this, whatever a crash left unpublished


class Generation(NamedTuple):
    stored: bytes  # the value of `_gc/deletions` (b"" before any deletion)
    local: int  # this process's deletions


class Deletions:
    def __init__(self, driver: StorageDriver, check_every: float = CHECK_EVERY) -> None:
        self._driver = driver
        self._check_every = check_every
        self._stored = b""
        self._local = 0
        self._checked = -float("inf")  # monotonic time the last read began
        self._reading: asyncio.Future[None] | None = None

    async def current(self) -> Generation:
        """The generation now: read from storage again if the last read is too old."""
        if time.monotonic() - self._checked >= self._check_every:
            if self._reading is None:  # one read at a time; the others wait for it
                self._reading = asyncio.ensure_future(self._read())
            reading = self._reading
            try:
                await asyncio.shield(reading)
            finally:
                if reading.done() and self._reading is reading:
                    self._reading = None
        return Generation(self._stored, self._local)

    async def _read(self) -> None:
        began = time.monotonic()
        try:
            stored = await self._driver.get(paths.deletions())
        except PathNotFoundError:
            stored = b""
        self._stored, self._checked = stored, began

    async def published(self) -> None:
        """Tell every process that something was deleted; call after the removals."""
        self._local += 1
        await self._driver.put(paths.deletions(), uuid.uuid4().hex.encode())


def fresh(stored_at: float, max_age: float = MAX_AGE) -> bool:
    """Whether an entry cached at monotonic time `stored_at` is young enough to use."""
    return time.monotonic() - stored_at < max_age
