"""When each manifest of a repository was last pulled, for `retention`'s `keep_pulled_within`.

A pull is an empty object per manifest whose modification time is the time (the
storage's clock). Recording is cheap and never delays the GET: the write runs in
the background, at most `max_in_flight` at once (more are dropped and counted),
and a process writes a manifest's marker at most once per `interval` (`gc.grace`),
remembering its own recent writes in a bounded map (an optimisation only: nothing
depends on it). So a recorded time may be up to `interval` older than the last
pull. Other processes and replicas write the same marker; the latest write wins.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict

from oci.references import Digest
from storage import paths
from storage.driver import PathNotFoundError, StorageDriver

log = logging.getLogger("dockyard.pulls")

_REMEMBERED = 16384  # recent writes kept (a name of at most 255 bytes, a digest): < 8 MiB


class PullRecorder:
    def __init__(self, driver: StorageDriver, interval: float, max_in_flight: int = 64) -> None:
        self._driver = driver
        self._interval = interval
        self._max_in_flight = max_in_flight
        self._written: OrderedDict[tuple[str, Digest], float] = OrderedDict()
        self._in_flight: set[asyncio.Task[None]] = set()
        self.dropped = 0  # pulls not recorded because too many writes were in flight
        self.failed = 0  # writes the storage refused

    def record(self, name: str, digest: Digest) -> None:
        """Note a pull of `digest` from `name`; returns at once, the write runs apart."""
        key = (name, digest)
        now = time.monotonic()
        last = self._written.get(key)
        if last is not None and now - last < self._interval:
            return
        if len(self._in_flight) >= self._max_in_flight:
            self.dropped += 1
            return
        self._written[key] = now
        self._written.move_to_end(key)
        while len(self._written) > _REMEMBERED:
            self._written.popitem(last=False)
        task = asyncio.create_task(self._write(key))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _write(self, key: tuple[str, Digest]) -> None:
        name, digest = key
        try:
            await self._driver.put(paths.pulled_marker(name, digest), b"")
        except Exception as error:  # a lost pull time only keeps a tag longer
            self.failed += 1
            self._written.pop(key, None)  # the next pull tries again
            log.debug("recording a pull of %s@%s failed: %s", name, digest, error)

    async def last_pulled(self, name: str, digest: Digest) -> float | None:
        """When `digest` was last pulled from `name` (None: never, as far as recorded)."""
        try:
            return (await self._driver.stat(paths.pulled_marker(name, digest))).modified
        except PathNotFoundError:
            return None

    async def forget(self, name: str, digest: Digest) -> None:
        """Remove the record of a manifest that leaves the repository."""
        self._written.pop((name, digest), None)
        await self._driver.delete(paths.pulled_marker(name, digest))

    async def close(self) -> None:
        """Let the writes in flight finish (before the driver closes)."""
        await asyncio.gather(*self._in_flight, return_exceptions=True)
