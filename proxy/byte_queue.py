"""Chunks handed from one task to another, bounded in bytes (one producer, one consumer)."""

from __future__ import annotations

import asyncio
from collections import deque


class ByteQueue:
    """`put` waits while `limit` bytes or more wait to be taken; `take` hands over all
    that waits at once (fewer wake-ups than one chunk at a time). The producer ends it
    with `close` (the consumer sees the end) or `fail` (the consumer gets the error);
    a consumer that goes away `abandon`s it, and puts are dropped from then on."""

    def __init__(self, limit: int) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._limit = limit
        self._closed = False
        self._error: BaseException | None = None
        self._abandoned = False
        # Only one side ever waits: the queue cannot be both full and empty.
        self._waiter: asyncio.Future[None] | None = None

    @property
    def abandoned(self) -> bool:
        return self._abandoned

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        self._waiter = None

    def _wait(self) -> asyncio.Future[None]:
        self._waiter = asyncio.get_running_loop().create_future()
        return self._waiter

    def has_room(self) -> bool:
        return self._size < self._limit or self._abandoned

    async def wait_for_room(self) -> None:
        while not self.has_room():
            await self._wait()

    def put_nowait(self, chunk: bytes) -> None:
        """Queue `chunk` whatever the bound (for a last one: at most one chunk over)."""
        if not self._abandoned:
            self._chunks.append(chunk)
            self._size += len(chunk)
            self._wake()

    async def put(self, chunk: bytes) -> None:
        await self.wait_for_room()
        self.put_nowait(chunk)

    def close(self) -> None:
        self._closed = True
        self._wake()

    def fail(self, error: BaseException) -> None:
        """End the queue with `error`, dropping what the consumer has not taken (not
        once it is closed: the consumer gets all of it)."""
        if self._closed:
            return
        self._chunks.clear()
        self._size = 0
        self._error = error
        self._wake()

    def abandon(self) -> None:
        self._abandoned = True
        self._chunks.clear()
        self._size = 0
        self._wake()

    async def take(self) -> list[bytes] | None:
        """Everything queued (waiting for something); None at the end; raises the
        producer's error."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._closed:
                return None
            await self._wait()
        chunks = list(self._chunks)
        self._chunks.clear()
        self._size = 0
        self._wake()
        return chunks
