"""What retention decides on: a repository's tags and manifests with their times.

Times are the storage's modification times: a tag's is when it was last written
(pushed), a manifest's when its revision was last written (pushed again, too), and
its last pull that of its pull marker (`storage.pulls`), None when never recorded.
What a manifest references comes from the mark's reading (`collector.mark`): through
the cache of earlier runs (`known`), so a run with retention reads a manifest's bytes
at most once, as one without.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from collector.known_references import KnownReferences
from collector.mark import Revision, revisions
from oci.references import Digest
from storage import paths
from storage.driver import PathNotFoundError
from storage.store import Store

_CONCURRENT_READS = 32


@dataclass(frozen=True, slots=True)
class TagFacts:
    tag: str
    digest: Digest
    pushed: float


@dataclass(frozen=True, slots=True)
class ManifestFacts:
    digest: Digest
    pushed: float
    pulled: float | None
    # The other manifests of the repository it holds: an index's children, a subject.
    references: frozenset[Digest]
    subject: Digest | None


@dataclass(frozen=True, slots=True)
class RepositoryFacts:
    tags: list[TagFacts]  # only tags whose manifest is in the repository
    manifests: dict[Digest, ManifestFacts]


async def repository_facts(
    store: Store, name: str, known: KnownReferences | None = None
) -> RepositoryFacts:
    """A snapshot of `name`: its manifests as listed (those whose bytes cannot be read
    left out), its tags that still point at one."""
    limit = asyncio.Semaphore(_CONCURRENT_READS)

    async def manifest(revision: Revision) -> ManifestFacts:
        async with limit:
            pulled = await store.manifests.pulls.last_pulled(name, revision.digest)
        held = (present[r] for r in revision.references if r in present)
        references = frozenset(d for d in held if d != revision.digest)
        return ManifestFacts(
            revision.digest, revision.modified, pulled, references, revision.subject
        )

    async def tag(tag: str) -> TagFacts | None:
        async with limit:
            try:
                info = await store.driver.stat(paths.tag_link(name, tag))
            except PathNotFoundError:
                return None
            digest = await store.manifests.resolve(name, tag)  # None: half-written
            return None if digest is None else TagFacts(tag, digest, info.modified)

    stored = [r for r in await revisions(store, name, known) if r.readable]  # else half-written
    present = {str(r.digest): r.digest for r in stored}  # the mark's strings are canonical
    manifests = await asyncio.gather(*map(manifest, stored))
    by_digest = {m.digest: m for m in manifests}
    tags = await asyncio.gather(*map(tag, await store.manifests.tags(name)))
    return RepositoryFacts([t for t in tags if t is not None and t.digest in by_digest], by_digest)
