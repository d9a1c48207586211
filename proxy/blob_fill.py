"""One fetch of a blob from an upstream into the store, streamed meanwhile to the
request that started it.

Two tasks share the upstream's bytes: the pump reads them, hashes each chunk and hands
it at once to the reader (the client) and to the store's ordinary upload path
(`UploadStore.finish`), which writes it in the background and commits once the pump's
digest matched; a wrong or cut-off upstream body is discarded. So the client is never
held up by the disk, only by its own pace. The last chunk is held back from the reader
until the digest is verified, which the pump does as the last upstream byte comes (the
disk may still be writing, and the commit fsyncs after that), so a reader never
receives a whole body that is wrong: it gets a broken connection instead. Both
hand-overs are bounded in bytes; a slow reader slows the fetch, a reader that goes away
does not stop it (others may be waiting for the blob), nor does one that stalls: it is
cut off after `_READER_PATIENCE`.

The pump hashes on the event loop (~0.1 ms per 256 KiB chunk): the digest is known the
moment the body ends rather than when a thread has caught up with a backlog, and
hashing in a thread pool instead took more CPU in all and was no faster
(bench/RESULTS-proxy.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from starlette.responses import StreamingResponse
from starlette.types import Send

from oci.errors import ErrorCode, RegistryError
from oci.references import Digest
from proxy.byte_queue import ByteQueue
from proxy.upstream import Upstream, UpstreamError
from storage.driver import StorageError
from storage.lease import Lease, LeaseLostError
from storage.store import Store
from storage.uploads import Upload

log = logging.getLogger("dockyard.proxy")

_READER_BYTES = 1 << 20  # the reader's queue
_STORING_BYTES = 8 << 20  # what the upload path has not taken yet
_READER_PATIENCE = 30.0  # seconds a fetch waits for its reader to take a chunk


class BrokenUpstreamBody(Exception):
    """The fetch failed after the response started: the reader's connection is cut."""


class FilledResponse(StreamingResponse):
    """A blob streamed from a fill: when the fill fails, the response ends unfinished,
    which makes the server close the connection (one error line, no traceback: the
    fill logged why)."""

    async def stream_response(self, send: Send) -> None:
        with contextlib.suppress(BrokenUpstreamBody):
            await super().stream_response(send)


def not_upstream(upstream: Upstream, what: str) -> str:
    return f"{what} not found at upstream {upstream.prefix} ({upstream.url})"


class BlobFill:
    def __init__(
        self,
        store: Store,
        upstream: Upstream,
        remote: str,
        local: str,
        digest: Digest,
        count_bytes: Callable[[int], None],
        lease: Lease | None = None,
    ) -> None:
        """`lease`: this process's lease on fetching the blob, renewed as the bytes come
        and removed once the fill ends (see `PullThrough.blob`)."""
        self._store = store
        self._upstream = upstream
        self._remote = remote
        self._local = local
        self._digest = digest
        self._count_bytes = count_bytes
        self._lease = lease
        self.started: asyncio.Future[httpx.Headers] = asyncio.get_running_loop().create_future()
        # Its reader may be gone before it is set: a failure is retrieved here, not lost.
        self.started.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._reader = ByteQueue(_READER_BYTES)
        self.task = asyncio.create_task(self._run())

    async def stream(self) -> AsyncIterator[bytes]:
        """The blob's bytes as they arrive (the reader's side)."""
        try:
            while (chunks := await self._reader.take()) is not None:
                yield chunks[0] if len(chunks) == 1 else b"".join(chunks)
        finally:
            self._reader.abandon()  # frees a fetch waiting for room

    def detach(self) -> None:
        """Fill the store with no reader."""
        self._reader.abandon()

    async def _pass(self, chunk: bytes) -> None:
        reader = self._reader
        if not reader.has_room():
            try:
                await asyncio.wait_for(reader.wait_for_room(), _READER_PATIENCE)
            except TimeoutError:  # a stalled reader must not hold up the others waiting
                patience = f"the client took nothing for {_READER_PATIENCE:g} s"
                reader.fail(BrokenUpstreamBody(patience))
                reader.abandon()
                return
        reader.put_nowait(chunk)

    async def _run(self) -> None:
        try:
            try:
                await self._fetch()
            finally:
                if self._lease is not None:  # after the commit: the processes waiting look
                    with contextlib.suppress(StorageError):
                        await self._store.driver.delete(self._lease.key)
        except BaseException as error:
            if not self.started.done():
                self.started.set_exception(error)
            elif isinstance(error, Exception):
                log.warning("caching blob %s of %s failed: %s", self._digest, self._local, error)
            # Ends the reader's response unfinished, unless it has had every byte; the
            # last step: a request that sees it fail finds the fill ended, not running.
            self._reader.fail(BrokenUpstreamBody(str(error) or type(error).__name__))
            raise

    async def _fetch(self) -> None:
        async with self._upstream.open("GET", self._remote, f"blobs/{self._digest}") as response:
            if response.status_code == 404:
                raise RegistryError(
                    ErrorCode.BLOB_UNKNOWN,
                    not_upstream(self._upstream, f"blob {self._digest} of {self._remote}"),
                    detail={"digest": str(self._digest)},
                )
            self.started.set_result(response.headers)
            await self._store_blob(response)

    async def _pump(self, response: httpx.Response, storing: ByteQueue, hasher: Any) -> None:
        """Hash each chunk of the body and hand it to the upload path and, one chunk
        behind, to the reader, who gets the last chunk once the digest matched."""
        held = b""
        try:
            async for chunk in response.aiter_bytes():
                self._count_bytes(len(chunk))
                if self._lease is not None:
                    await self._renew(self._lease)
                if held:
                    await self._pass(held)
                held = chunk
                hasher.update(chunk)
                await storing.put(chunk)
            if hasher.hexdigest() != self._digest.encoded:
                raise UpstreamError(
                    self._upstream, f"sent content for {self._digest} that does not match it"
                )
        except BaseException as error:
            storing.fail(error)
            raise
        storing.close()
        self._reader.put_nowait(held)
        self._reader.close()

    async def _renew(self, lease: Lease) -> None:
        try:
            await lease.keep()
        except LeaseLostError:  # we stalled and another process fetches it too: both may
            self._lease = None  # finish, the digest check keeps either from lying

    async def _store_blob(self, response: httpx.Response) -> None:
        """Stream the body into an upload of the blob and commit it once verified; the
        reader gets its last bytes (and its end) as soon as the digest matches."""
        uploads = self._store.uploads
        storing = ByteQueue(_STORING_BYTES)
        hasher = hashlib.new(self._digest.algorithm)
        # The reader's first bytes do not wait for the session's durable writes.
        pump = asyncio.create_task(self._pump(response, storing, hasher))
        try:
            upload = await uploads.start(self._local, self._digest.algorithm)
            try:
                await uploads.finish(upload, self._digest, _drain(storing), hashed=hasher)
            except BaseException:
                await self._discard(upload)
                raise
        finally:
            pump.cancel()  # when the session or `finish` failed before the end of the body
            await asyncio.wait([pump])
            if not pump.cancelled():
                pump.exception()  # retrieved: the fill fails with `finish`'s error, if any

    async def _discard(self, upload: Upload) -> None:
        with contextlib.suppress(RegistryError, StorageError):
            await self._store.uploads.cancel(upload)


async def _drain(queue: ByteQueue) -> AsyncIterator[bytes]:
    while (chunks := await queue.take()) is not None:
        for chunk in chunks:
            yield chunk
