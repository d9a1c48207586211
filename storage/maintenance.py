"""The maintenance flag: a small object in the storage that every process and replica reads.

While it is set the registry refuses writes (uploads, manifest PUTs, deletes) and the
background collector pauses; reads go on. Each process re-reads the flag at most every
`REFRESH_SECONDS` when it needs it, so a change reaches every process within that bound,
with no restart and no message between processes.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from storage import paths
from storage.driver import PathNotFoundError, StorageDriver

REFRESH_SECONDS = 2.0
DEFAULT_MESSAGE = "the registry is in maintenance mode: it is read-only for now"


@dataclass(frozen=True, slots=True)
class Maintenance:
    message: str
    since: float  # Unix time it was switched on


class MaintenanceFlag:
    """Reads and writes the flag; `state()` is a cached read (at most `REFRESH_SECONDS` old).

    `configured` (from `maintenance.readonly` in the config) holds the registry read-only
    whatever the storage says.
    """

    def __init__(self, driver: StorageDriver) -> None:
        self.driver = driver
        self.configured: Maintenance | None = None
        self._cached: Maintenance | None = None
        self._read_at = float("-inf")

    async def read(self) -> Maintenance | None:
        """The flag as stored now (a flag this version cannot parse counts as on)."""
        try:
            raw = await self.driver.get(paths.maintenance_flag())
        except PathNotFoundError:
            return None
        try:
            data = json.loads(raw)
            return Maintenance(message=str(data["message"]), since=float(data["since"]))
        except (ValueError, KeyError, TypeError):
            return Maintenance(message=DEFAULT_MESSAGE, since=0.0)

    async def state(self) -> Maintenance | None:
        if self.configured is not None:
            return self.configured
        now = time.monotonic()
        if now - self._read_at >= REFRESH_SECONDS:
            self._cached = await self.read()
            self._read_at = now
        return self._cached

    async def switch_on(self, message: str | None = None) -> Maintenance:
        state = Maintenance(message=message or DEFAULT_MESSAGE, since=time.time())
        await self.driver.put(paths.maintenance_flag(), json.dumps(asdict(state)).encode())
        self._read_at = float("-inf")
        return state

    async def switch_off(self) -> None:
        await self.driver.delete(paths.maintenance_flag())
        self._read_at = float("-inf")
