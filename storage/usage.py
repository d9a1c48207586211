"""Per-repository storage use, kept up to date at push time (`dockyard du`, the web UI).

Each repository has two small objects beside its links:

    repositories/<name>/_summary        {"tags", "manifests", "blobs", "bytes", "last_push"}
    repositories/<name>/_summary_blobs  {"<digest>": size, ...} for every blob it holds

A repository's blobs are its layer links and its manifests (manifest bytes are blobs
too), each counted once; `bytes` is the sum of their sizes. `_summary` stays a few
dozen bytes so a page of repositories costs one small read each; `_summary_blobs`
(about 80 bytes a blob) is what `du` needs to count blobs shared between repositories
once, and it doubles as a cache of sizes: content never changes under its digest, so
a rewrite stats only the blobs it has not seen before.

Why not a counter: many processes and replicas share the storage, and a
read-modify-write of a running total loses updates when two of them race. Instead a
summary is always *recomputed from facts re-read at that moment* (listings of the
repository's links, revisions and tags), and then checked: after writing, the writer
lists the facts again and, if they changed meanwhile, recomputes and writes again
(up to `_ROUNDS` times). The last write to a summary is therefore from a writer that
saw no change to the facts across its write; any change after that is made by a
request that rewrites the summary itself afterwards. So the summary ends exact
however pushes interleave, with no lock and no process's memory (a writer that
crashes or runs out of rounds leaves it stale until the next write or collection). Only `last_push`
is not a fact of the listings: it is the newest of the stored value and the push's
own time, so two pushes racing within the same moment may leave the earlier one's
time.

When it runs: after the response of a manifest PUT, a manifest or tag DELETE and a
blob DELETE (a background task: the client does not wait). A blob pushed but not yet
named by any manifest is counted at the next of those. A process killed between its
response and the rewrite leaves the summary stale until the next write to that
repository or the next garbage collection that changes it. A repository without a
summary (pushed to before summaries existed) gets one from the first `dockyard du`
that shows it.

Cost, measured on this machine (10 images, 21 blobs, 10 tags; 30 rewrites in a loop):
0.3 ms with the memory driver, 2.4 ms on the filesystem, 25 ms on SeaweedFS (S3): about
a dozen requests (the three listings twice, two reads, two writes, and a stat per
blob not seen before). It is all after the response, off the client's wait.

For the garbage collector, after it removed links or manifests: `Usage.refresh(name,
known=..., expected=...)` with the sizes its sweep listed and the facts its mark left
(the write is checked by the listing after it, as any other). `check --repair`, which
may have moved corrupt blobs aside, uses `Usage.refresh(name, exact=True)`: it stats
every blob again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from oci.errors import RegistryError
from oci.references import Digest
from storage import paths
from storage.blobs import BlobStore
from storage.catalog import Catalog
from storage.driver import PathNotFoundError, StorageDriver, StorageError
from storage.manifests import ManifestStore

log = logging.getLogger("dockyard.usage")

_ROUNDS = 5  # rewrites before giving up on a repository that keeps changing
_STATS_AT_ONCE = 16


@dataclass(frozen=True, slots=True)
class Facts:
    """What a summary is computed from: the repository's links, revisions and tags."""

    layers: frozenset[Digest]
    manifests: frozenset[Digest]
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Summary:
    tags: int
    manifests: int
    blobs: int
    bytes: int
    last_push: float | None

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "tags": self.tags,
                "manifests": self.manifests,
                "blobs": self.blobs,
                "bytes": self.bytes,
                "last_push": self.last_push,
            }
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Summary:
        document = json.loads(raw)
        return cls(
            tags=int(document["tags"]),
            manifests=int(document["manifests"]),
            blobs=int(document["blobs"]),
            bytes=int(document["bytes"]),
            last_push=document["last_push"],
        )


