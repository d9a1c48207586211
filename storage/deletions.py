"""The deletion generation: how every process learns that something it may have cached
was deleted, by any process or replica.

Only deletions change what the read caches hold (a manifest revision, a repository's
link to a blob, a vouched blob): content never changes under its digest, and a PUT
only adds. So each cache entry keeps the generation it was read under, and a hit
counts only while that is still the current one. A deletion (manifest or blob
DELETE, retention, the collector's sweep) calls `published()` after its removals and
before it answers: it writes a fresh value to `_gc/deletions`.

`current()` returns a value read by a read that *began after the caller asked*, so
the bound is zero: a request that starts after a deletion answered anywhere never
sees what it deleted. Concurrent callers share reads (a caller that arrives while a
read is under way waits for the next one, which serves everyone waiting), so under
load one small GET answers a whole batch of requests in place of their own reads;
alone, a request pays one GET. Why a hit is exact: a fill reads the generation before
the data it caches; if the deletion's write came before the hit's generation read
began, that read sees a new value unless the entry was filled under it, hence read
after the removal. A process killed between its removals and its write leaves other
processes a stale entry: `MAX_AGE` bounds that case.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from storage import paths
from storage.driver import PathNotFoundError, StorageDriver

MAX_AGE = 60.0  # no entry outlives this, whatever a crash left unpublished


class Deletions:
    def __init__(self, driver: StorageDriver) -> None:
        self._driver = driver
        self._stored = b""  # the value of `_gc/deletions` (b"" before any deletion)
        self._began = -float("inf")  # monotonic time the last completed read began
        self._reading: asyncio.Future[None] | None = None

    async def current(self) -> bytes:
        """The generation as of a read that began after this call did."""
        asked = time.monotonic()
        while self._began < asked:
            if self._reading is None:
                self._reading = asyncio.ensure_future(self._read())
            reading = self._reading
            try:
                await asyncio.shield(reading)
            finally:
                if reading.done() and self._reading is reading:
                    self._reading = None
        return self._stored

    async def _read(self) -> None:
        began = time.monotonic()
        try:
            stored = await self._driver.get(paths.deletions())
        except PathNotFoundError:
            stored = b""
        if began > self._began:
            self._stored, self._began = stored, began

    async def published(self) -> None:
        """Tell every process that something was deleted; call after the removals."""
        await self._driver.put(paths.deletions(), uuid.uuid4().hex.encode())


def fresh(stored_at: float, max_age: float = MAX_AGE) -> bool:
    """Whether an entry cached at monotonic time `stored_at` is young enough to use."""
    return time.monotonic() - stored_at < max_age
