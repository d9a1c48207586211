"""Drivers for tests: a fresh one of each kind, and a second one on the same storage."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from registry.config import S3Config
from registry.drivers import s3_settings
from storage.driver import FileInfo, StorageDriver, Versioned, Writer
from storage.filesystem import FilesystemDriver
from storage.memory import MemoryDriver
from storage.s3 import S3Driver
from tests.support.seaweedfs import SeaweedFS, unique_prefix


def keys_asked(driver: StorageDriver, method: str, mp: pytest.MonkeyPatch) -> list[str]:
    """The keys `driver.<method>` is called with from now on (the calls go through)."""
    asked: list[str] = []
    call = getattr(driver, method)

    async def recorded(key: str, *args: Any) -> Any:
        asked.append(key)
        return await call(key, *args)

    mp.setattr(driver, method, recorded)
    return asked


def make_driver(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> StorageDriver:
    """A fresh, empty driver of `kind` ("memory", "filesystem" or "s3")."""
    if kind == "memory":
        return MemoryDriver()
    if kind == "s3":
        seaweedfs: SeaweedFS = request.getfixturevalue("seaweedfs")
        section = seaweedfs.storage_config(request.getfixturevalue("s3_bucket"), unique_prefix())
        return S3Driver(s3_settings(S3Config(**section["s3"])))
    return FilesystemDriver(tmp_path / "data")


class InterleavingDriver(StorageDriver):
    """A memory driver as another process sees it: each call first yields to the event
    loop a random number of times, so concurrent requests interleave between storage
    calls as they do over a backend that blocks (the memory driver never does)."""

    def __init__(self, inner: MemoryDriver) -> None:
        self._inner = inner
        self._random = random.Random(id(self))
        self.name = inner.name

    async def _pause(self) -> None:
        for _ in range(self._random.randrange(4)):
            await asyncio.sleep(0)

    async def get(self, key: str) -> bytes:
        await self._pause()
        return await self._inner.get(key)

    async def put(self, key: str, data: bytes) -> None:
        await self._pause()
        await self._inner.put(key, data)

    def reader(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        return self._inner.reader(key, offset, length)

    async def writer(self, key: str, append: bool = False) -> Writer:
        await self._pause()
        return await self._inner.writer(key, append)

    async def stat(self, key: str) -> FileInfo:
        await self._pause()
        return await self._inner.stat(key)

    async def list(self, prefix: str) -> list[str]:
        await self._pause()
        return await self._inner.list(prefix)

    async def delete(self, key: str) -> None:
        await self._pause()
        await self._inner.delete(key)

    async def scan(self, prefix: str) -> list[FileInfo]:
        await self._pause()
        return await self._inner.scan(prefix)

    async def delete_many(self, keys: list[str]) -> None:
        await self._pause()
        await self._inner.delete_many(keys)

    async def read_versioned(self, key: str) -> Versioned:
        await self._pause()
        return await self._inner.read_versioned(key)

    async def create(self, key: str, data: bytes, durable: bool = True) -> str | None:
        await self._pause()
        return await self._inner.create(key, data, durable)

    async def replace(self, key: str, data: bytes, version: str) -> str | None:
        await self._pause()
        return await self._inner.replace(key, data, version)


def twin(driver: StorageDriver) -> StorageDriver:
    """A second driver on the same storage, as another process would have."""
    if isinstance(driver, FilesystemDriver):
        return FilesystemDriver(driver.root)
    if isinstance(driver, S3Driver):
        return S3Driver(driver.settings)
    assert isinstance(driver, MemoryDriver)
    return InterleavingDriver(driver)
