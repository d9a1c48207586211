"""The sweep: deleting what the mark did not reach, by the tomb handshake.

One fan-out folder (`blobs/<alg>/<xx>`) at a time, its candidates are the blobs no
manifest references and the blobs some repository holds a link to that it does not
reference (queued by the mark). The collector lists the folder (data, touches, tombs:
one listing), writes one tomb per candidate blob, reads the candidates' touches again
(S3: the folder's listing; the filesystem: a stat each), and deletes only the blobs
and links whose touch is still older than the cutoff, in one batch, removing each
tomb after what it covers (`delete_then`: on the filesystem in the same pass, blob
after blob). See collector/__init__.py for why this never deletes what the API
vouched for.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from collector.concurrently import concurrently
from collector.pacing import Pacer
from oci.errors import RegistryError
from oci.references import Digest
from storage import paths
from storage.blobs import LayerLink
from storage.driver import FileInfo
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


class Link(NamedTuple):
    repository: str
    digest: Digest
    legacy: bool  # in the shape older versions wrote

    @property
    def key(self) -> str:
        if self.legacy:
            return paths.legacy_layer_link(self.repository, self.digest)
        return paths.layer_link(self.repository, self.digest)


@dataclass(slots=True)
class Swept:
    blobs: list[Doomed] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)

    def add(self, other: Swept) -> None:
        self.blobs += other.blobs
        self.links += other.links


Files = dict[Digest, dict[str, FileInfo]]  # a fan-out folder's blobs: entry name -> info
Queued = dict[Digest, list[tuple[str, bool]]]  # unreferenced links: blob -> (repository, legacy)


class Sweeper:
    def __init__(
        self,
        store: Store,
        lease: Lease | None,
        cutoffs: Cutoffs,
        hook: Hook,
        concurrency: int = 1,
        pacer: Pacer | None = None,
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
        self._pacer = pacer  # rests between folders (the background runs')
        # Links the mark found unreferenced, by fan-out folder. Not their keys: 50,000
        # queued keys were 11 MB of a run's peak.
        self._links: dict[str, Queued] = defaultdict(lambda: defaultdict(list))

    def _stale(self, info: FileInfo | None, cutoff: float) -> bool:
        return info is None or info.modified < cutoff

    def unlink(self, name: str, links: list[LayerLink]) -> None:
        """Queue these links of repository `name` (unreferenced there, written before
        the cutoff) for the sweep, which removes each unless its blob was touched since."""
        for link in links:
            self._links[paths.blob_fan_out(link.digest)][link.digest].append((name, link.legacy))

    async def sweep(self, live: dict[str, int], account: Callable[[Swept], None]) -> None:
        """Delete every stored blob not in `live`, written and touched before the
        cutoffs, and the queued links whose blob was not touched since, one fan-out
        folder at a time, handing what each folder let go to `account` as it goes (none
        of it kept until the end). Records the size of each live blob it lists in `live`
        (for the usage summaries after it: its keys are the mark's strings, no new
        ones)."""
        folders = {folder: folder.split("/")[1] for folder in self._links}
        for algorithm in await self._driver.list(paths.blobs_dir()):
            folder = paths.blobs_of(algorithm)
            for fan_out in await self._driver.list(folder):
                folders[f"{folder}/{fan_out}"] = algorithm

        async def sweep(found: tuple[str, str]) -> None:
            account(await self._sweep_folder(*found, live))

        await concurrently(folders.items(), sweep, self._concurrency, self._pacer)

    async def _blob_files(self, folder: str, algorithm: str) -> Files:
        """The folder's blobs."""
        found: Files = defaultdict(dict)
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

    async def _touched_again(self, folder: str, found: Files, candidates: set[Digest]) -> Files:
        """The candidates' entries in `found`, their touches read again: what the API
        writes when it vouches for a blob, as it does around every write of its data."""
        by_name = {digest.encoded: digest for digest in candidates}
        touches = await self._driver.scan_named(folder, by_name, "touched")
        again: Files = {
            digest: {
                name: info for name, info in found.get(digest, {}).items() if name != "touched"
            }
            for digest in candidates
        }
        for info in touches:
            again[by_name[info.key[len(folder) + 1 :].split("/")[0]]]["touched"] = info
        return again

    def _collectable(self, files: dict[str, FileInfo]) -> bool:
        return self._stale(files.get("data"), self._cutoffs.data) and self._untouched(files)

    def _untouched(self, files: dict[str, FileInfo] | None) -> bool:
        return self._stale((files or {}).get("touched"), self._cutoffs.touch)

    def _doomed(self, found: Files, blobs: set[Digest], links: Queued) -> Swept:
        """What of the candidates `found` (a listing of their folder) still lets go."""
        return Swept(
            [
                Doomed(digest, _size(files))
                for digest in blobs
                if self._collectable(files := found.get(digest, {}))
            ],
            [
                Link(name, digest, legacy)
                for digest, queued in links.items()
                if self._untouched(found.get(digest))
                for name, legacy in queued
            ],
        )

    async def _sweep_folder(self, folder: str, algorithm: str, live: dict[str, int]) -> Swept:
        queued = self._links.pop(folder, {})
        found = await self._blob_files(folder, algorithm)
        for digest, files in found.items():
            if "data" in files and (name := str(digest)) in live:
                live[name] = files["data"].size
        blobs = {
            digest
            for digest, files in found.items()
            if str(digest) not in live and self._collectable(files)
        }
        links = {
            digest: pending
            for digest, pending in queued.items()
            if self._untouched(found.get(digest))
        }
        if self._lease is None:
            return self._doomed(found, blobs, links)
        # Tombs a collector that died or lost its lease left long ago.
        stale_tombs = [
            info.key
            for files in found.values()
            for name, info in files.items()
            if paths.is_tomb(name) and info.modified < self._cutoffs.tomb
        ]
        return await _finished_even_if_stopped(
            self._entomb_and_delete(folder, found, blobs, links, stale_tombs)
        )

    async def _entomb_and_delete(
        self,
        folder: str,
        found: Files,
        blobs: set[Digest],
        links: Queued,
        stale_tombs: list[str],
    ) -> Swept:
        """The handshake on the folder's candidates: tombs, touches read again, then what
        is still untouched deleted, each tomb after what it covers."""
        candidates = blobs | links.keys()
        doomed = Swept()
        covered: dict[Digest, list[str]] = defaultdict(list)  # what each tomb covers
        if candidates:
            await self._hook("candidates")
            await self._lease.keep()
            # One tomb per blob covers its data and every link to it (the API reads the
            # tombs before it answers for either); not durable: see collector/__init__.py.
            await self._driver.put_markers(
                [paths.blob_tomb(digest, self._owner) for digest in candidates]
            )
            await self._hook("entombed")
            again = await self._touched_again(folder, found, candidates)
            doomed = self._doomed(again, blobs, links)
            await self._hook("checked")
            await self._lease.keep()
            for link in doomed.links:
                covered[link.digest].append(link.key)
            for item in doomed.blobs:
                covered[item.digest].append(paths.blob_data(item.digest))
                if "touched" in again.get(item.digest, {}):
                    covered[item.digest].append(paths.blob_touched(item.digest))
                # (A touch written since came after the tomb, so its request answered
                # "missing"; a later run removes it with the folder.)
        # Each tomb goes only once what it covers is gone (the API reads it before it
        # answers for that): on the filesystem in the same pass, one rmdir per folder.
        await self._driver.delete_then(
            [
                *(
                    (covered.get(digest, []), [paths.blob_tomb(digest, self._owner)])
                    for digest in candidates
                ),
                ([], stale_tombs),
            ]
        )
        if covered:
            await self._store.deletions.published()  # caches of other processes drop them
        if candidates:
            await self._hook("deleted")
        return doomed


async def _finished_even_if_stopped(step: Awaitable[Swept]) -> Swept:
    """`step` run to its end even when the run is cancelled meanwhile (a server stopping
    its collector, Ctrl-C on `dockyard gc`), then the cancellation raised: a step
    stopped between its tombs and their removal would leave them, and the API would
    answer their blobs missing, and fail their uploads, until they are
    `stale_tomb_after` old (storage/stale_tombs.py). A step is
    one folder's batch (a second or so); its own lease check still stops it before it
    deletes if the run lost its lease, and a kill, which nothing can catch, leaves what
    step 6 of collector/__init__.py describes."""
    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        while not task.done():
            try:
                await asyncio.wait([task])  # a second cancellation must not cancel it
            except asyncio.CancelledError:
                continue
        task.result()  # its own failure (a lost lease) rather than the cancellation
        raise
