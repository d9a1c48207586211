"""One fetch of a blob from an upstream into the store, streamed meanwhile to the
request that started it.

The bytes go through the store's ordinary upload path (`UploadStore.finish`), which
verifies the digest before it commits; a wrong or cut-off upstream body is discarded.
The last chunk is held back from the reader until the blob is committed, so a reader
never receives a whole body that is wrong: it gets a broken connection instead. The
reader's queue is bounded; a slow reader slows the fetch, a reader that goes away
does not stop it (others may be waiting for the blob), nor does one that stalls: it is
cut off after `_READER_PATIENCE`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import httpx
from starlette.responses import StreamingResponse
from starlette.types import Send

from oci.errors import ErrorCode, RegistryError
from oci.references import Digest
from proxy.upstream import Upstream, UpstreamError
from storage.driver import StorageError
from storage.store import Store
from storage.uploads import Upload

log = logging.getLogger("dockyard.proxy")

_QUEUED_CHUNKS = 8
_READER_PATIENCE = 30.0  # seconds a fetch waits for its reader to take a chunk
_END = object()


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
    ) -> None:
        self._store = store
        self._upstream = upstream
        self._remote = remote
        self._local = local
        self._digest = digest
        self._count_bytes = count_bytes
        self.started: asyncio.Future[httpx.Headers] = asyncio.get_running_loop().create_future()
        # Its reader may be gone before it is set: a failure is retrieved here, not lost.
        self.started.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._queue: asyncio.Queue[object] = asyncio.Queue(_QUEUED_CHUNKS)
        self._reading = True
        self.task = asyncio.create_task(self._run())

    async def stream(self) -> AsyncIterator[bytes]:
        """The blob's bytes as they arrive (the reader's side)."""
        try:
            while True:
                item = await self._queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise BrokenUpstreamBody(str(item))
                assert isinstance(item, bytes)
                yield item
        finally:
            self._leave()

    def _leave(self) -> None:
        self._reading = False
        while not self._queue.empty():  # frees a fetch blocked on a full queue
            self._queue.get_nowait()

    async def _pass(self, item: object) -> None:
        if not self._reading:
            return
        try:
            await asyncio.wait_for(self._queue.put(item), _READER_PATIENCE)
        except TimeoutError:  # a stalled reader must not hold up the others waiting
            self._cut(BrokenUpstreamBody(f"the client took nothing for {_READER_PATIENCE:g} s"))

    def _cut(self, error: BaseException) -> None:
        """End the reader's response unfinished."""
        if self._reading:
            self._leave()
            self._queue.put_nowait(error)

    async def _run(self) -> None:
        try:
            async with self._upstream.open(
                "GET", self._remote, f"blobs/{self._digest}"
            ) as response:
                if response.status_code == 404:
                    raise RegistryError(
                        ErrorCode.BLOB_UNKNOWN,
                        not_upstream(self._upstream, f"blob {self._digest} of {self._remote}"),
                        detail={"digest": str(self._digest)},
                    )
                self.started.set_result(response.headers)
                held = await self._store_blob(response)
            await self._pass(held)
            await self._pass(_END)
        except BaseException as error:
            if not self.started.done():
                self.started.set_exception(error)
            elif isinstance(error, Exception):
                log.warning("caching blob %s of %s failed: %s", self._digest, self._local, error)
            self._cut(error)
            raise

    async def _store_blob(self, response: httpx.Response) -> bytes:
        """Stream the body into an upload of the blob and commit it once verified;
        returns the last chunk, which the reader has not had yet."""
        held = [b""]

        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in response.aiter_bytes():
                self._count_bytes(len(chunk))
                if held[0]:
                    await self._pass(held[0])
                held[0] = chunk
                yield chunk

        uploads = self._store.uploads
        upload = await uploads.start(self._local, self._digest.algorithm)
        try:
            await uploads.finish(upload, self._digest, chunks())
        except RegistryError as error:
            if error.code is ErrorCode.DIGEST_INVALID:  # the session is discarded already
                raise UpstreamError(
                    self._upstream, f"sent content for {self._digest} that does not match it"
                ) from None
            await self._discard(upload)
            raise
        except BaseException:
            await self._discard(upload)
            raise
        return held[0]

    async def _discard(self, upload: Upload) -> None:
        with contextlib.suppress(RegistryError, StorageError):
            await self._store.uploads.cancel(upload)
