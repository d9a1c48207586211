"""One collection: purge idle uploads, mark every repository, sweep the rest."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace

from collector.concurrently import concurrently
from collector.known_references import KnownReferences
from collector.last_run import RunRecord, save, this_process
from collector.mark import Revision, revisions
from collector.pacing import Pacer
from collector.retention import condemned
from collector.sweep import Cutoffs, Hook, Sweeper, Swept, no_hook
from oci.errors import RegistryError
from oci.references import Digest
from registry.config import Config, ImmutableTagRule, RetentionRule
from storage import paths, stale_tombs
from storage.blobs import layer_links_of
from storage.lease import LEASE_SECONDS, Lease, LeaseLostError, take
from storage.store import Store
from storage.usage import Facts

log = logging.getLogger("dockyard.gc")


@dataclass(frozen=True, slots=True)
class GcOptions:
    grace: float  # nothing younger than this is deleted
    upload_max_age: float  # upload sessions idle this long are removed
    lease_seconds: float = LEASE_SECONDS
    # A tomb is never kept this long by a live collector (it renews its lease, of
    # `lease_seconds`, before every batch): older ones were left by a dead one.
    stale_tomb_after: float = stale_tombs.STALE_AFTER
    retention: tuple[RetentionRule, ...] = ()  # `retention.policies`
    immutable: tuple[ImmutableTagRule, ...] = ()  # `immutable_tags`: never condemned
    # Of the time, what the run may work (collector/pacing.py): 1, full speed (`dockyard
    # gc`); the servers' background runs take `gc.background_share`.
    share: float = 1.0

    @classmethod
    def of(cls, config: Config) -> GcOptions:
        return cls(
            grace=config.gc.grace,
            upload_max_age=config.uploads.max_age,
            retention=tuple(config.retention.policies),
            immutable=tuple(config.immutable_tags),
        )

    @classmethod
    def background(cls, config: Config) -> GcOptions:
        """A server's own runs: paced to `gc.background_share` of the time."""
        return replace(cls.of(config), share=config.gc.background_share)

    @property
    def touch_every(self) -> float:
        """How long an API process may skip re-touching a blob (see BlobStore.vouch)."""
        return self.grace / 10


@dataclass(slots=True)
class GcResult:
    """What one run removed (or, in a dry run, would remove)."""

    manifests: int = 0
    tags: int = 0
    blobs: int = 0
    links: int = 0
    uploads: int = 0
    repositories: int = 0
    bytes_freed: int = 0
    duration: float = 0.0
    dry_run: bool = False
    skipped: str | None = None  # why nothing ran
    rested: float = 0.0  # seconds of `duration` the run rested (its pacing)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


UNLISTED = -1  # the size of a live blob whose data the sweep did not list


class _ListedSizes(Mapping[Digest, int]):
    """The sizes of the live blobs the sweep listed, as `Usage.refresh` takes them."""

    def __init__(self, live: dict[str, int]) -> None:
        self._live = live

    def __getitem__(self, digest: Digest) -> int:
        size = self._live[str(digest)]
        if size == UNLISTED:
            raise KeyError(digest)
        return size

    def __iter__(self) -> Iterator[Digest]:
        return (Digest.parse(name) for name, size in self._live.items() if size != UNLISTED)

    def __len__(self) -> int:
        return sum(1 for size in self._live.values() if size != UNLISTED)


@dataclass(frozen=True, slots=True)
class _Expected:
    """A repository's links and manifests as the mark left them, less the links the sweep
    is to remove: what the run first rewrites its usage summary from. Digests as
    interned strings, the live set's own (8 bytes each, not a Digest object each)."""

    layers: tuple[str, ...]
    manifests: tuple[str, ...]

    def facts(self, tags: list[str]) -> Facts:
        return Facts(
            frozenset(map(Digest.parse, self.layers)),
            frozenset(map(Digest.parse, self.manifests)),
            tuple(tags),
        )


@dataclass(frozen=True, slots=True)
class Deletion:
    kind: str  # blob, link, manifest, tag, upload, repository
    what: str
    why: str = ""
    size: int | None = None


Report = Callable[[Deletion], None]


def _ignore(deletion: Deletion) -> None:
    return None


