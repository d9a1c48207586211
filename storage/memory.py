"""In-memory driver for fast tests: same contract as the others, nothing on disk.

One process only, so a set of the keys with an open writer is the ownership."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from storage.driver import (
    FileInfo,
    PathNotFoundError,
    StorageDriver,
    Versioned,
    Writer,
    WriterBusyError,
    check_key,
)


class MemoryWriter(Writer):
    def __init__(self, driver: MemoryDriver, key: str) -> None:
        self._driver = driver
        self._key = key
        self.size = len(driver.objects[key])

    @property
    def version(self) -> str:
        return str(self.size)  # append-only while owned

    async def write(self, data: bytes) -> None:
        self._driver.objects[self._key] = self._driver.objects[self._key] + data
        self._driver.modified[self._key] = time.time()
        self.size += len(data)

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self._driver.objects[self._key]

    async def close(self) -> None:
        self._driver.writing.discard(self._key)

    async def commit(self, destination: str) -> None:
        await self._driver.put(destination, self._driver.objects.pop(self._key))
        await self.close()

    async def cancel(self) -> None:
        await self._driver.delete(self._key)
        await self.close()


class MemoryDriver(StorageDriver):
    name = "memory"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.modified: dict[str, float] = {}
        self.writing: set[str] = set()
        self._versions: dict[str, int] = {}
        self._written = 0

    async def get(self, key: str) -> bytes:
        try:
            return self.objects[check_key(key)]
        except KeyError:
            raise PathNotFoundError(key) from None

    async def put(self, key: str, data: bytes) -> None:
        self.objects[check_key(key)] = bytes(data)
        self.modified[key] = time.time()
        self._written += 1
        self._versions[key] = self._written

    def _version(self, key: str) -> str:
        return str(self._versions[key])

    async def read_versioned(self, key: str) -> Versioned:
        data = await self.get(key)
        return Versioned(data, self._version(key), time.time() - self.modified[key])

    async def create(self, key: str, data: bytes, durable: bool = True) -> str | None:
        if check_key(key) in self.objects:
            return None
        await self.put(key, data)
        return self._version(key)

    async def replace(self, key: str, data: bytes, version: str) -> str | None:
        if check_key(key) not in self.objects or self._version(key) != version:
            return None
        await self.put(key, data)
        return self._version(key)

    async def scan(self, prefix: str) -> list[FileInfo]:
        start = check_key(prefix) + "/"
        return [
            FileInfo(key, len(data), self.modified.get(key, 0.0))
            for key, data in sorted(self.objects.items())
            if key.startswith(start)
        ]

    async def reader(
        self, key: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        data = await self.get(key)
        end = len(data) if length is None else offset + length
        yield data[offset:end]

    async def writer(self, key: str, append: bool = False) -> MemoryWriter:
        check_key(key)
        if key in self.writing:
            raise WriterBusyError(key)
        if append and key not in self.objects:
            raise PathNotFoundError(key)
        if not append:
            await self.put(key, b"")
        self.writing.add(key)
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
            self._versions.pop(existing, None)
