"""One collector at a time across every process and replica sharing the storage.

The lease is one small object, `_gc/lease`, holding its owner's id (empty: free). It is
taken with the driver's conditional writes: `create` when there is none, `replace` on
the version we read to take over one that is free or that its holder stopped renewing
`LEASE_SECONDS` ago (by the storage's clock, not ours); renewed the same way, so a
holder whose lease was taken over learns it at its next renewal and stops (`keep`
runs before every batch of deletions).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from storage import paths
from storage.driver import PathNotFoundError, StorageDriver

LEASE_SECONDS = 60.0


class LeaseLostError(Exception):
    """Another collector took the lease over: stop before deleting anything more."""


@dataclass(slots=True)
class Lease:
    driver: StorageDriver
    owner: str
    version: str
    seconds: float
    renewed: float = field(default_factory=time.monotonic)

    async def keep(self) -> None:
        """Renew once a third of the lease has passed; LeaseLostError if it is not ours."""
        if time.monotonic() - self.renewed < self.seconds / 3:
            return
        version = await self.driver.replace(paths.gc_lease(), self.owner.encode(), self.version)
        if version is None:
            raise LeaseLostError(f"another collector took over the lease of {self.owner}")
        self.version, self.renewed = version, time.monotonic()

    async def release(self) -> None:
        await self.driver.replace(paths.gc_lease(), b"", self.version)


async def take(driver: StorageDriver, seconds: float = LEASE_SECONDS) -> Lease | None:
    """The lease, or None while another collector holds it."""
    key, owner = paths.gc_lease(), uuid.uuid4().hex
    version = await driver.create(key, owner.encode())
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
    return Lease(driver, owner, version, seconds)