class _Run:
    def __init__(
        self,
        store: Store,
        options: GcOptions,
        lease: Lease | None,
        report: Report,
        hook: Hook,
        known: KnownReferences | None,
    ) -> None:
        self.store = store
        self.options = options
        self.lease = lease
        self.report = report
        self.hook = hook
        self.known = known
        self.result = GcResult(dry_run=lease is None)
        self.pacer = Pacer(options.share)
        # The live set: each digest a manifest references -> its size, once the sweep
        # listed its data (UNLISTED until then).
        self.live: dict[str, int] = {}
        self.changed: set[str] = set()  # repositories whose usage summary is out of date
        self.expected: dict[str, _Expected] = {}
        # Repositories with no manifest left: how many of their links the sweep must
        # still remove before they leave the catalog.
        self.emptying: dict[str, int] = {}
        # Repositories (and fan-out folders) collected at once.
        self.concurrency = store.driver.bulk_concurrency

    async def storage_now(self) -> float:
        """Now by the storage's clock (the times the cutoffs compare with): the time of
        the lease we just wrote; a dry run writes nothing and uses ours."""
        if self.lease is None:
            return time.time()
        return (await self.store.driver.stat(paths.gc_lease())).modified

    async def run(self) -> GcResult:
        now = self.now = await self.storage_now()
        grace = self.options.grace
        cutoffs = Cutoffs(
            data=now - grace,
            touch=now - grace - self.options.touch_every,
            tomb=now - self.options.stale_tomb_after,
        )
        self.sweeper = Sweeper(
            self.store, self.lease, cutoffs, self.hook, self.concurrency, self.pacer
        )
        await self.purge_uploads()
        await concurrently(
            await self.store.catalog.names(),
            lambda name: self.collect_repository(name, cutoffs),
            self.concurrency,
            self.pacer,
        )
        await self.hook("marked")
        await self.sweeper.sweep(self.live, self.account)
        emptied = [name for name, left in self.emptying.items() if left == 0]
        await concurrently(emptied, self.uncatalog, self.concurrency, self.pacer)
        await concurrently(sorted(self.changed), self.refresh_usage, self.concurrency, self.pacer)
        self.result.rested = self.pacer.rested
        return self.result

    def account(self, swept: Swept) -> None:
        """Count and report what the sweep of one fan-out folder deleted."""
        for doomed in swept.blobs:
            if doomed.size is not None:
                self.result.blobs += 1
                self.result.bytes_freed += doomed.size
                self.report(Deletion("blob", str(doomed.digest), size=doomed.size))
        for link in swept.links:
            name = link.repository
            self.result.links += 1
            self.changed.add(name)
            self.report(
                Deletion("link", f"{name}@{link.digest}", "not referenced in the repository")
            )
            if name in self.emptying:
                self.emptying[name] -= 1

    async def purge_uploads(self) -> None:
        older_than = self.now - self.options.upload_max_age  # the storage's clock
        if self.lease is not None:
            await self.lease.keep()
        for upload_id in await self.store.uploads.purge(older_than, dry_run=self.lease is None):
            self.result.uploads += 1
            self.report(Deletion("upload", upload_id, "idle longer than uploads.max_age"))

    async def collect_repository(self, name: str, cutoffs: Cutoffs) -> None:
        """Retention, orphan referrers, the mark; queues the links the repository does
        not reference for the sweep."""
        before = (self.result.tags, self.result.manifests)
        if self.options.retention:
            await self.apply_retention(name)
        stored = await revisions(self.store, name, self.known)
        kept = await self.without_orphan_referrers(name, stored, cutoffs)
        if before != (self.result.tags, self.result.manifests):
            self.changed.add(name)
        references: set[str] = set().union(*(revision.references for revision in kept))
        self.live.update(dict.fromkeys(references, UNLISTED))
        links = await layer_links_of(self.store.driver, name)
        unreferenced = [
            link
            for link in links
            if str(link.digest) not in references and link.modified < cutoffs.data
        ]
        self.sweeper.unlink(name, unreferenced)
        queued = set(unreferenced)
        self.expected[name] = _Expected(
            tuple(sys.intern(str(link.digest)) for link in links if link not in queued),
            tuple(sys.intern(str(revision.digest)) for revision in kept),
        )
        if kept or len(unreferenced) < len(links):
            return
        if links:
            self.emptying[name] = len(links)  # empty once the sweep removed them all
        else:
            await self.uncatalog(name)

    async def uncatalog(self, name: str) -> None:
        if await self.remove_if_empty(name):
            self.result.repositories += 1
            self.changed.discard(name)
            self.report(Deletion("repository", name, "holds nothing"))

    async def refresh_usage(self, name: str) -> None:
        """The usage summary of a repository the run changed, from the sizes the sweep
        listed (not a stat per blob) and the links and manifests the mark left (not a
        listing before the write: the one after it checks them)."""
        if self.lease is None or not await self.store.catalog.exists(name):
            return
        expected = self.expected.pop(name).facts(await self.store.manifests.tags(name))
        await self.store.usage.refresh(name, known=_ListedSizes(self.live), expected=expected)

    async def without_orphan_referrers(
        self, name: str, stored: list[Revision], cutoffs: Cutoffs
    ) -> list[Revision]:
        """Delete referrers whose subject is not in the repository (stored before the
        cutoff); returns the revisions that stay."""
        present = {revision.digest for revision in stored}
        kept = []
        for revision in stored:
            subject = revision.subject
            if subject is None or subject in present or revision.modified >= cutoffs.data:
                kept.append(revision)
                continue
            if await self.delete_manifest(name, revision.digest, f"its subject {subject} is gone"):
                continue
            kept.append(revision)
        return kept

    async def apply_retention(self, name: str) -> None:
        """Delete what `retention.policies` condemn in `name` (collector/retention.py),
        tags first; a dry run reports them (and, not deleting them, still marks them)."""
        found = await condemned(
            self.store,
            name,
            self.options.retention,
            self.now,
            grace=self.options.grace,
            immutable=self.options.immutable,
            known=self.known,
        )
        for item in found:
            if item.kind == "tag":
                if self.lease is not None:
                    await self.lease.keep()
                    if not await self.store.manifests.untag(name, item.reference):
                        continue
                self.result.tags += 1
                self.report(Deletion("tag", f"{name}:{item.reference}", item.rule))
                continue
            try:
                await self.delete_manifest(name, Digest.parse(item.reference), item.rule)
            except RegistryError as error:  # a push made it referenced meanwhile: it stays
                log.info("retention keeps %s@%s: %s", name, item.reference, error.message)

    async def delete_manifest(self, name: str, digest: Digest, why: str) -> bool:
        if self.lease is not None:
            await self.lease.keep()
            if not await self.store.manifests.delete(name, digest):
                return False
        self.result.manifests += 1
        self.report(Deletion("manifest", f"{name}@{digest}", why))
        return True

    async def remove_if_empty(self, name: str) -> bool:
        """Take an empty repository out of the catalog: its records first (so a run killed
        meanwhile leaves it listed, for the next run to finish), then its marker, then a
        last look for content (put back if a push raced us; see Catalog). A push racing
        this may lose its usage summary, rewritten at the end of the run, its pull times
        and its tag-change key (tag lists are then listed, not cached, till the next)."""
        if self.lease is None:
            return not await self.holds_anything(name)
        await self.lease.keep()
        await self.hook("emptying")
        records = paths.repository_records(name)
        await asyncio.gather(*(self.store.driver.delete(key) for key in records))
        await self.store.catalog.remove(name)
        await self.hook("uncataloged")
        if await self.holds_anything(name):
            await self.store.catalog.add(name)
            self.changed.add(name)
            return False
        return True

    async def holds_anything(self, name: str) -> bool:
        for folder in paths.repository_content(name):
            if await self.store.driver.scan(folder):
                return True
        return False


