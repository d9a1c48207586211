"""The registry's storage: every store of the layout, over one driver."""

from __future__ import annotations

from storage.blobs import BlobStore
from storage.catalog import Catalog
from storage.driver import StorageDriver
from storage.manifests import ManifestStore
from storage.uploads import UploadStore


class Store:
    def __init__(self, driver: StorageDriver) -> None:
        self.driver = driver
        self.catalog = Catalog(driver)
        self.blobs = BlobStore(driver, self.catalog)
        self.uploads = UploadStore(driver, self.blobs)
        self.manifests = ManifestStore(driver, self.blobs, self.catalog)

    async def close(self) -> None:
        await self.driver.close()
