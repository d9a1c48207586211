"""Content-addressed blobs shared by all repositories, and each repository's links to them.

A repository serves only the blobs it was given (pushed, mounted, or referenced by
a manifest pushed to it); the bytes are stored once for the whole registry.

Blob data is only ever written whole and verified: `commit` stores the bytes an
upload hashed (`Writer.commit`, atomic), `put` a manifest under the digest computed
from its bytes (atomic). So a stored blob holds its digest's bytes, and a second
upload of the same digest keeps it after one size check: that check (not the cached
size) replaces a blob whose size is wrong, as older versions could store (an
upload's bytes plus what a racing request appended).

Before the API says a blob exists it `vouch`es for it: writes the blob's `touched`
marker, then checks no collector has a `tomb` on it, then reads the blob again from
storage (never from the size cache). The collector writes the tomb before it reads the
touch, so one of the two always sees the other: see collector/__init__.py.

A process remembers what it vouched for (the size, per repository link) and answers
again from memory, with no storage call, while both hold:
- its own touch of the blob is younger than `touch_every`. The collector deletes a
  blob (or a link to it) only when its touch is older than its cutoff, now - grace -
  grace/10, and it read that touch after writing its tomb, after our vouch's tomb
  check found none, so after our touch. A touch at Tv younger than grace/10 at the
  answer T means no run deletes the blob before T + grace: what the uncached path
  promises (it skips the touch write for the same grace/10 already).
- the deletion generation it was read under is current (storage/deletions.py): an
  API DELETE of the link, or any other removal, anywhere, ends it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import NamedTuple, TypeVar

from oci.errors import ErrorCode, RegistryError
from oci.references import Digest, is_digest_of
from storage import paths, stale_tombs
from storage.catalog import Catalog
from storage.deletions import Deletions, fresh
from storage.driver import (
    FileInfo,
    KeyConflictError,
    PathNotFoundError,
    StorageDriver,
    Writer,
)

# Each of a process's maps of sizes and of touches: a digest and a number cost ~280
# bytes an entry (measured), so 20,000 entries are ~5.6 MB; a full map starts afresh.
_REMEMBERED = 20_000
_VOUCHED = 20_000  # entries of ~200 bytes: 4 MB at most
_K = TypeVar("_K")
_V = TypeVar("_V")


def _remember(known: dict[_K, _V], key: _K, value: _V, bound: int) -> None:
    """Put `value` in a map of at most `bound` entries (a full one starts afresh)."""
    if len(known) >= bound:
        known.clear()
    known[key] = value


def being_collected(digest: Digest) -> RegistryError:
    return RegistryError(
        ErrorCode.UNAVAILABLE,
        f"blob {digest} is being removed by the garbage collector: retry the push",
        detail={"digest": str(digest)},
    )


async def links_below(driver: StorageDriver, directory: str) -> list[tuple[Digest, FileInfo]]:
    """Each digest of a `<alg>/<hex>/link` tree (links, revisions) whose link is stored,
    with the link's listing.

    Objects below, not folders: servers with real folders (SeaweedFS) go on listing an
    emptied folder for minutes, and removing the folder as well races a concurrent write
    into it (which then stores an object no listing shows).
    """
    start = len(directory) + 1
    found = []
    for info in await driver.scan_leaves(directory, "link"):
        algorithm, encoded, _ = info.key[start:].split("/")
        if is_digest_of(algorithm, encoded):
            found.append((Digest(algorithm, encoded), info))
    return found


async def digests_below(driver: StorageDriver, directory: str) -> set[Digest]:
    """The digests of a `<alg>/<hex>/link` tree (`links_below`), without their listing."""
    return {digest for digest, _ in await links_below(driver, directory)}


class LayerLink(NamedTuple):
    digest: Digest
    modified: float
    legacy: bool  # in the shape older versions wrote: `paths.legacy_layer_link`


async def layer_links_of(driver: StorageDriver, name: str) -> list[LayerLink]:
    """Each blob given to repository `name`, with its link's time and shape: the link
    files `<alg>/<hex>`, and the `<alg>/<hex>/link` ones older versions wrote (a blob
    linked in both shapes is listed twice)."""
    directory = paths.layers_dir(name)
    start = len(directory) + 1
    found = []
    for info in await driver.scan(directory):
        parts = info.key[start:].split("/")
        if len(parts) in (2, 3) and parts[2:] in ([], ["link"]) and is_digest_of(*parts[:2]):
            found.append(LayerLink(Digest(parts[0], parts[1]), info.modified, len(parts) == 3))
    return found


class BlobStore:
    def __init__(
        self,
        driver: StorageDriver,
        catalog: Catalog,
        deletions: Deletions,
        touch_every: float = 0.0,
    ) -> None:
        self._driver = driver
        self._catalog = catalog
        self._deletions = deletions
        # Content never changes under its digest, so its size can be remembered; but
        # the collector may delete it, so only `size` (a hint) answers from here.
        self._sizes: dict[Digest, int] = {}
        # Our own last touch of each digest (monotonic time when we wrote it): a touch
        # younger than `touch_every` is not written again. The collector allows for it.
        self._touch_every = touch_every
        self._touched: dict[Digest, float] = {}
        # (repository or None, digest) -> (size, generation, monotonic time stored)
        self._vouched: dict[tuple[str | None, Digest], tuple[int, bytes, float]] = {}

    async def size(self, digest: Digest) -> int | None:
        """Size of the blob's content, or None: a hint (maybe cached), not a promise."""
        if digest in self._sizes:
            return self._sizes[digest]
        return await self._stored_size(digest)

    async def _stored_size(self, digest: Digest) -> int | None:
        try:
            info = await self._driver.stat(paths.blob_data(digest))
        except PathNotFoundError:
            self._sizes.pop(digest, None)
            return None
        if info.size == 0 and digest != Digest.of(b"", digest.algorithm):
            return None  # a cut-off write some S3 servers keep as an empty object
        _remember(self._sizes, digest, info.size, _REMEMBERED)
        return info.size

    async def vouch(self, digest: Digest) -> bool:
        """Touch the blob, then check the collector is not deleting it (False: it is,
        so answer that the blob is missing). Tombs a killed collector left long ago are
        removed on the way (storage/stale_tombs.py)."""
        now = time.monotonic()
        last = self._touched.get(digest)
        if last is None or now - last >= self._touch_every:
            await self._driver.put(paths.blob_touched(digest), b"")
            _remember(self._touched, digest, now, _REMEMBERED)
        entries = await self._driver.list(paths.blob_dir(digest))
        tombs = [entry for entry in entries if paths.is_tomb(entry)]
        return not tombs or await stale_tombs.cleared(self._driver, digest, tombs)

    async def vouched_size(self, digest: Digest, name: str | None = None) -> int | None:
        """Size of a blob the API may now say exists (given to repository `name`, if
        set), or None. Nothing it vouches for is deleted within the grace period."""
        if not self._touch_every:
            return await self._vouch_size(digest, name)
        remembered = self._vouched.get((name, digest))
        if remembered is None and name is not None:
            if not await self.is_linked(name, digest):
                return None  # a push's HEAD of a blob it has yet to upload
            name_checked = True
        else:
            name_checked = False
        generation = await self._deletions.current()  # before any read it covers
        if remembered is not None:
            size, read_under, stored_at = remembered
            touched = self._touched.get(digest)
            if (
                read_under == generation
                and touched is not None
                and time.monotonic() - touched < self._touch_every
                and fresh(stored_at)
            ):
                return size
        stored_at = time.monotonic()
        size = await self._vouch_size(digest, name, name_checked)
        if size is not None:
            _remember(self._vouched, (name, digest), (size, generation, stored_at), _VOUCHED)
        return size

    async def _vouch_size(
        self, digest: Digest, name: str | None, name_checked: bool = False
    ) -> int | None:
        """The uncached vouch; `name_checked`: the caller just found the link (the check
        after the vouch, the one that counts, still reads it again)."""
        if name is not None and not name_checked and not await self.is_linked(name, digest):
            return None  # the cheap answer for blobs we do not have: no touch written
        if await self.size(digest) is None or not await self.vouch(digest):
            return None
        if name is not None and not await self.is_linked(name, digest):
            return None
        return await self._stored_size(digest)

    async def link(self, name: str, digest: Digest) -> None:
        # Empty: only its existence is read (its key names the blob), and on a disk an
        # empty file holds no block to write now, nor to free (and discard) when it goes.
        try:
            await self._driver.put(paths.layer_link(name, digest), b"")
        except KeyConflictError:  # the folder of the link as an older version wrote it
            await self._driver.put(paths.legacy_layer_link(name, digest), b"")
        await self._catalog.add(name)  # after the content: see Catalog

    async def is_linked(self, name: str, digest: Digest) -> bool:
        """Whether the blob was given to repository `name` (its link in either shape)."""
        return await self._driver.exists(paths.layer_link(name, digest)) or (
            await self._driver.exists(paths.legacy_layer_link(name, digest))
        )

    async def unlink(self, name: str, digest: Digest) -> bool:
        if not await self.is_linked(name, digest):
            return False
        await self._driver.delete(paths.layer_link(name, digest))  # the legacy shape below it too
        await self._deletions.published()
        return True

    async def links(self, name: str) -> set[Digest]:
        """The blobs linked to this repository (a listing; links are not read)."""
        return {link.digest for link in await layer_links_of(self._driver, name)}

    async def commit(self, writer: Writer, digest: Digest) -> None:
        """Store what `writer` holds as the content of `digest` (verified by the caller);
        the caller closes the writer if this fails."""
        try:
            stored = (await self._driver.stat(paths.blob_data(digest))).size
        except PathNotFoundError:
            stored = None
        if stored == writer.size:
            await writer.cancel()  # already stored: keep the one copy
        else:
            await writer.commit(paths.blob_data(digest))  # absent, or wrong: replace atomically
            _remember(self._sizes, digest, writer.size, _REMEMBERED)
        if not await self.vouch(digest):
            raise being_collected(digest)

    async def put(self, data: bytes, digest: Digest) -> None:
        """Store small content (a manifest) under its digest, once: kept if what is
        stored there has its size, else (absent, or a cut-off write) replaced."""
        if not await self.vouch(digest):
            raise being_collected(digest)
        try:
            stored = (await self._driver.stat(paths.blob_data(digest))).size
        except PathNotFoundError:
            stored = None
        if stored != len(data):
            await self._driver.put(paths.blob_data(digest), data)
            _remember(self._sizes, digest, len(data), _REMEMBERED)

    async def get(self, digest: Digest) -> bytes:
        return await self._driver.get(paths.blob_data(digest))

    def reader(
        self, digest: Digest, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        return self._driver.reader(paths.blob_data(digest), offset, length)

    async def redirect_url(self, digest: Digest) -> str | None:
        return await self._driver.redirect_url(paths.blob_data(digest))
