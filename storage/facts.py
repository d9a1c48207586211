"""What retention decides on: a repository's tags and manifests with their times.

Times are the storage's modification times: a tag's is when it was last written
(pushed), a manifest's when its revision was last written (pushed again, too), and
its last pull that of its pull marker (`storage.pulls`), None when never recorded.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from oci.errors import RegistryError
from oci.manifests import parse_manifest
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
    children: frozenset[Digest]  # the manifests an index lists
    subject: Digest | None


@dataclass(frozen=True, slots=True)
class RepositoryFacts:
    tags: list[TagFacts]  # only tags whose manifest is in the repository
    manifests: dict[Digest, ManifestFacts]


async def repository_facts(store: Store, name: str) -> RepositoryFacts:
    """A snapshot of `name`; entries removed while it is read are left out."""
    driver = store.driver
    limit = asyncio.Semaphore(_CONCURRENT_READS)

    async def manifest(digest: Digest) -> ManifestFacts | None:
        async with limit:
            try:
                pushed = (await driver.stat(paths.revision_link(name, digest))).modified
            except PathNotFoundError:
                return None
            stored = await store.manifests.get(name, digest)
            if stored is None:
                return None
            pulled = await store.manifests.pulls.last_pulled(name, digest)
            try:
                parsed = parse_manifest(stored.raw, stored.media_type, digest)
            except RegistryError:  # stored before a stricter check: it references nothing
                return ManifestFacts(digest, pushed, pulled, frozenset(), None)
            children = frozenset(child.digest for child in parsed.children)
            return ManifestFacts(digest, pushed, pulled, children, parsed.subject)

    async def tag(tag: str) -> TagFacts | None:
        async with limit:
            try:
                info = await driver.stat(paths.tag_link(name, tag))
            except PathNotFoundError:
                return None
            digest = await store.manifests.resolve(name, tag)  # None: half-written
            return None if digest is None else TagFacts(tag, digest, info.modified)

    digests = await store.manifests.digests(name)
    manifests = [m for m in await asyncio.gather(*map(manifest, digests)) if m is not None]
    by_digest = {m.digest: m for m in manifests}
    tags = await asyncio.gather(*map(tag, await store.manifests.tags(name)))
    return RepositoryFacts([t for t in tags if t is not None and t.digest in by_digest], by_digest)
