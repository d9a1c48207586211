"""Manifests, tags and the referrers index of each repository.

Manifest bytes are stored once in the shared blob store; a repository holds a
revision link (its media type and subject) per manifest, a link per tag, and,
for each subject, one entry per referrer with the descriptor the referrers API
returns. Writes go content first, tag last, each one atomic, so a crash leaves
the old state or the new one.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from oci.manifests import Manifest
from oci.references import Digest
from storage import paths
from storage.blobs import BlobStore
from storage.catalog import Catalog
from storage.driver import PathNotFoundError, StorageDriver

_CACHED_MANIFEST_BYTES = 64 << 20


@dataclass(frozen=True, slots=True)
class StoredManifest:
    digest: Digest
    media_type: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class _Content:
    raw: bytes
    declared_type: str | None  # the document's own `mediaType`, if it has one


def _declared_type(raw: bytes) -> str | None:
    """`mediaType` as the stored (already validated) document states it."""
    declared = json.loads(raw).get("mediaType")
    return declared if isinstance(declared, str) and declared else None


class ManifestStore:
    def __init__(self, driver: StorageDriver, blobs: BlobStore, catalog: Catalog) -> None:
        self._driver = driver
        self._blobs = blobs
        self._catalog = catalog
        # Manifest bytes never change under their digest: an LRU of them saves reads.
        self._content: OrderedDict[Digest, _Content] = OrderedDict()
        self._content_bytes = 0

    async def put(self, name: str, manifest: Manifest, tags: list[str]) -> None:
        await self._catalog.add(name)
        await self._blobs.put(manifest.raw, manifest.digest)
        revision = {"mediaType": manifest.media_type}
        if manifest.subject is not None:
            revision["subject"] = str(manifest.subject)
            entry = paths.referrer_entry(name, manifest.subject, manifest.digest)
            await self._driver.put(entry, json.dumps(manifest.referrer_descriptor()).encode())
        await self._driver.put(
            paths.revision_link(name, manifest.digest), json.dumps(revision).encode()
        )
        for tag in tags:
            await self._driver.put(paths.tag_link(name, tag), str(manifest.digest).encode())

    async def _revision(self, name: str, digest: Digest) -> dict[str, Any] | None:
        try:
            return json.loads(await self._driver.get(paths.revision_link(name, digest)))
        except PathNotFoundError:
            return None

    async def exists(self, name: str, digest: Digest) -> bool:
        return await self._driver.exists(paths.revision_link(name, digest))

    async def get(self, name: str, digest: Digest, tagged: bool = False) -> StoredManifest | None:
        """The manifest `digest` of repository `name`, or None if it is not there.

        `tagged` says the digest was just read from one of this repository's tags,
        which proves the manifest is in it: `put` writes a tag after its manifest and
        `delete` removes the tags before the manifest. Then, when the content names
        its own media type (a function of the bytes), no per-repository read is needed.
        """
        if tagged:
            content = await self._content_of(digest)
            if content.declared_type is not None:
                return StoredManifest(digest, content.declared_type, content.raw)
        revision = await self._revision(name, digest)
        if revision is None:
            return None
        return StoredManifest(digest, revision["mediaType"], (await self._content_of(digest)).raw)

    async def _content_of(self, digest: Digest) -> _Content:
        content = self._content.get(digest)
        if content is not None:
            self._content.move_to_end(digest)
            return content
        raw = await self._blobs.get(digest)
        content = self._content[digest] = _Content(raw, _declared_type(raw))
        self._content_bytes += len(raw)
        while self._content_bytes > _CACHED_MANIFEST_BYTES:
            self._content_bytes -= len(self._content.popitem(last=False)[1].raw)
        return content

    async def resolve(self, name: str, tag: str) -> Digest | None:
        try:
            return Digest.parse((await self._driver.get(paths.tag_link(name, tag))).decode())
        except PathNotFoundError:
            return None

    async def tags(self, name: str) -> list[str]:
        return sorted(await self._driver.list(paths.tags_dir(name)))

    async def untag(self, name: str, tag: str) -> bool:
        if await self.resolve(name, tag) is None:
            return False
        await self._driver.delete(paths.tag_dir(name, tag))
        return True

    async def delete(self, name: str, digest: Digest) -> bool:
        """Remove a manifest from a repository, with every tag that points at it."""
        revision = await self._revision(name, digest)
        if revision is None:
            return False
        tags = await self.tags(name)
        targets = await asyncio.gather(*(self.resolve(name, tag) for tag in tags))
        for tag, target in zip(tags, targets, strict=True):
            if target == digest:
                await self._driver.delete(paths.tag_dir(name, tag))
        await self._driver.delete(paths.revision_link(name, digest))
        if subject := revision.get("subject"):
            await self._driver.delete(paths.referrer_entry(name, Digest.parse(subject), digest))
        return True

    async def referrers(self, name: str, subject: Digest) -> list[dict[str, Any]]:
        directory = paths.referrers_dir(name, subject)
        entries = sorted(await self._driver.list(directory))

        async def load(entry: str) -> dict[str, Any] | None:
            try:
                return json.loads(await self._driver.get(f"{directory}/{entry}"))
            except PathNotFoundError:
                return None  # removed while we listed

        loaded = await asyncio.gather(*(load(entry) for entry in entries))
        return [descriptor for descriptor in loaded if descriptor is not None]
