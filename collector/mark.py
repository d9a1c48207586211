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
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from collector.known_references import Known, KnownReferences
from oci.errors import RegistryError
from oci.references import Digest
from storage import paths
from storage.blobs import links_below
from storage.driver import PathNotFoundError
from storage.store import Store

log = logging.getLogger("dockyard.gc")


@dataclass(frozen=True, slots=True)
class Revision:
    digest: Digest
    modified: float  # when the revision link was written
    subject: Digest | None
    references: frozenset[str]  # every digest the manifest references, itself included
    readable: bool = True  # False: its bytes are missing or no JSON (it references only itself)


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


def _subject_of(document: Any) -> str | None:
    subject = document.get("subject") if isinstance(document, dict) else None
    digest = subject.get("digest") if isinstance(subject, dict) else None
    return digest if isinstance(digest, str) and _parsed(digest) is not None else None


def _parsed(digest: str | None) -> Digest | None:
    try:
        return Digest.parse(digest) if digest is not None else None
    except RegistryError:
        return None


async def revisions(
    store: Store, name: str, known: KnownReferences | None = None
) -> list[Revision]:
    """The manifests stored in repository `name`: one listing, plus one read of each
    manifest's bytes that `known` does not hold (its subject is in them too: the
    revision link is not read)."""
    links = await links_below(store.driver, paths.revisions_dir(name))
    return list(
        await asyncio.gather(
            *(_revision(store, digest, info.modified, known) for digest, info in links)
        )
    )


async def _revision(
    store: Store, digest: Digest, modified: float, known: KnownReferences | None
) -> Revision:
    itself = sys.intern(str(digest))
    found = known.get(itself) if known is not None else None
    if found is None:
        found = await _read(store, digest)
        if found is None:
            return Revision(digest, modified, None, frozenset({itself}), readable=False)
        if known is not None:
            known.add(itself, found)
    # As written: stored digests are canonical too. Interned: the run shares them (run.py).
    references = frozenset({itself, *map(sys.intern, found.references)})
    return Revision(digest, modified, _parsed(found.subject), references)


async def _read(store: Store, digest: Digest) -> Known | None:
    """What the manifest stored under `digest` references; None when that is unknown."""
    try:
        document = json.loads(await store.blobs.get(digest))
    except PathNotFoundError:
        log.warning("manifest %s has no content: its revision is broken", digest)
        return None
    except ValueError:
        log.warning("manifest %s is not JSON: nothing it references is known", digest)
        return None
    return Known(_subject_of(document), list(set(_digests_in(document))))
