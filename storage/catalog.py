"""Which repositories exist: one marker key per repository, listed flat and sorted."""

from __future__ import annotations

from storage import paths
from storage.driver import StorageDriver


class Catalog:
    def __init__(self, driver: StorageDriver) -> None:
        self._driver = driver
        # Repositories are never removed, so "known to exist" can be remembered safely.
        self._known: set[str] = set()

    async def add(self, name: str) -> None:
        if name in self._known:
            return
        marker = paths.catalog_marker(name)
        if not await self._driver.exists(marker):
            await self._driver.put(marker, b"")
        self._known.add(name)

    async def exists(self, name: str) -> bool:
        if name in self._known:
            return True
        if await self._driver.exists(paths.catalog_marker(name)):
            self._known.add(name)
            return True
        return False

    async def names(self) -> list[str]:
        entries = await self._driver.list(paths.catalog_dir())
        return sorted(paths.name_from_catalog_entry(entry) for entry in entries)
