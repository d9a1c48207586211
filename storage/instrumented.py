"""A driver that times every storage action of the driver it wraps.

The registry wraps its driver once (when metrics are on) instead of every driver
timing itself. `observe(action, seconds)` is called once per action; a stream read
is timed to its first piece (the backend's latency, not the client's download
speed) and a writer's `write`, `close`, `commit` and `cancel` are timed each.
Methods not listed here pass through untimed. (Timing is written out in each
method: a context manager object per call cost more than the rest of the timing.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Sequence
from time import perf_counter
from typing import Any

from storage.driver import AppendLog, FileInfo, StorageDriver, Versioned, Writer

Observe = Callable[[str, float], None]


class InstrumentedWriter(Writer):
    def __init__(self, writer: Writer, observe: Observe) -> None:
        self._writer = writer
        self._observe = observe

    @property  # type: ignore[override]
    def size(self) -> int:
        return self._writer.size

    @property
    def version(self) -> str:
        return self._writer.version

    def chunks(self) -> AsyncIterator[bytes]:
        return self._writer.chunks()

    async def write(self, data: bytes) -> None:
        started = perf_counter()
        try:
            await self._writer.write(data)
        finally:
            self._observe("write", perf_counter() - started)

    async def close(self) -> None:
        started = perf_counter()
        try:
            await self._writer.close()
        finally:
            self._observe("close", perf_counter() - started)

    async def commit(self, destination: str) -> None:
        started = perf_counter()
        try:
            await self._writer.commit(destination)
        finally:
            self._observe("commit", perf_counter() - started)

    async def cancel(self) -> None:
        started = perf_counter()
        try:
            await self._writer.cancel()
        finally:
            self._observe("cancel", perf_counter() - started)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer, name)


class InstrumentedDriver(StorageDriver):
    def __init__(self, driver: StorageDriver, observe: Observe) -> None:
        self.driver = driver
        self.name = driver.name
        self.appends_in_place = driver.appends_in_place
        self.bulk_concurrency = driver.bulk_concurrency
        self._observe = observe

    async def get(self, key: str) -> bytes:
        started = perf_counter()
        try:
            return await self.driver.get(key)
        finally:
            self._observe("get", perf_counter() - started)

    async def put(self, key: str, data: bytes) -> None:
        started = perf_counter()
        try:
            await self.driver.put(key, data)
        finally:
            self._observe("put", perf_counter() - started)

    async def reader(
        self, key: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        pieces = self.driver.reader(key, offset, length)
        try:
            started = perf_counter()
            try:
                first = await anext(pieces, None)
            finally:
                self._observe("read", perf_counter() - started)
            if first is None:
                return
            yield first
            async for piece in pieces:
                yield piece
        finally:
            if (aclose := getattr(pieces, "aclose", None)) is not None:
                await aclose()  # a client that stops reading releases the file or connection

    async def writer(self, key: str, append: bool = False) -> Writer:
        started = perf_counter()
        try:
            writer = await self.driver.writer(key, append)
        finally:
            self._observe("open_writer", perf_counter() - started)
        return InstrumentedWriter(writer, self._observe)

    async def stat(self, key: str) -> FileInfo:
        started = perf_counter()
        try:
            return await self.driver.stat(key)
        finally:
            self._observe("stat", perf_counter() - started)

    async def list(self, prefix: str) -> list[str]:
        started = perf_counter()
        try:
            return await self.driver.list(prefix)
        finally:
            self._observe("list", perf_counter() - started)

    async def delete(self, key: str) -> None:
        started = perf_counter()
        try:
            await self.driver.delete(key)
        finally:
            self._observe("delete", perf_counter() - started)

    async def exists(self, key: str) -> bool:
        started = perf_counter()
        try:
            return await self.driver.exists(key)
        finally:
            self._observe("exists", perf_counter() - started)

    async def redirect_url(self, key: str) -> str | None:
        return await self.driver.redirect_url(key)

    # The collector's calls (scan, batch deletes and markers, its lease) pass through untimed.
    async def scan(self, prefix: str) -> list[FileInfo]:
        return await self.driver.scan(prefix)

    async def delete_many(self, keys: list[str]) -> None:
        await self.driver.delete_many(keys)

    async def put_markers(self, keys: list[str]) -> None:
        await self.driver.put_markers(keys)

    async def delete_then(self, groups: Sequence[tuple[list[str], list[str]]]) -> None:
        await self.driver.delete_then(groups)

    async def scan_named(self, prefix: str, names: Collection[str], leaf: str) -> list[FileInfo]:
        return await self.driver.scan_named(prefix, names, leaf)

    async def scan_leaves(self, prefix: str, name: str) -> list[FileInfo]:
        return await self.driver.scan_leaves(prefix, name)

    async def put_visible(self, key: str, data: bytes) -> None:
        await self.driver.put_visible(key, data)

    async def read_versioned(self, key: str) -> Versioned:
        return await self.driver.read_versioned(key)

    async def create(self, key: str, data: bytes, durable: bool = True) -> str | None:
        return await self.driver.create(key, data, durable)

    async def replace(self, key: str, data: bytes, version: str) -> str | None:
        return await self.driver.replace(key, data, version)

    async def open_log(self, key: str) -> AppendLog:
        return await self.driver.open_log(key)

    async def delete_closed(self, key: str, size: int) -> bool:
        return await self.driver.delete_closed(key, size)

    async def close(self) -> None:
        await self.driver.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.driver, name)
