"""The event outbox: segments of event records, each record stored before the requests
whose events it holds answer.

    _events/outbox/<ns>-<process>-<seq>   a segment: records, one a line
    _events/cursors/<endpoint>            what an endpoint has taken (registry.events.deliver)

A record is one group commit of events: `<count> <JSON list of the events>\\n`. Where the
storage appends in place (the filesystem: `StorageDriver.open_log`), a process appends
its records to one segment it owns, fdatasync'ed each (one write and one sync a group
commit: no file created, renamed or listed), and starts another past `SEGMENT_BYTES`;
elsewhere (S3) each record is a segment of its own, written whole with `put`.

Segment names sort in the order one process made them (a time in nanoseconds, never
going back within a process, then a sequence number), and roughly in time across
processes; a record is named by its segment and the offset of its end, so the records
of one process sort in the order they were written. Readers take only whole lines: a
record cut off by a crash (its requests never answered) is skipped. A segment is removed
once every endpoint has taken it and its writer has let it go (`delete_closed`: a live
process's segment is never removed under it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from storage import paths
from storage.driver import AppendLog, PathNotFoundError, StorageDriver

log = logging.getLogger("dockyard")

Event = dict[str, Any]
SIZE_REFRESH_SECONDS = 2.0
SEGMENT_BYTES = 1 << 20  # a log segment takes no more records past this size
SYNC_SECONDS = 0.1  # with `sync_before_answer` off: a record is on disk this long after


class OutboxFullError(Exception):
    """The outbox holds its bound of segments: the events were not stored."""


@dataclass(frozen=True, slots=True)
class Record:
    id: str  # "<segment>:<end offset>", in the order its process wrote them
    count: int  # events in it
    raw: bytes  # the JSON list of its events

    def events(self) -> list[Event]:
        events = orjson.loads(self.raw)
        return events if isinstance(events, list) else []


@dataclass(frozen=True, slots=True)
class Segment:
    name: str
    records: list[Record]  # whole records from where the read started
    size: int  # bytes the segment held when read, a cut-off record included
    end: int  # offset just past its last whole record


def producer(segment_or_record: str) -> str:
    """The process that wrote a segment or record."""
    return segment_or_record.split("-")[1]


def position(record_id: str) -> tuple[str, int]:
    """(segment, end offset) of a record (a whole segment: offset -1, all of it)."""
    segment, _, end = record_id.partition(":")
    return segment, int(end) if end else -1


def encode(events: list[Event]) -> bytes:
    return b"%d %s\n" % (len(events), orjson.dumps(events))


def _records(segment: str, data: bytes, start: int) -> tuple[list[Record], int]:
    """The whole records of `data` (read from offset `start`), and where they end."""
    records: list[Record] = []
    offset = 0
    while (newline := data.find(b"\n", offset)) >= 0:
        line = data[offset:newline]
        offset = newline + 1
        count, _, raw = line.partition(b" ")
        if count.isdigit() and raw.startswith(b"["):
            records.append(Record(f"{segment}:{start + offset:012d}", int(count), raw))
    return records, start + offset


class Outbox:
    def __init__(
        self, driver: StorageDriver, max_segments: int, sync_before_answer: bool = False
    ) -> None:
        self.driver = driver
        self.max_segments = max_segments
        self.sync_before_answer = sync_before_answer
        self.process = f"{os.getpid()}.{uuid.uuid4().hex[:8]}"
        self._sequence = itertools.count()
        self._last_ns = 0
        self._size = 0
        self._size_read_at = float("-inf")
        self._log: AppendLog | None = None
        self._unsynced = False
        self._syncer: asyncio.Task[None] | None = None

    async def append(self, events: list[Event]) -> None:
        """Store one record; raises `OutboxFullError` when a new segment would pass the
        bound (the number of segments is re-listed at most every `SIZE_REFRESH_SECONDS`
        for whole-object segments, so it may run over a little)."""
        record = encode(events)
        current = self._log
        if current is None or current.size >= SEGMENT_BYTES:
            if current is not None:
                self._log = None
                await current.close()
            name = await self._new_segment_name()
            if not self.driver.appends_in_place:
                await self.driver.put(paths.outbox_segment(name), record)
                return
            current = self._log = await self.driver.open_log(paths.outbox_segment(name))
        try:
            await current.append(record, sync=self.sync_before_answer)
        except BaseException:
            self._log = None  # the log closed itself: the next record starts another
            raise
        if not self.sync_before_answer:
            self._unsynced = True
            if self._syncer is None or self._syncer.done():
                self._syncer = asyncio.create_task(self._sync_soon())

    async def _sync_soon(self) -> None:
        """Sync the log `SYNC_SECONDS` after an append, while appends come."""
        while self._unsynced:
            await asyncio.sleep(SYNC_SECONDS)
            self._unsynced = False
            if (current := self._log) is not None:
                try:
                    await current.sync()
                except Exception as error:  # the records are written; a later sync may work
                    log.warning("syncing the event outbox failed: %s", error)

    async def _new_segment_name(self) -> str:
        now = time.monotonic()
        # Log segments are a megabyte each: few enough to list for each new one.
        if self.driver.appends_in_place or now - self._size_read_at >= SIZE_REFRESH_SECONDS:
            self._size, self._size_read_at = len(await self.segments()), now
        if self._size >= self.max_segments:
            raise OutboxFullError(f"the event outbox holds {self._size} segments")
        self._size += 1
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        return f"{self._last_ns:020d}-{self.process}-{next(self._sequence):010d}"

    async def segments(self) -> list[tuple[str, int]]:
        """The stored segments, oldest first: (name, size)."""
        found = await self.driver.scan(paths.outbox_dir())
        return sorted((info.key.rsplit("/", 1)[-1], info.size) for info in found)

    async def read(self, name: str, start: int = 0) -> Segment:
        """The segment's whole records from offset `start` (none if it is gone)."""
        data = bytearray()
        try:
            async for piece in self.driver.reader(paths.outbox_segment(name), start):
                data += piece
        except PathNotFoundError:
            return Segment(name, [], start, start)
        records, end = _records(name, bytes(data), start)
        return Segment(name, records, start + len(data), end)

    async def remove(self, name: str, size: int) -> bool:
        """Remove a segment of `size` bytes, unless its writer still holds it or it has
        grown since; whether it is gone."""
        return await self.driver.delete_closed(paths.outbox_segment(name), size)

    async def close(self) -> None:
        if self._syncer is not None:
            self._syncer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._syncer
        if self._log is not None:
            await self._log.close()  # it syncs first
            self._log = None
