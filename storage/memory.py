"""In-memory driver for fast tests: same contract as the others, nothing on disk."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from storage.driver import FileInfo, PathNotFoundError, StorageDriver, Writer, check_key


class MemoryWriter(Writer):
    def __init__(self, driver: MemoryDriver, key: str) -> None:
        self._driver = driver
        self._key = key
        self.size = len(driver.objects.get(key, b""))

    async def write(self, data: bytes) -> None:
        self._driver.objects[self._key] = self._driver.objects.get(self._key, b"") + data
        self._driver.modified[self._key] = time.time()
        self.size += len(data)

    async def close(self) -> None:
        pass

    async def commit(self, destination: str) -> None:
        await self._driver.put(destination, self._driver.objects.pop(self._key, b""))

    async def cancel(self) -> None:
        await self._driver.delete(self._key)


class MemoryDriver(StorageDriver):
    name = "memory"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.modified: dict[str, float] = {}

    async def get(self, key: str) -> bytes:
        try:
            return self.objects[check_key(key)]
        except KeyError:
            raise PathNotFoundError(key) from None

    async def put(self, key: str, data: bytes) -> None:
        self.objects[check_key(key)] = bytes(data)
        self.modified[key] = time.time()

    async def reader(
        self, key: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        data = await self.get(key)
        end = len(data) if length is None else offset + length
        yield data[offset:end]

    async def writer(self, key: str, append: bool = False) -> MemoryWriter:
        check_key(key)
        if not append:
            self.objects[key] = b""
        self.objects.setdefault(key, b"")
        return MemoryWriter(self, key)

    async def stat(self, key: str) -> FileInfo:
        data = await self.get(key)
        return FileInfo(key, len(data), self.modified.get(key, 0.0))

    async def list(self, prefix: str) -> list[str]:
        start = check_key(prefix) + "/"
        return sorted(
            {key[len(start) :].split("/", 1)[0] for key in self.objects if key.startswith(start)}
        )

    async def delete(self, key: str) -> None:
        check_key(key)
        for existing in [k for k in self.objects if k == key or k.startswith(key + "/")]:
            del self.objects[existing]
            self.modified.pop(existing, None)
