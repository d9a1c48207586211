"""Buffers for the part an S3 writer fills: in memory on a slot of a per-process
budget, or in an unnamed temporary file when the budget has no free slot."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, BinaryIO, TypeVar

from storage.driver import StorageUnavailableError

T = TypeVar("T")
InPool = Callable[..., Awaitable[Any]]
"""Runs a blocking function with its arguments in a thread pool."""


class BufferBudget:
    """Slots of one part buffer each that the S3 writers of a process share in memory."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.in_use = 0

    def try_acquire(self) -> bool:
        """Take a slot if one is free; never waits."""
        if self.in_use >= self.slots:
            return False
        self.in_use += 1
        return True

    def release(self) -> None:
        self.in_use -= 1


class PartBuffer(ABC):
    """The bytes of one part (at most `part_size`) on their way to the bucket."""

    @property
    @abstractmethod
    def size(self) -> int:
        """How many bytes the buffer holds."""

    @abstractmethod
    async def append(self, data: bytes | memoryview) -> None:
        """Add `data` at the end."""

    @abstractmethod
    async def send(self, call: Callable[[Any, int], Awaitable[T]]) -> T:
        """`call(body, length)` with a body of the buffered bytes that boto3 accepts."""

    @abstractmethod
    def chunks(self, size: int) -> AsyncIterator[bytes]:
        """The buffered bytes, in pieces of at most `size`."""

    @abstractmethod
    async def clear(self) -> None:
        """Drop the bytes, to fill the buffer again."""

    @abstractmethod
    def take(self, budget: BufferBudget) -> PartBuffer | None:
        """The bytes in a buffer of their own on a new slot of `budget`, this one left
        empty; None when there is no slot, or this buffer cannot hand its bytes over."""

    @abstractmethod
    async def close(self) -> None:
        """Free the buffer (once; later calls do nothing)."""


class MemoryBuffer(PartBuffer):
    """Bytes in memory, on a slot of the budget that the buffer gives back on close."""

    def __init__(self, budget: BufferBudget, data: bytearray | None = None) -> None:
        self._budget: BufferBudget | None = budget
        self._data = bytearray() if data is None else data

    @property
    def size(self) -> int:
        return len(self._data)

    async def append(self, data: bytes | memoryview) -> None:
        self._data += data

    async def send(self, call: Callable[[Any, int], Awaitable[T]]) -> T:
        return await call(self._data, len(self._data))

    async def chunks(self, size: int) -> AsyncIterator[bytes]:
        for start in range(0, len(self._data), size):
            yield bytes(self._data[start : start + size])

    async def clear(self) -> None:
        self._data = bytearray()

    def take(self, budget: BufferBudget) -> PartBuffer | None:
        if not budget.try_acquire():
            return None
        taken, self._data = MemoryBuffer(budget, self._data), bytearray()
        return taken

    async def close(self) -> None:
        self._data = bytearray()
        if self._budget is not None:
            self._budget.release()
            self._budget = None


class FileBuffer(PartBuffer):
    """Bytes in an unnamed temporary file, for a writer that found no free slot.

    Every file operation and the upload from the file run in the driver's pool, one
    after another: a caller cancelled while one runs leaves it running to its end, and
    the next (the close, at the latest) starts only then, so no two ever share the file.
    """

    def __init__(self, in_pool: InPool, file: BinaryIO) -> None:
        self._in_pool = in_pool
        self._file = file
        self._last: asyncio.Future[Any] | None = None
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    @classmethod
    async def create(cls, in_pool: InPool) -> FileBuffer:
        file = await cls._io(in_pool(tempfile.TemporaryFile))
        return cls(in_pool, file)

    @staticmethod
    async def _io(operation: Awaitable[T]) -> T:
        try:
            return await operation
        except OSError as error:
            raise StorageUnavailableError(f"part buffer file: {error}") from error

    async def _in_turn(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run `operation` after the previous one ended, to its end even if cancelled."""
        previous = self._last

        async def in_turn() -> T:
            if previous is not None:
                await asyncio.wait([previous])
            return await operation()

        self._last = turn = asyncio.ensure_future(in_turn())
        return await asyncio.shield(turn)

    async def append(self, data: bytes | memoryview) -> None:
        async def write() -> None:
            await self._io(self._in_pool(self._file.write, data))
            self._size += len(data)

        await self._in_turn(write)

    async def send(self, call: Callable[[Any, int], Awaitable[T]]) -> T:
        async def send() -> T:
            # The file holds exactly `size` bytes (it only grows by appends and is
            # truncated when cleared); boto3 reads it in its pool thread.
            await self._io(self._in_pool(self._file.seek, 0))
            return await call(self._file, self._size)

        return await self._in_turn(send)

    async def chunks(self, size: int) -> AsyncIterator[bytes]:
        def read(offset: int) -> bytes:
            self._file.flush()
            return os.pread(self._file.fileno(), min(size, self._size - offset), offset)

        async def read_in_pool(offset: int) -> bytes:
            return await self._io(self._in_pool(read, offset))

        for offset in range(0, self._size, size):
            yield await self._in_turn(functools.partial(read_in_pool, offset))

    async def clear(self) -> None:
        def truncate() -> None:
            self._file.seek(0)
            self._file.truncate()

        async def clear() -> None:
            await self._io(self._in_pool(truncate))
            self._size = 0

        await self._in_turn(clear)

    def take(self, budget: BufferBudget) -> PartBuffer | None:
        return None  # a spilled part is sent from its file before the writer goes on

    async def close(self) -> None:
        async def close() -> None:
            with contextlib.suppress(OSError):
                await self._in_pool(self._file.close)

        await self._in_turn(close)
