"""Blob upload sessions, kept in storage so any process can serve any request of one.

A session is `uploads/<id>/`: an info key (its repository, digest algorithm, start
time) and a data key that a driver `Writer` appends to. Bytes stream from the request
to the writer in `FLUSH_SIZE` batches while being hashed in a thread, so memory stays
flat and the event loop never hashes.

One writer, exact commits (no process's memory is trusted for either):
- Every request that changes a session (PATCH, PUT, DELETE, the purge) first owns its
  data key through the driver (`writer()`): an flock on the filesystem, a lease object
  taken by conditional writes on S3. A second request meanwhile gets 416
  BLOB_UPLOAD_INVALID at once; a finished or cancelled session cannot be revived.
- The digest is checked on the bytes the owned writer streams (`Writer.chunks()`), and
  `Writer.commit` stores exactly those: the filesystem renames the very file it read
  while still holding its lock; S3 pins every stored piece by ETag and uploads the
  tail from the buffer it hashed, so even a writer whose lease expired under it can
  never store bytes that were not hashed.
- A process may reuse the running hash of a session it served before, but only when
  the writer's `version` (inode and size; the ETags of the pieces) shows the bytes are
  the ones it hashed.
- A digest that is already stored is kept only if its size matches (see BlobStore).

Sessions are purged by last activity (the newest time of their info, data or folder),
and only while the purge owns the data key, so a live upload is never touched and a
session still being created (fresh folder or info) is left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any

from oci.errors import ErrorCode, RegistryError
from oci.references import Digest, supported_algorithm
from storage import paths
from storage.blobs import BlobStore
from storage.driver import (
    PathNotFoundError,
    StorageDriver,
    StorageError,
    Writer,
    WriterBusyError,
)

# Heap-sized (below the 1 MiB mmap threshold of registry/malloc.py): 256 KiB batches took
# 15% less CPU than 2 MiB ones, and hold less memory per upload.
FLUSH_SIZE = 256 << 10
_REMEMBERED_HASHES = 4096


@dataclass(frozen=True, slots=True)
class Upload:
    name: str
    id: str
    algorithm: str
    offset: int
    started: float


def _unknown(upload_id: str) -> RegistryError:
    return RegistryError(ErrorCode.BLOB_UPLOAD_UNKNOWN, detail={"uuid": upload_id[:64]})


class UploadStore:
    def __init__(self, driver: StorageDriver, blobs: BlobStore) -> None:
        self._driver = driver
        self._blobs = blobs
        # upload id -> (writer version, hasher of exactly those bytes)
        self._hashers: OrderedDict[str, tuple[str, Any]] = OrderedDict()

    async def start(self, name: str, algorithm: str = "sha256") -> Upload:
        supported_algorithm(algorithm)
        upload = Upload(name, uuid.uuid4().hex, algorithm, 0, time.time())
        info = {"name": name, "algorithm": algorithm, "started": upload.started}
        await self._driver.put(paths.upload_info(upload.id), json.dumps(info).encode())
        try:
            writer = await self._driver.writer(paths.upload_data(upload.id))
        except BaseException:
            with contextlib.suppress(StorageError):  # else the purge removes it later
                await self._driver.delete(paths.upload_dir(upload.id))
            raise
        await writer.close()
        return upload

    async def get(self, name: str, upload_id: str) -> Upload:
        if not paths.is_upload_id(upload_id):
            raise _unknown(upload_id)
        try:
            info = json.loads(await self._driver.get(paths.upload_info(upload_id)))
        except (PathNotFoundError, ValueError):  # absent, or half-written by a cut-off PUT
            raise _unknown(upload_id) from None
        if not isinstance(info, dict) or info.get("name") != name:
            raise _unknown(upload_id)
        try:
            offset = (await self._driver.stat(paths.upload_data(upload_id))).size
        except PathNotFoundError:
            offset = 0
        return Upload(name, upload_id, info["algorithm"], offset, info["started"])

    @contextlib.asynccontextmanager
    async def _writing(self, upload: Upload) -> AsyncIterator[Writer]:
        """Own the session's data for the block (closing the writer after it, which does
        nothing once committed or cancelled); another owner means 416."""
        try:
            writer = await self._driver.writer(paths.upload_data(upload.id), append=True)
        except PathNotFoundError:
            raise _unknown(upload.id) from None
        except WriterBusyError:
            raise self._busy(upload) from None
        try:
            yield writer
        except WriterBusyError:
            raise self._busy(upload) from None
        finally:
            await writer.close()

    @staticmethod
    def _busy(upload: Upload) -> RegistryError:
        return RegistryError(
            ErrorCode.BLOB_UPLOAD_INVALID,
            "another request is writing to this upload",
            status=416,
            detail={"uuid": upload.id},
        )

    @staticmethod
    def _check_offset(upload: Upload, writer: Writer) -> None:
        if writer.size != upload.offset:
            raise RegistryError(
                ErrorCode.BLOB_UPLOAD_INVALID,
                f"the upload moved on to offset {writer.size} meanwhile",
                status=416,
            )

    async def append(self, upload: Upload, chunks: AsyncIterable[bytes]) -> Upload:
        """Stream `chunks` onto the end of the session; returns the session after it."""
        async with self._writing(upload) as writer:
            self._check_offset(upload, writer)
            hasher = await self._write(upload, writer, chunks)
            await writer.close()
            if hasher is not None:
                self._remember_hasher(upload.id, writer.version, hasher)
            return Upload(upload.name, upload.id, upload.algorithm, writer.size, upload.started)

    async def _write(
        self, upload: Upload, writer: Writer, chunks: AsyncIterable[bytes], hashed: Any = None
    ) -> Any:
        """Append `chunks`; returns a hasher of all the writer's bytes, if this process
        has one, else None. `hashed`: the caller's hasher of exactly `chunks`, each fed to
        it before it is handed over, onto a writer that holds nothing yet: the chunks are
        written, not hashed again."""
        if hashed is not None and writer.size != 0:
            raise StorageError(f"upload {upload.id} is not empty: its chunks are not all hashed")
        hasher = hashed if hashed is not None else self._take_hasher(upload, writer)
        hashing = hasher if hashed is None else None
        batch: list[bytes] = []
        batched = 0
        async for chunk in chunks:
            batch.append(chunk)
            batched += len(chunk)
            if batched >= FLUSH_SIZE:
                # Drop the chunks before writing, and the joined copy after.
                data, batch, batched = b"".join(batch), [], 0
                await self._flush(writer, hashing, data)
                del data
        if batch:
            await self._flush(writer, hashing, b"".join(batch))
        return hasher

    @staticmethod
    async def _flush(writer: Writer, hasher: Any, data: bytes) -> None:
        if hasher is None:
            await writer.write(data)
        else:
            await asyncio.gather(asyncio.to_thread(hasher.update, data), writer.write(data))

    def _take_hasher(self, upload: Upload, writer: Writer, algorithm: str | None = None) -> Any:
        """A hasher of exactly the writer's bytes so far, or None."""
        algorithm = algorithm or upload.algorithm
        remembered = self._hashers.pop(upload.id, None)
        if writer.size == 0:
            return hashlib.new(algorithm)
        if remembered and remembered[0] == writer.version and remembered[1].name == algorithm:
            return remembered[1]
        return None

    def _remember_hasher(self, upload_id: str, version: str, hasher: Any) -> None:
        self._hashers[upload_id] = (version, hasher)
        while len(self._hashers) > _REMEMBERED_HASHES:
            self._hashers.popitem(last=False)

    async def _digest(self, hasher: Any, writer: Writer, algorithm: str) -> Digest:
        """Digest of the bytes the writer will commit."""
        if hasher is None or hasher.name != algorithm:
            hasher = hashlib.new(algorithm)
            async for chunk in writer.chunks():
                await asyncio.to_thread(hasher.update, chunk)
        return Digest(algorithm, hasher.hexdigest())

    async def finish(
        self,
        upload: Upload,
        expected: Digest,
        chunks: AsyncIterable[bytes] | None = None,
        expected_length: int | None = None,
        hashed: Any = None,
    ) -> int:
        """Append the last chunk, verify the digest, store the blob and link it.

        Returns the blob size. On a digest or size mismatch nothing is stored and
        the session is gone. `hashed`: see `_write` (a pull-through fill hashes the
        upstream's bytes as they come, to know the digest before they are all written).
        """
        async with self._writing(upload) as writer:
            if chunks is None:
                hasher = self._take_hasher(upload, writer, expected.algorithm)
            else:
                self._check_offset(upload, writer)
                hasher = await self._write(upload, writer, chunks, hashed)
            size = writer.size
            if expected_length is not None and size - upload.offset != expected_length:
                await self._discard(upload, writer)
                raise RegistryError(
                    ErrorCode.SIZE_INVALID,
                    f"received {size - upload.offset} bytes, Content-Length said {expected_length}",
                )
            actual = await self._digest(hasher, writer, expected.algorithm)
            if actual != expected:
                await self._discard(upload, writer)
                raise RegistryError(
                    ErrorCode.DIGEST_INVALID,
                    f"content has digest {actual}, not {expected}",
                    detail={"digest": str(expected)},
                )
            await self._blobs.commit(writer, expected)
        await self._blobs.link(upload.name, expected)
        await self._driver.delete(paths.upload_dir(upload.id))
        return size

    async def _discard(self, upload: Upload, writer: Writer) -> None:
        self._hashers.pop(upload.id, None)
        await writer.cancel()
        await self._driver.delete(paths.upload_dir(upload.id))

    async def cancel(self, upload: Upload) -> None:
        async with self._writing(upload) as writer:
            await self._discard(upload, writer)

    async def purge(self, older_than: float, dry_run: bool = False) -> list[str]:
        """Remove sessions idle since before `older_than` (epoch seconds); returns their
        ids (`dry_run`: of those it would remove). Safe to run in every process at once."""
        removed = []
        for upload_id in await self._driver.list(paths.uploads_dir()):
            if not paths.is_upload_id(upload_id):
                continue
            if dry_run:
                last = await self._last_activity(upload_id)
                idle = last is not None and last < older_than
            else:
                idle = await self._purge_idle(upload_id, older_than)
            if idle:
                removed.append(upload_id)
        return removed

    async def _last_activity(self, upload_id: str) -> float | None:
        """Newest time of the session's info and data (of its folder, on drivers that
        have folders, when neither is there yet); None if the session is gone."""
        times = []
        for key in (paths.upload_info, paths.upload_data):
            with contextlib.suppress(PathNotFoundError):
                times.append((await self._driver.stat(key(upload_id))).modified)
        if not times:
            with contextlib.suppress(PathNotFoundError):
                times.append((await self._driver.stat(paths.upload_dir(upload_id))).modified)
        return max(times, default=None)

    async def _purge_idle(self, upload_id: str, older_than: float) -> bool:
        last = await self._last_activity(upload_id)
        if last is None or last >= older_than:
            return False  # gone, or active (or still being created)
        try:
            writer = await self._driver.writer(paths.upload_data(upload_id), append=True)
        except WriterBusyError:
            return False  # a request is writing to it right now
        except PathNotFoundError:
            await self._driver.delete(paths.upload_dir(upload_id))  # a start that failed
            return True
        try:
            last = await self._last_activity(upload_id)
            if last is not None and last >= older_than:
                return False  # written to between our look and our taking it
            self._hashers.pop(upload_id, None)
            await writer.cancel()
            await self._driver.delete(paths.upload_dir(upload_id))
            return True
        finally:
            await writer.close()
