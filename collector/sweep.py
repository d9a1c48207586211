"""The sweep: deleting what the mark did not reach, by the tomb handshake.

For a batch of candidates (blobs, or one repository's links to blobs) the collector
writes each blob's tomb, then reads each blob's touch again, and deletes only the
blobs (or links) whose touch is still older than the cutoff, removing the tombs after.
See collector/__init__.py for why this never deletes what the API vouched for.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from collector.concurrently import concurrently
from oci.errors import RegistryError
from oci.references import Digest
from storage import paths
from storage.driver import FileInfo, PathNotFoundError
from storage.lease import Lease
from storage.store import Store

# Called with a step's name between the steps of the handshake; tests use it to
# interleave API requests deterministically.
Hook = Callable[[str], Awaitable[None]]


async def no_hook(step: str) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """Storage times: what was written before `data` may go unless it was touched
    since `touch` (earlier by the time a process may skip re-touching)."""

    data: float
    touch: float
    tomb: float  # another collector's tomb older than this was left by a dead one


@dataclass(frozen=True, slots=True)
class Doomed:
    digest: Digest
    size: int | None  # bytes its data frees; None: only markers were left of it


def _size(files: dict[str, FileInfo]) -> int | None:
    return files["data"].size if "data" in files else None


class Sweeper:
    def __init__(
        self,
        store: Store,
        lease: Lease | None,
        cutoffs: Cutoffs,
        hook: Hook,
        concurrency: int = 1,
    ) -> None:
        """`lease` None: a dry run, which deletes nothing and writes no tombs. Tombs
        carry the lease's owner, so a collector only ever removes its own (or ones a
        dead collector left long ago): even two collectors at once keep the handshake."""
        self._store = store
        self._driver = store.driver
        self._lease = lease
        self._cutoffs = cutoffs
        self._hook = hook
        self._owner = lease.owner if lease is not None else ""
        self._concurrency = concurrency  # fan-out folders swept at once

    def _stale(self, info: FileInfo | None, cutoff: float) -> bool:
        return info is None or info.modified < cutoff

    async def _touched_since(self, digest: Digest) -> bool:
        try:
            info = await self._driver.stat(paths.blob_touched(digest))
        except PathNotFoundError:
            return False
        return not self._stale(info, self._cutoffs.touch)

    async def _untouched(self, digests: list[Digest]) -> list[Digest]:
        touched = await asyncio.gather(*(self._touched_since(digest) for digest in digests))
        return [digest for digest, fresh in zip(digests, touched, strict=True) if not fresh]

    async def _entomb(self, digests: list[Digest]) -> None:
        assert self._lease is not None
        await self._lease.keep()
        await asyncio.gather(
            *(self._driver.put(paths.blob_tomb(digest, self._owner), b"") for digest in digests)
        )
        await self._hook("entombed")

    async def unlink(self, name: str, links: list[Digest]) -> list[Digest]:
        """Remove these links of repository `name` (unreferenced there, written before
        the cutoff) unless their blob was touched since; returns the removed ones."""
        candidates = await self._untouched(links)
        if self._lease is None or not candidates:
            return candidates
        await self._hook("candidates")
        await self._entomb(candidates)
        doomed = await self._untouched(candidates)
        await self._lease.keep()
        await self._driver.delete_many([paths.layer_link(name, digest) for digest in doomed])
        if doomed:
            await self._store.deletions.published()  # caches of other processes drop them
        await self._hook("unlinked")
        await self._driver.delete_many(
            [paths.blob_tomb(digest, self._owner) for digest in candidates]
        )
        return doomed

    async def blobs(self, live: set[str]) -> list[Doomed]:
        """Delete every stored blob not in `live`, written and touched before the
        cutoffs, one fan-out folder (`blobs/<alg>/<xx>`) at a time."""
        folders = []
        for algorithm in await self._driver.list("blobs"):
            folder = paths.blobs_of(algorithm)
            folders += [
                (f"{folder}/{fan_out}", algorithm) for fan_out in await self._driver.list(folder)
            ]

        async def sweep(found: tuple[str, str]) -> list[Doomed]:
            return await self._sweep_folder(*found, live)

        return [
            doomed
            for swept in await concurrently(folders, sweep, self._concurrency)
            for doomed in swept
        ]

    async def _blob_files(self, folder: str, algorithm: str) -> dict[Digest, dict[str, FileInfo]]:
        found: dict[Digest, dict[str, FileInfo]] = defaultdict(dict)
        for info in await self._driver.scan(folder):
            parts = info.key[len(folder) + 1 :].split("/")
            if len(parts) != 2:
                continue
            try:
                digest = Digest.parse(f"{algorithm}:{parts[0]}")
            except RegistryError:
                continue  # not a blob of ours: never touched
            found[digest][parts[1]] = info
        return found

    def _collectable(self, files: dict[str, FileInfo]) -> bool:
        return self._stale(files.get("data"), self._cutoffs.data) and self._stale(
            files.get("touched"), self._cutoffs.touch
        )

    async def _sweep_folder(self, folder: str, algorithm: str, live: set[str]) -> list[Doomed]:
        found = await self._blob_files(folder, algorithm)
        candidates = {
            digest: files
            for digest, files in found.items()
            if str(digest) not in live and self._collectable(files)
        }
        # Tombs a collector that died or lost its lease left long ago.
        stale_tombs = [
            info.key
            for files in found.values()
            for name, info in files.items()
            if paths.is_tomb(name) and info.modified < self._cutoffs.tomb
        ]
        if self._lease is None:
            return [Doomed(digest, _size(files)) for digest, files in candidates.items()]
        if candidates:
            await self._hook("candidates")
            await self._entomb(list(candidates))
            again = await self._blob_files(folder, algorithm)  # the touches, read again
            doomed = [
                Doomed(digest, _size(files))
                for digest, files in again.items()
                if digest in candidates and self._collectable(files)
            ]
            await self._hook("checked")
            await self._lease.keep()
            keys = []
            for item in doomed:
                keys += [paths.blob_data(item.digest), paths.blob_touched(item.digest)]
            await self._driver.delete_many(keys)
            if doomed:
                await self._store.deletions.published()
            await self._hook("deleted")
        else:
            doomed = []
        await self._driver.delete_many(
            [*(paths.blob_tomb(digest, self._owner) for digest in candidates), *stale_tombs]
        )
        return doomed