async def collect(
    store: Store,
    options: GcOptions,
    dry_run: bool = False,
    report: Report = _ignore,
    hook: Hook = no_hook,
    known: KnownReferences | None = None,
) -> GcResult:
    """One run, holding the lease (a dry run takes none and deletes nothing); when
    another collector holds it, returns at once with `skipped` set. A run that deletes
    stores its record (collector/last_run.py) before it lets the lease go. `known`: what
    manifests reference, from earlier runs (collector/known_references.py)."""
    started, began = time.monotonic(), time.time()
    if not dry_run and await store.maintenance.state() is not None:
        return GcResult(skipped="maintenance: the storage stays as it is")
    lease = None
    if not dry_run:
        lease = await take(store.driver, paths.gc_lease(), options.lease_seconds)
        if lease is None:
            return GcResult(skipped="another collector is running")
        log.info("gc run %s started", lease.owner)
    run = _Run(store, options, lease, report, hook, known)
    try:
        result = await run.run()
        result.duration = time.monotonic() - started
        if lease is not None:
            await _save_record(store, result, began)
        _log_end(result, lease)  # before the lease goes: logged runs never overlap
    except LeaseLostError:
        raise  # another run holds the lease now: the record is its to write
    except Exception as error:
        if lease is not None:
            run.result.duration = time.monotonic() - started
            with contextlib.suppress(Exception):  # the error that stopped it matters more
                await _save_record(store, run.result, began, f"{type(error).__name__}: {error}")
        raise
    finally:
        if lease is not None:
            await lease.release()
    return result


def _log_end(result: GcResult, lease: Lease | None) -> None:
    log.info(
        "gc run %s: removed %d manifests, %d tags, %d blobs (%d bytes), %d links, %d uploads,"
        " %d repositories in %.1fs",
        "(dry run)" if lease is None else lease.owner,
        result.manifests,
        result.tags,
        result.blobs,
        result.bytes_freed,
        result.links,
        result.uploads,
        result.repositories,
        result.duration,
    )


async def _save_record(
    store: Store, result: GcResult, began: float, error: str | None = None
) -> None:
    host, pid = this_process()
    record = RunRecord(
        started=began,
        finished=began + result.duration,
        duration=result.duration,
        manifests=result.manifests,
        tags=result.tags,
        blobs=result.blobs,
        links=result.links,
        uploads=result.uploads,
        repositories=result.repositories,
        bytes_freed=result.bytes_freed,
        host=host,
        pid=pid,
        error=error,
    )
    await save(store, record)
