"""The mark: which digests the manifests of a repository reference.

A manifest references its own bytes (a blob), and every descriptor it holds: config,
layers, index children, subject, and anything an extension adds. Rather than trust a
schema, every `digest` string anywhere in the document counts: a superset, so the
mark can only keep too much, never too little. Digests are kept as strings (about
130 bytes each with the set's share: 100,000 live blobs take ~15 MB).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from oci.errors import RegistryError
from oci.references import Digest
from storage import paths
from storage.blobs import links_below
from storage.driver import FileInfo, PathNotFoundError
from storage.store import Store

log = logging.getLogger("dockyard.gc")


@dataclass(frozen=True, slots=True)
class Revision:
    digest: Digest
    subject: Digest | None
    modified: float  # when the revision link was written


def _digests_in(document: Any) -> Iterator[str]:
    if isinstance(document, dict):
        value = document.get("digest")
        if isinstance(value, str):
            yield value
        for item in document.values():
            yield from _digests_in(item)
    elif isinstance(document, list):
        for item in document:
            yield from _digests_in(item)


async def revisions(store: Store, name: str) -> list[Revision]:
    """The manifests stored in repository `name`: one listing, plus one read each."""
    links = await links_below(store.driver, paths.revisions_dir(name))
    found = await asyncio.gather(*(_revision(store, digest, info) for digest, info in links))
    return [revision for revision in found if revision is not None]


async def _revision(store: Store, digest: Digest, info: FileInfo) -> Revision | None:
    try:
        revision = json.loads(await store.driver.get(info.key))
    except PathNotFoundError:
        return None  # deleted meanwhile
    except ValueError:
        revision = {}  # half-written by an older version: keep what it references
    subject = revision.get("subject") if isinstance(revision, dict) else None
    try:
        parsed = Digest.parse(subject) if isinstance(subject, str) else None
    except RegistryError:
        parsed = None
    return Revision(digest, parsed, info.modified)


async def referenced(store: Store, digest: Digest) -> set[str]:
    """The digests manifest `digest` references, itself included."""
    found = {str(digest)}
    try:
        document = json.loads(await store.blobs.get(digest))
    except PathNotFoundError:
        log.warning("manifest %s has no content: its revision is broken", digest)
        return found
    except ValueError:
        log.warning("manifest %s is not JSON: nothing it references is known", digest)
        return found
    found.update(_digests_in(document))  # as written: stored digests are canonical too
    return found


async def layer_links(store: Store, name: str) -> list[tuple[Digest, float]]:
    """(blob, link time) of every blob given to repository `name`."""
    return [
        (digest, info.modified)
        for digest, info in await links_below(store.driver, paths.layers_dir(name))
    ]
