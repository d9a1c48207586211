"""The registry's storage: every store of the layout, over one driver."""

from __future__ import annotations

from storage.blobs import BlobStore
from storage.catalog import Catalog
from storage.deletions import Deletions
from storage.driver import StorageDriver
from storage.maintenance import MaintenanceFlag
from storage.manifests import ManifestStore
from storage.uploads import UploadStore
from storage.usage import Usage


class Store:
    def __init__(
        self,
        driver: StorageDriver,
        pull_interval: float = 3600.0,
        touch_every: float = 0.0,
    ) -> None:
        """`pull_interval`: how often one process records a pull of a manifest (`gc.grace`);
        `touch_every`: how long a process may skip re-touching a blob it touched (the
        collector allows for it: a tenth of `gc.grace`)."""
        self.driver = driver
        self.catalog = Catalog(driver)
        self.deletions = Deletions(driver)
        self.blobs = BlobStore(driver, self.catalog, self.deletions, touch_every)
        self.uploads = UploadStore(driver, self.blobs)
        self.manifests = ManifestStore(
            driver, self.blobs, self.catalog, self.deletions, pull_interval
        )
        self.usage = Usage(driver, self.blobs, self.manifests)
        self.maintenance = MaintenanceFlag(driver)

    async def close(self) -> None:
        await self.manifests.pulls.close()
        await self.driver.close()
