"""Manifests, tags and the referrers index of each repository.

Manifest bytes are stored once in the shared blob store (removed only by the
collector, when no revision references them any more: collector/__init__.py); a
manifest M of a repository is its revision key R (media type, subject), an entry E
in its subject's referrers index (if it has a subject) and its tags T (one key per
tag, holding a digest). Every key is written or removed atomically. Readers trust a
tag or an entry only while R exists (GET by tag and the referrers list read R), so
what a crash leaves half-done reads as absent, and a DELETE of the tag, or of the
digest again, removes it.

Writers take no locks; each side re-checks R after its writes:

    PUT(M, tags), a round:  write R, E, tags; restore missing references (below);
                            read R: present -> done, absent -> another round.
    DELETE(M), a round:     remove the tags on M, E, R; again the tags on M and E;
                            refuse if a manifest now references M (restore R, E);
                            read R: absent -> done, present -> another round.

A DELETE pauses a random, doubling while before each new round, so that racing
PUTs and DELETEs do not undo each other forever: the PUT finishes in the pause and
the DELETE's next round removes it. Each gives up after `_PUT_ROUNDS` or
`_DELETE_ROUNDS` rounds with 503 (clients retry that).

Proof that PUTs and DELETEs of M end consistent when none gives up (no tag or entry
of M without R; with R, E and the tags of the PUT that finished last). Storage is
linearizable per key, and each request's calls run one after another; order every
operation in time and let X be the last final read of R among the requests.
- X is a PUT's read: R present. Let w be the last write of R before X. No removal
  of R follows w (every round removes before its own read, all reads are before X,
  and X sees R). Every DELETE's final read saw R absent, so came before w, as did
  all its removals. The PUT that wrote w reads R after it, finds it: that was its
  final round, and it wrote E and its tags after w, after every removal. All stay.
- X is a DELETE's read: R absent. Every write of R precedes its round's read, so X;
  the last change of R before X is a removal r after every write. A PUT round that
  read R after r would find it absent and write R again later: impossible, so every
  PUT round, with its writes of E and tags, ended before r. The DELETE round of r
  removes the tags on M and E after r, and nothing writes them again: all gone.
A crash (kill -9) between any two calls leaves a prefix of one round: R with some of
E and tags (an untagged manifest: consistent), or tags or E without R (read as
absent; DELETE of the tag or the digest removes the tags, the list skips E). A PUT
that gives up may leave the same; a DELETE that gives up leaves R with fewer tags.
A restore (below) writes R and E like a tagless PUT without the re-check: it leaves
R and E, or, if another DELETE removes R afterwards, an E the list skips.

References: DELETE of a blob or manifest that a manifest of the same repository
references (config, layer or child; never a subject: deleting a signature's subject
is allowed) is refused with UNSUPPORTED naming the referrer. Racing pushes cannot
slip through: DELETE removes the link (or R), then scans again and restores what it
removed if a manifest now references it; PUT writes R, then checks each blob link
and child revision and restores a missing one. If the DELETE's removal comes after
the PUT's check, its scan comes after the PUT's R and sees it; if before, the PUT's
check sees the removal. Either way the referenced content stays. The scan lists the
repository's revisions and reads each one and each manifest's bytes (through the
LRU): proportional to the repository's manifests, once or twice per such DELETE.

Reads: a GET remembers the revision it read (an LRU bounded in bytes), kept under the
deletion generation it was read under (storage/deletions.py): a DELETE publishes a
new one after its rounds and before it answers, so no process serves a deleted
manifest to a request that began after its DELETE answered.
Only GET uses it; DELETE, PUT's re-checks and the reference scans read storage.

Tag lists: every change of a repository's tags (PUT with tags, untag, DELETE) writes a
fresh value to its `tags_changed` key after the tag keys; a listing reads that key
first and reuses the list it last made under the same value (one small GET instead
of listing every tag). A change answered before the read began has written the key,
so the list served is at least as new. A writer killed between its tag keys and the
key leaves other processes the older list for at most `MAX_AGE`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence, Set
from dataclasses import dataclass
from typing import Any

from oci.errors import ErrorCode, RegistryError
from oci.manifests import Descriptor, Manifest, parse_manifest, referenced_digests
from oci.references import Digest, is_tag
from storage import paths
from storage.blobs import BlobStore, digests_below
from storage.catalog import Catalog
from storage.deletions import Deletions, fresh
from storage.driver import PathNotFoundError, StorageDriver
from storage.pulls import PullRecorder

log = logging.getLogger("dockyard.storage")

_CACHED_MANIFEST_BYTES = 64 << 20
_MANIFEST_OVERHEAD = 320  # bytes an entry costs beside its document (measured)
_CACHED_REVISION_BYTES = 4 << 20
_REVISION_OVERHEAD = 400  # bytes an entry costs beside its document and name
_CACHED_TAG_BYTES = 8 << 20
_TAG_OVERHEAD = 60  # bytes a listed tag costs beside its characters
_PUT_ROUNDS = 10
_DELETE_ROUNDS = 5
_DELETE_BACKOFF = 0.005  # seconds before a second round, doubling after each


def _json_object(raw: bytes) -> dict[str, Any] | None:
    """A stored JSON object, or None where the entry is empty or half-written."""
    try:
        value = json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
        return None
    return value if isinstance(value, dict) else None


def _digest_in(raw: bytes) -> Digest | None:
    """The digest a link holds, or None where it is empty or half-written."""
    try:
        return Digest.parse(raw.decode("ascii").strip())
    except (UnicodeDecodeError, RegistryError):
        return None


def _backoff(round_: int) -> float:
    """A random pause of about `_DELETE_BACKOFF * 2**round_` seconds."""
    return _DELETE_BACKOFF * 2**round_ * random.uniform(0.5, 1.5)


@dataclass(frozen=True, slots=True)
class StoredManifest:
    digest: Digest
    media_type: str
    raw: bytes


def _revision_document(manifest: Manifest) -> bytes:
    revision = {"mediaType": manifest.media_type}
    if manifest.subject is not None:
        revision["subject"] = str(manifest.subject)
    return json.dumps(revision).encode()


def _referenced(digest: Digest, kind: str, referrer: Digest, name: str) -> RegistryError:
    return RegistryError(
        ErrorCode.UNSUPPORTED,
        f"{kind} {digest} is referenced by manifest {referrer} of repository {name}; "
        "delete that manifest first",
        detail={"digest": str(digest), "referrer": str(referrer)},
    )


def _contended(digest: Digest, action: str, rounds: int) -> RegistryError:
    return RegistryError(
        ErrorCode.UNAVAILABLE,
        f"manifest {digest} kept changing while it was {action} ({rounds} rounds); retry",
    )


class ManifestStore:
    def __init__(
        self,
        driver: StorageDriver,
        blobs: BlobStore,
        catalog: Catalog,
        deletions: Deletions,
        pull_interval: float,
    ) -> None:
        self._driver = driver
        self._deletions = deletions
        self._blobs = blobs
        self._catalog = catalog
        self.pulls = PullRecorder(driver, pull_interval)
        # Manifest bytes never change under their digest: an LRU of them saves reads.
        self._content: OrderedDict[Digest, bytes] = OrderedDict()
        self._content_bytes = 0
        # (repository, digest) -> (revision, generation, monotonic time stored, cost)
        self._revisions: OrderedDict[
            tuple[str, Digest], tuple[dict[str, Any], bytes, float, int]
        ] = OrderedDict()
        self._revision_bytes = 0
        # repository -> (tags_changed value, sorted tags, monotonic time stored, cost)
        self._tag_lists: OrderedDict[str, tuple[bytes, list[str], float, int]] = OrderedDict()
        self._tag_list_bytes = 0

    # -- writes ------------------------------------------------------------------

    async def put(
        self,
        name: str,
        manifest: Manifest,
        tags: list[str],
        blobs: Sequence[Descriptor],
        children: Sequence[Descriptor],
        immutable: Set[str] = frozenset(),
    ) -> None:
        """Store `manifest` in `name` with `tags`. The caller found `blobs` linked and
        `children` stored in `name`: they are re-checked, and restored, after writing.
        Tags in `immutable` are written only where absent (or already this manifest's)."""
        await self._blobs.put(manifest.raw, manifest.digest)
        tag_value = str(manifest.digest).encode()
        for _ in range(_PUT_ROUNDS):
            await self._write_revision(name, manifest)
            try:
                for tag in immutable.intersection(tags):  # first: a refusal moves no tag
                    await self._create_tag(name, tag, tag_value)
                mutable = [tag for tag in tags if tag not in immutable]
                await asyncio.gather(
                    *(self._driver.put(paths.tag_link(name, tag), tag_value) for tag in mutable)
                )
            finally:
                if tags:
                    await self._tags_changed(name)
            await self._restore_references(name, blobs, children)
            if await self.exists(name, manifest.digest):
                await self._catalog.add(name)  # after the content: see Catalog
                return
        raise _contended(manifest.digest, "pushed", _PUT_ROUNDS)

    async def _create_tag(self, name: str, tag: str, value: bytes) -> None:
        """An immutable tag: written only where absent (or already `value`), by a
        conditional create, so of two pushes racing to a new one exactly one wins."""
        key = paths.tag_link(name, tag)
        if await self._driver.create(key, value) is None and await self._driver.get(key) != value:
            raise RegistryError(
                ErrorCode.DENIED,
                f"tag {tag} of {name} is immutable and another manifest was pushed to it "
                "at the same moment; it cannot be moved",
                detail={"tag": tag},
            )

    async def _write_revision(self, name: str, manifest: Manifest) -> None:
        """R, then E: the part of a manifest a tagless PUT (or a restore) writes."""
        digest = manifest.digest
        await self._driver.put(paths.revision_link(name, digest), _revision_document(manifest))
        if manifest.subject is not None:
            entry = paths.referrer_entry(name, manifest.subject, digest)
            await self._driver.put(entry, json.dumps(manifest.referrer_descriptor()).encode())

    async def _restore_references(
        self, name: str, blobs: Sequence[Descriptor], children: Sequence[Descriptor]
    ) -> None:
        """Give back blob links and child manifests a racing DELETE removed after the
        caller checked them (their content is still in the shared store)."""
        linked = await asyncio.gather(*(self._blobs.is_linked(name, b.digest) for b in blobs))
        for blob, found in zip(blobs, linked, strict=True):
            # Vouched for by the caller's check: the collector leaves it for the grace.
            if not found and await self._blobs.size(blob.digest) is not None:
                await self._blobs.link(name, blob.digest)
        present = await asyncio.gather(*(self.exists(name, child.digest) for child in children))
        for child, found in zip(children, present, strict=True):
            if not found:
                await self._restore(name, child.digest, child.media_type)

    async def _restore(self, name: str, digest: Digest, media_type: str) -> None:
        """Write R and E of a manifest whose bytes are stored, as its PUT did."""
        raw = await self._content_of(digest)
        try:
            manifest = parse_manifest(raw, media_type, digest)
        except RegistryError:  # a descriptor's media type that the document contradicts
            manifest = parse_manifest(raw, None, digest)
        await self._write_revision(name, manifest)

    async def untag(self, name: str, tag: str) -> bool:
        """Remove a tag, also one whose manifest is gone or whose link is half-written
        (a crash's leftovers)."""
        if not await self._driver.exists(paths.tag_link(name, tag)):
            return False
        await self._driver.delete(paths.tag_link(name, tag))
        await self._tags_changed(name)
        return True

    async def _untag_all(self, name: str, digest: Digest) -> int:
        """Remove every tag of `name` that points at `digest`; how many there were."""
        tags = await self._listed_tags(name)
        targets = await asyncio.gather(*(self.resolve(name, tag) for tag in tags))
        doomed = [tag for tag, target in zip(tags, targets, strict=True) if target == digest]
        await asyncio.gather(*(self._driver.delete(paths.tag_link(name, tag)) for tag in doomed))
        if doomed:
            await self._tags_changed(name)
        return len(doomed)

    async def _tags_changed(self, name: str) -> None:
        """Tell every process's tag list cache that `name`'s tags changed (after them)."""
        await self._driver.put(paths.tags_changed(name), uuid.uuid4().hex.encode())

    async def delete(self, name: str, digest: Digest) -> bool:
        """Remove a manifest from a repository, with every tag that points at it.

        Refused while another manifest of the repository references it. False if
        there was neither the manifest nor a tag on it (a crashed DELETE's leftover).
        Even then it runs the rounds: a PUT may write the manifest meanwhile. A round
        reads every tag of the repository twice and scans its manifests once.
        """
        revision = await self._revision(name, digest)
        if revision is not None and (referrer := await self.referencing(name, digest)):
            raise _referenced(digest, "manifest", referrer, name)
        found = revision is not None
        for round_ in range(_DELETE_ROUNDS):
            if round_:
                await asyncio.sleep(_backoff(round_))  # let the PUT that won finish
            subject = revision.get("subject") if revision else None
            entry = paths.referrer_entry(name, Digest.parse(subject), digest) if subject else None
            for remove_revision in (True, False):
                found = await self._untag_all(name, digest) > 0 or found
                if entry:
                    await self._driver.delete(entry)
                if remove_revision:
                    await self._driver.delete(paths.revision_link(name, digest))
            if revision and (referrer := await self.referencing(name, digest)):
                await self._restore(name, digest, revision["mediaType"])
                raise _referenced(digest, "manifest", referrer, name)
            again = await self._revision(name, digest)
            if again is None:
                await self._deletions.published()
                await self.pulls.forget(name, digest)
                return found
            revision, found = again, True
        raise _contended(digest, "deleted", _DELETE_ROUNDS)

    async def unlink_blob(self, name: str, digest: Digest) -> bool:
        """Take a blob from a repository, refused while a manifest there references it."""
        if referrer := await self.referencing(name, digest):
            raise _referenced(digest, "blob", referrer, name)
        if not await self._blobs.unlink(name, digest):
            return False
        if referrer := await self.referencing(name, digest):  # pushed meanwhile
            await self._blobs.link(name, digest)
            raise _referenced(digest, "blob", referrer, name)
        return True

    # -- reads -------------------------------------------------------------------

    async def _revision(self, name: str, digest: Digest) -> dict[str, Any] | None:
        try:
            raw = await self._driver.get(paths.revision_link(name, digest))
        except PathNotFoundError:
            return None
        revision = _json_object(raw)
        if revision is None or not isinstance(revision.get("mediaType"), str):
            return None  # half-written (an S3 server that kept a cut-off PUT): not there
        return revision

    async def _remembered_revision(self, name: str, digest: Digest) -> dict[str, Any] | None:
        """`_revision` through the LRU of revisions read under the current generation."""
        generation = await self._deletions.current()  # before the read it covers
        key = (name, digest)
        remembered = self._revisions.get(key)
        if remembered is not None:
            revision, read_under, stored_at, _ = remembered
            if read_under == generation and fresh(stored_at):
                self._revisions.move_to_end(key)
                return revision
            self._forget_revision(key)
        stored_at = time.monotonic()
        revision = await self._revision(name, digest)
        if revision is None:
            return None
        if (old := self._revisions.get(key)) is not None and old[1] == generation:
            return revision  # a concurrent GET stored it meanwhile
        self._forget_revision(key)
        cost = len(name) + len(json.dumps(revision)) + _REVISION_OVERHEAD
        self._revisions[key] = (revision, generation, stored_at, cost)
        self._revision_bytes += cost
        while self._revision_bytes > _CACHED_REVISION_BYTES:
            self._revision_bytes -= self._revisions.popitem(last=False)[1][3]
        return revision

    def _forget_revision(self, key: tuple[str, Digest]) -> None:
        if (old := self._revisions.pop(key, None)) is not None:
            self._revision_bytes -= old[3]

    async def exists(self, name: str, digest: Digest) -> bool:
        return await self._driver.exists(paths.revision_link(name, digest))

    async def get(self, name: str, digest: Digest) -> StoredManifest | None:
        """The manifest `digest` of repository `name`, or None if it is not there.

        The revision is read even when `digest` comes from a tag: a tag whose revision
        is gone (a crash in the middle of a DELETE) is no tag. Bytes the LRU lacks are
        read at the same time as the revision.
        """
        raw = self._cached_content(digest)
        if raw is not None:
            revision = await self._remembered_revision(name, digest)
        else:
            revision, raw = await asyncio.gather(
                self._remembered_revision(name, digest), self._stored_content(digest)
            )
        if revision is None or raw is None:
            return None
        return StoredManifest(digest, revision["mediaType"], raw)

    async def _stored_content(self, digest: Digest) -> bytes | None:
        try:
            return await self._content_of(digest)
        except PathNotFoundError:
            return None

    def _cached_content(self, digest: Digest) -> bytes | None:
        raw = self._content.get(digest)
        if raw is not None:
            self._content.move_to_end(digest)
        return raw

    async def _content_of(self, digest: Digest) -> bytes:
        raw = self._cached_content(digest)
        if raw is not None:
            return raw
        raw = await self._blobs.get(digest)
        if Digest.of(raw, digest.algorithm) != digest:
            # Never serve bytes that do not hash to the digest (a cut-off write some S3
            # servers keep as an empty object): missing, until a push stores it again.
            log.warning("stored content of %s does not match its digest; ignored", digest)
            raise PathNotFoundError(paths.blob_data(digest))
        if digest not in self._content:  # another request may have filled it meanwhile
            self._content[digest] = raw
            self._content_bytes += len(raw) + _MANIFEST_OVERHEAD
            while self._content_bytes > _CACHED_MANIFEST_BYTES:
                evicted = self._content.popitem(last=False)[1]
                self._content_bytes -= len(evicted) + _MANIFEST_OVERHEAD
        return raw

    async def resolve(self, name: str, tag: str) -> Digest | None:
        """The tag's digest; None if there is no such tag or its link is half-written."""
        try:
            return _digest_in(await self._driver.get(paths.tag_link(name, tag)))
        except PathNotFoundError:
            return None

    async def tags(self, name: str) -> list[str]:
        """The repository's tags, sorted: the list made last under the same value of its
        `tags_changed` key (read first), else a listing."""
        try:
            changed = await self._driver.get(paths.tags_changed(name))
        except PathNotFoundError:
            return await self._listed_tags(name)  # never changed since this was added
        remembered = self._tag_lists.get(name)
        if remembered is not None:
            value, tags, stored_at, cost = remembered
            if value == changed and fresh(stored_at):
                self._tag_lists.move_to_end(name)
                return list(tags)
            del self._tag_lists[name]
            self._tag_list_bytes -= cost
        stored_at = time.monotonic()
        tags = await self._listed_tags(name)
        if name in self._tag_lists:  # a concurrent listing stored one meanwhile
            return tags
        cost = sum(len(tag) + _TAG_OVERHEAD for tag in tags) + len(name) + _TAG_OVERHEAD
        self._tag_lists[name] = (changed, tags, stored_at, cost)
        self._tag_list_bytes += cost
        while self._tag_list_bytes > _CACHED_TAG_BYTES:
            self._tag_list_bytes -= self._tag_lists.popitem(last=False)[1][3]
        return list(tags)

    async def _listed_tags(self, name: str) -> list[str]:
        """Sorted; an entry that is no valid tag (placed by hand) is left out."""
        return sorted(tag for tag in await self._driver.list(paths.tags_dir(name)) if is_tag(tag))

    async def digests(self, name: str) -> list[Digest]:
        """Digests of the revisions listed in `name` (some may be gone by now)."""
        return sorted(await digests_below(self._driver, paths.revisions_dir(name)), key=str)

    async def referencing(self, name: str, digest: Digest) -> Digest | None:
        """A manifest of `name` whose config, layers or children include `digest`.

        Reads every manifest of the repository: meant for the rare deletes.
        """
        wanted = str(digest)

        async def references(candidate: Digest) -> bool:
            if candidate == digest or not await self.exists(name, candidate):
                return False
            raw = await self._stored_content(candidate)
            return raw is not None and wanted in referenced_digests(raw)

        candidates = await self.digests(name)
        found = await asyncio.gather(*(references(candidate) for candidate in candidates))
        return next((c for c, hit in zip(candidates, found, strict=True) if hit), None)

    async def referrers(self, name: str, subject: Digest) -> list[dict[str, Any]]:
        """Descriptors of the manifests of `name` whose subject is `subject`."""
        directory = paths.referrers_dir(name, subject)
        entries = sorted(await self._driver.list(directory))

        async def load(entry: str) -> dict[str, Any] | None:
            algorithm, _, encoded = entry.partition("-")
            try:
                descriptor, present = await asyncio.gather(
                    self._driver.get(f"{directory}/{entry}"),
                    self.exists(name, Digest.parse(f"{algorithm}:{encoded}")),
                )
            except PathNotFoundError:
                return None  # removed while we listed
            except RegistryError:
                return None  # not an entry's name
            return _json_object(descriptor) if present else None  # its manifest is gone

        loaded = await asyncio.gather(*(load(entry) for entry in entries))
        return [descriptor for descriptor in loaded if descriptor is not None]
