"""The storage driver interface: a small, dumb key/value store of byte streams.

Drivers know nothing about registries. Keys are relative, `/`-separated paths
built only by `storage.paths` from validated names and digests; drivers check
them again (`check_key`) as a second line of defence.

Contract every driver keeps:
- `put` and `Writer.commit` are atomic: a reader sees the old content or the new,
  never a part.
- A `Writer` opened with `append=True` resumes what an earlier writer (possibly in
  another process) left after `close()`; its bytes so far are readable with
  `reader()` on the writer's key until it is committed or cancelled. It raises
  `PathNotFoundError` when no writer was created on the key (`append=False`) or the
  last one committed or cancelled: a late request never revives a finished writer.
- One writer per key at a time, across processes and replicas: `writer()` owns the
  key's writer state until close, commit or cancel (or until its process dies), and
  raises `WriterBusyError` at once, never waiting, while another writer owns it.
- `Writer.commit` stores exactly the bytes `Writer.chunks()` streamed, even if the
  ownership was lost meanwhile (a stalled process whose lease expired).
- Blocking work (disk, network, SDK calls) runs off the event loop.
"""

from __future__ import annotations

import abc
import asyncio
import re
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass

# Size of the pieces `reader()` streams. Small enough to stay in the CPU's cache
# between the read and the socket send and to come from the heap rather than a fresh
# mmap (registry/malloc.py fixes the mmap threshold at 1 MiB): 256 KiB pieces cost
# a third to a half of the CPU per byte that 1 MiB pieces did. The S3 driver's large
# reads from a plain-HTTP endpoint come in 512 KiB pieces (storage/s3_plain_get.py says
# why); callers never rely on a piece's size.
READ_CHUNK = 256 << 10

_KEY = re.compile(r"[A-Za-z0-9._+=-]+(?:/[A-Za-z0-9._+=-]+)*")


class StorageError(Exception):
    """Base of the errors drivers raise."""


class PathNotFoundError(StorageError):
    def __init__(self, key: str) -> None:
        super().__init__(f"no such key: {key}")
        self.key = key


class StorageUnavailableError(StorageError):
    """The backend did not answer, or answered with a server-side failure."""


class StorageFullError(StorageError):
    """The backend has no space left (a full disk, an exhausted quota); what was being
    written is not stored, and writes work again once space is freed."""


class WriterBusyError(StorageError):
    """Another writer (in this process or another) owns the key's writer state."""

    def __init__(self, key: str) -> None:
        super().__init__(f"another writer owns {key}")
        self.key = key


class StorageLimitError(StorageError):
    """The backend cannot hold an object this large (the message says its limit)."""


class InvalidKeyError(StorageError, ValueError):
    pass


class KeyConflictError(StorageError):
    """The key cannot hold an object where the storage has real folders: a folder of
    other keys is there, or a key above it is an object (the filesystem)."""


def check_key(key: str) -> str:
    """Refuse keys that are not plain relative paths (no `..`, no empty parts)."""
    if not _KEY.fullmatch(key) or any(part in (".", "..") for part in key.split("/")):
        raise InvalidKeyError(f"invalid storage key {key!r}")
    return key


@dataclass(frozen=True, slots=True)
class FileInfo:
    key: str
    size: int
    modified: float


@dataclass(frozen=True, slots=True)
class Versioned:
    """A small object read together with what `replace` needs to change it safely."""

    data: bytes
    version: str
    age: float  # seconds since it was written, by the storage's own clock


class Writer(abc.ABC):
    """Appends bytes to a key that is not visible under its final name until commit."""

    size: int

    @property
    @abc.abstractmethod
    def version(self) -> str:
        """Names the bytes written so far: a later writer on the key with the same
        version holds the same bytes (lets a process trust a hash it kept)."""

    @abc.abstractmethod
    async def write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    def chunks(self) -> AsyncIterator[bytes]:
        """Stream the bytes written so far: exactly what `commit()` would store now."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Persist what was written so a later `writer(key, append=True)` can go on, and
        give up the ownership. Does nothing after commit or cancel."""

    @abc.abstractmethod
    async def commit(self, destination: str) -> None:
        """Make the bytes `chunks()` streams appear atomically at `destination`
        (replacing it); raises (storing nothing) if they cannot be those bytes."""

    @abc.abstractmethod
    async def cancel(self) -> None:
        """Discard everything written, including what earlier writers left."""


class AppendLog(abc.ABC):
    """An append-only object one process owns while it is open (`StorageDriver.open_log`)."""

    size: int

    @abc.abstractmethod
    async def append(self, data: bytes, sync: bool = True) -> None:
        """Add `data` at the end: readers in every process see it, and it outlives this
        process, when this returns; with `sync`, it is on disk too (it outlives the
        machine). A failure may leave part of it written: the log takes no more appends
        (open another)."""

    @abc.abstractmethod
    async def sync(self) -> None:
        """Put everything appended so far on disk."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Give up the ownership: nothing is appended any more."""


