"""Which repositories exist: one marker key per repository, listed flat and sorted.

The collector removes the marker of a repository it emptied, so nothing here is
remembered. Writers store content first and the marker after it (`add`); the collector
deletes the marker first and then looks for content (putting the marker back if it
finds any), so a repository holding content always ends up listed.
"""

from __future__ import annotations

from oci.references import is_name
from storage import paths
from storage.driver import StorageDriver


class Catalog:
    def __init__(self, driver: StorageDriver) -> None:
        self._driver = driver

    async def add(self, name: str) -> None:
        """List `name`; call after storing its content."""
        marker = paths.catalog_marker(name)
        if not await self._driver.exists(marker):
            await self._driver.put(marker, b"")

    async def remove(self, name: str) -> None:
        await self._driver.delete(paths.catalog_entry(name))

    async def exists(self, name: str) -> bool:
        return await self._driver.exists(paths.catalog_marker(name))

    async def names(self) -> list[str]:
        """Sorted; an entry that names no valid repository (placed by hand, or not
        UTF-8 on a filesystem) is left out, as it could never be pulled."""
        entries = await self._driver.list(paths.catalog_dir())
        names = (paths.name_from_catalog_entry(entry) for entry in entries)
        return sorted(name for name in names if is_name(name))