class Usage:
    def __init__(self, driver: StorageDriver, blobs: BlobStore, manifests: ManifestStore) -> None:
        self._driver = driver
        self._blobs = blobs
        self._manifests = manifests

    async def facts(self, name: str) -> Facts:
        layers, manifests, tags = await asyncio.gather(
            self._blobs.links(name), self._manifests.digests(name), self._manifests.tags(name)
        )
        return Facts(frozenset(layers), frozenset(manifests), tuple(tags))

    async def summary(self, name: str) -> Summary | None:
        """The stored summary, or None when there is none (or it is unreadable)."""
        try:
            return Summary.from_json(await self._driver.get(paths.summary(name)))
        except (PathNotFoundError, ValueError, KeyError, TypeError):
            return None

    async def sizes(self, name: str) -> dict[Digest, int] | None:
        """The stored size of each blob of the repository, or None when there is none."""
        try:
            document = json.loads(await self._driver.get(paths.summary_blobs(name)))
            return {Digest.parse(digest): int(size) for digest, size in document.items()}
        except PathNotFoundError:
            return None
        except (ValueError, TypeError, AttributeError, RegistryError):
            return None  # unreadable: recomputed from the facts

    async def refresh(
        self,
        name: str,
        pushed_at: float | None = None,
        exact: bool = False,
        known: Mapping[Digest, int] | None = None,
        expected: Facts | None = None,
    ) -> Summary:
        """Rewrite the repository's summary from its facts as they are now (see the module
        docstring). `pushed_at` is the time of the push that asks for it; `exact` stats
        every blob again instead of trusting the sizes already recorded (`check
        --repair` uses it after moving corrupt blobs aside); `known`: sizes the caller
        read just now (the garbage collector's listings), used instead of either;
        `expected`: the facts the caller expects (the garbage collector's: what it
        listed, less what it removed), written without listing them first. Like any
        facts, they are checked by the listing after the write."""
        if known is None:
            known = {} if exact else (await self.sizes(name) or {})
        facts = expected if expected is not None else await self.facts(name)
        for _ in range(_ROUNDS):
            stored = await self.summary(name)
            last_push = max(
                (t for t in (stored and stored.last_push, pushed_at) if t is not None),
                default=None,
            )
            sizes = await self._sizes_of(facts.layers | facts.manifests, known)
            summary = Summary(
                tags=len(facts.tags),
                manifests=len(facts.manifests),
                blobs=len(sizes),
                bytes=sum(sizes.values()),
                last_push=last_push,
            )
            listed = {str(digest): size for digest, size in sizes.items()}
            # Not fsynced: an unreadable or missing summary is recomputed from the facts.
            await asyncio.gather(
                self._driver.put_visible(
                    paths.summary_blobs(name), json.dumps(listed, sort_keys=True).encode()
                ),
                self._driver.put_visible(paths.summary(name), summary.to_json()),
            )
            again = await self.facts(name)
            if again == facts:
                return summary
            facts, known = again, sizes
        log.warning("the summary of %s may be stale: it kept changing while written", name)
        return summary

    async def refresh_after_request(self, name: str, pushed_at: float | None = None) -> None:
        """`refresh` as a response's background task: a failure is logged, not raised
        (the next write or collection repairs the summary)."""
        try:
            await self.refresh(name, pushed_at)
        except StorageError as error:
            log.warning("the summary of %s was not updated: %s", name, error)

    async def _sizes_of(
        self, digests: Iterable[Digest], known: Mapping[Digest, int]
    ) -> dict[Digest, int]:
        """Size of each digest whose blob exists: from `known`, else by a stat."""
        wanted = list(digests)
        missing = [digest for digest in wanted if digest not in known]
        limit = asyncio.Semaphore(_STATS_AT_ONCE)

        async def stat(digest: Digest) -> int | None:
            async with limit:
                try:
                    return (await self._driver.stat(paths.blob_data(digest))).size
                except PathNotFoundError:
                    return None  # a dangling link: it holds no bytes

        found = dict(zip(missing, await asyncio.gather(*map(stat, missing)), strict=True))
        sizes: dict[Digest, int] = {}
        for digest in wanted:
            size = known.get(digest, found.get(digest))
            if size is not None:
                sizes[digest] = size
        return sizes


@dataclass(frozen=True, slots=True)
class RepositoryUsage:
    name: str
    summary: Summary
    unique_bytes: int  # bytes of the blobs no other repository holds


@dataclass(frozen=True, slots=True)
class UsageReport:
    repositories: list[RepositoryUsage]
    total_bytes: int  # the shown repositories' blobs, each counted once


async def usage_report(
    usage: Usage, catalog: Catalog, names: list[str] | None = None
) -> UsageReport:
    """Every repository's summary (or those of `names`), what only each holds, and the
    deduplicated total, from the stored summaries: one or two small reads a repository.
    A repository without a summary gets one written now."""
    every = await catalog.names()
    limit = asyncio.Semaphore(_STATS_AT_ONCE)

    async def load(name: str) -> tuple[Summary, dict[Digest, int]]:
        async with limit:
            summary, sizes = await asyncio.gather(usage.summary(name), usage.sizes(name))
            if summary is None or sizes is None:
                summary = await usage.refresh(name)
                sizes = await usage.sizes(name) or {}
            return summary, sizes

    loaded = dict(zip(every, await asyncio.gather(*map(load, every)), strict=True))
    holders: dict[Digest, int] = {}
    for _, sizes in loaded.values():
        for digest in sizes:
            holders[digest] = holders.get(digest, 0) + 1
    shown = every if names is None else [name for name in names if name in loaded]
    rows, total = [], {}
    for name in shown:
        summary, sizes = loaded[name]
        unique = sum(size for digest, size in sizes.items() if holders[digest] == 1)
        rows.append(RepositoryUsage(name, summary, unique))
        total.update(sizes)
    return UsageReport(rows, sum(total.values()))
