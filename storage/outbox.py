"""The event outbox: small batch objects of events, written before a request answers.

    _events/outbox/<ns>-<process>-<seq>   a JSON list of events (one write, atomic)
    _events/cursors/<endpoint>            what an endpoint has taken (registry.events.deliver)

Batch names sort in the order they were written by one process (a time in nanoseconds,
never going back within a process, then a sequence number), and roughly in time across
processes. Readers take a batch whole or not at all (`put` is atomic).
"""

from __future__ import annotations

import itertools
import json
import os
import time
import uuid
from typing import Any

from storage import paths
from storage.driver import PathNotFoundError, StorageDriver

Event = dict[str, Any]
SIZE_REFRESH_SECONDS = 2.0


class OutboxFullError(Exception):
    """The outbox holds its bound of batches: the events were not stored."""


class Outbox:
    def __init__(self, driver: StorageDriver, max_batches: int) -> None:
        self.driver = driver
        self.max_batches = max_batches
        self.process = f"{os.getpid()}.{uuid.uuid4().hex[:8]}"
        self._sequence = itertools.count()
        self._last_ns = 0
        self._size = 0
        self._size_read_at = float("-inf")

    async def append(self, events: list[Event]) -> str:
        """Store one batch; raises `OutboxFullError` when the outbox is at its bound (its
        size is re-listed at most every `SIZE_REFRESH_SECONDS`, so it may run over a little)."""
        if await self._approximate_size() >= self.max_batches:
            raise OutboxFullError(f"the event outbox holds {self._size} batches")
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        name = f"{self._last_ns:020d}-{self.process}-{next(self._sequence):010d}"
        await self.driver.put(paths.outbox_batch(name), json.dumps(events).encode())
        self._size += 1
        return name

    async def _approximate_size(self) -> int:
        now = time.monotonic()
        if now - self._size_read_at >= SIZE_REFRESH_SECONDS:
            self._size = len(await self.batches())
            self._size_read_at = now
        return self._size

    async def batches(self) -> list[str]:
        """Names of the stored batches, oldest first."""
        return sorted(await self.driver.list(paths.outbox_dir()))

    async def read(self, name: str) -> list[Event] | None:
        """The batch's events; None if it is gone or was never whole (a write cut off, which
        some S3 servers leave as an empty object: its requests answered with the failure)."""
        try:
            events = json.loads(await self.driver.get(paths.outbox_batch(name)))
        except (PathNotFoundError, ValueError):
            return None
        return events if isinstance(events, list) else None

    async def remove(self, name: str) -> None:
        await self.driver.delete(paths.outbox_batch(name))
