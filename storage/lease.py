"""One holder at a time across every process and replica sharing the storage.

A lease is one small object (the collector's `_gc/lease`, the webhook deliverer's
`_events/lease`) holding its owner's id (empty: free). It is taken with the driver's
conditional writes: `create` when there is none, `replace` on the version we read to
take over one that is free or that its holder stopped renewing `LEASE_SECONDS` ago (by
the storage's clock, not ours); renewed the same way, so a holder whose lease was taken
over learns it at its next renewal and stops (its holder calls `keep` before each step
of its work).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

from storage.driver import PathNotFoundError, StorageDriver

LEASE_SECONDS = 60.0


class LeaseLostError(Exception):
    """Another process took the lease over: stop before doing anything more."""


@dataclass(slots=True)
class Lease:
    driver: StorageDriver
    key: str
    owner: str
    version: str
    seconds: float
    renewed: float = field(default_factory=time.monotonic)

    # One renewal at a time: two at once would replace the same version, and one would fail.
    renewing: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def keep(self) -> None:
        """Renew once a third of the lease has passed; LeaseLostError if it is not ours."""
        async with self.renewing:
            if time.monotonic() - self.renewed < self.seconds / 3:
                return
            version = await self.driver.replace(self.key, self.owner.encode(), self.version)
            if version is None:
                raise LeaseLostError(f"another process took over {self.key} from {self.owner}")
            self.version, self.renewed = version, time.monotonic()

    async def release(self) -> None:
        await self.driver.replace(self.key, b"", self.version)


async def held(driver: StorageDriver, key: str, seconds: float = LEASE_SECONDS) -> bool:
    """Whether a process holds the lease `key` now (a look only: `take` decides)."""
    try:
        current = await driver.read_versioned(key)
    except PathNotFoundError:
        return False
    return bool(current.data) and current.age < seconds


async def take(
    driver: StorageDriver, key: str, seconds: float = LEASE_SECONDS, durable: bool = True
) -> Lease | None:
    """The lease `key`, or None while another process holds it. `durable=False` when it
    is made (see `StorageDriver.create`): for a lease taken on the way to a client's
    first byte, whose loss in a crash costs at most one more run of its work."""
    owner = uuid.uuid4().hex
    version = await driver.create(key, owner.encode(), durable)
    if version is None:
        try:
            current = await driver.read_versioned(key)
        except PathNotFoundError:
            return None  # released and removed meanwhile: the next run takes it
        if current.data and current.age < seconds:
            return None
        version = await driver.replace(key, owner.encode(), current.version)
        if version is None:
            return None
    return Lease(driver, key, owner, version, seconds)