class StorageDriver(abc.ABC):
    """What the registry needs from a storage backend, and nothing more."""

    name: str
    appends_in_place = False  # whether `open_log` works
    # Independent calls worth keeping in flight at once in bulk work (the collector's
    # repositories and fan-out folders): each waits on the network (S3).
    bulk_concurrency = 8

    @abc.abstractmethod
    async def get(self, key: str) -> bytes:
        """Whole content of a small object; raises PathNotFoundError."""

    @abc.abstractmethod
    async def put(self, key: str, data: bytes) -> None:
        """Atomically create or replace a small object."""

    @abc.abstractmethod
    def reader(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Stream `length` bytes (all, if None) from `offset`; raises PathNotFoundError."""

    @abc.abstractmethod
    async def writer(self, key: str, append: bool = False) -> Writer: ...

    @abc.abstractmethod
    async def stat(self, key: str) -> FileInfo:
        """Size and time of an object; raises PathNotFoundError."""

    @abc.abstractmethod
    async def list(self, prefix: str) -> list[str]:
        """Names of the direct children of `prefix` (objects and "directories")."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Remove an object or everything below a prefix; missing keys are not an error."""

    @abc.abstractmethod
    async def scan(self, prefix: str) -> list[FileInfo]:
        """Every object below the directory `prefix` (recursively), with its size and
        time: one listing, not a request per object."""

    async def delete_many(self, keys: list[str]) -> None:
        """Remove these objects (not prefixes); missing ones are not an error."""
        for key in keys:
            await self.delete(key)

    async def put_markers(self, keys: list[str]) -> None:
        """Store an empty object at each key (replacing any): every reader sees them once
        this returns, but unlike `put` they need not survive a crash of the machine or
        the storage server (the filesystem does not fsync them)."""
        await asyncio.gather(*(self.put(key, b"") for key in keys))

    async def delete_then(self, groups: Sequence[tuple[list[str], list[str]]]) -> None:
        """For each group `(keys, after)`, `delete_many(keys)` then `delete_many(after)`:
        no key of a group's `after` goes before every key of its `keys` is gone (the
        collector's tomb of a blob after what it covers). Here in two batches (every
        group's keys, then every `after`); the filesystem deletes group after group,
        several at once, removing the folders a group emptied once; S3 removes the
        folders of both batches once, after them."""
        await self.delete_many([key for keys, _ in groups for key in keys])
        await self.delete_many([key for _, after in groups for key in after])

    async def scan_named(self, prefix: str, names: Collection[str], leaf: str) -> list[FileInfo]:
        """`scan(prefix)`, only the objects `<prefix>/<name>/<leaf>` for these names (the
        touches of a sweep's candidates): one listing of `prefix` where that is one
        request (S3); the filesystem stats each."""
        if not names:
            return []
        start = len(prefix) + 1
        wanted = {f"{name}/{leaf}" for name in names}
        return [info for info in await self.scan(prefix) if info.key[start:] in wanted]

    async def scan_leaves(self, prefix: str, name: str) -> list[FileInfo]:
        """`scan(prefix)`, only the objects `<prefix>/<folder>/<folder>/<name>`: the trees
        of `<alg>/<hex>/link` keys (a repository's links and revisions). The filesystem
        lists the two levels of folders and stats each `name` rather than open every
        last folder (three times the speed: the collector walks every link)."""
        start = len(prefix) + 1
        return [
            info
            for info in await self.scan(prefix)
            if len(parts := info.key[start:].split("/")) == 3 and parts[2] == name
        ]

    async def put_visible(self, key: str, data: bytes) -> None:
        """`put`, atomic and seen by every reader once this returns, but it need not
        survive a crash of the machine (the filesystem does not fsync it): for objects
        recomputed from others when unreadable or missing (usage summaries)."""
        await self.put(key, data)

    # -- leases: conditional writes of small objects -----------------------------

    @abc.abstractmethod
    async def read_versioned(self, key: str) -> Versioned:
        """A small object with its version and age; raises PathNotFoundError."""

    @abc.abstractmethod
    async def create(self, key: str, data: bytes, durable: bool = True) -> str | None:
        """Store `data` at `key` only if nothing is there, across processes and
        replicas; returns its version, or None if the key exists. `durable=False`: a
        crash may lose it or leave it empty (the filesystem does not fsync it), for a
        lease whose loss costs only some repeated work: an empty lease reads as free."""

    @abc.abstractmethod
    async def replace(self, key: str, data: bytes, version: str) -> str | None:
        """Store `data` at `key` only if the stored object still has `version`; returns
        the new version, or None if it changed or is gone."""

    async def exists(self, key: str) -> bool:
        """Whether an object is stored at `key`. A writer's uncommitted bytes need not
        count (`stat` and `reader` see them): the registry asks only about keys no
        writer uses, such as links and markers."""
        try:
            await self.stat(key)
        except PathNotFoundError:
            return False
        return True

    # -- append-only logs (where the backend can append in place) ------------------

    async def open_log(self, key: str) -> AppendLog:
        """A new append-only object at `key` (it must not exist), owned by this process
        until closed or until the process dies; only where `appends_in_place` (elsewhere
        callers store whole objects with `put`)."""
        raise NotImplementedError(f"the {self.name} storage cannot append in place")

    async def delete_closed(self, key: str, size: int) -> bool:
        """Delete `key` if no open `AppendLog` owns it and it still holds `size` bytes;
        whether it was deleted (or already gone)."""
        try:
            if (await self.stat(key)).size != size:
                return False
        except PathNotFoundError:
            return True
        await self.delete(key)
        return True

    async def redirect_url(self, key: str) -> str | None:
        """A URL a client may fetch `key` from directly, or None to stream it ourselves."""
        return None

    async def close(self) -> None:  # noqa: B027 - most drivers hold nothing to release
        """Release connections and threads."""
