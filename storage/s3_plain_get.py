"""GetObject of a large range from a plain-HTTP S3 endpoint, received with one copy
per byte.

Through obstore, each piece of a body crosses from a tokio thread to the event loop:
receiving cost 0.29-0.47 s of CPU a GiB here, about half of what a whole download
costs the server (bench/RESULTS-s3.md). Here the event loop reads the body itself,
straight into a buffer (`asyncio.BufferedProtocol`) that is copied once into the
bytes handed on: 0.12-0.15 s a GiB.

The request is a URL obstore presigns (SigV4 query auth; the Range header goes beside
it unsigned, as S3 allows) on a connection of its own, closed after the answer
(`Connection: close`): a large body pays for its own connect, and no pool can hand
out a stale connection. Only the answer's head goes through a parser (httptools); a
2xx body must carry Content-Length, as S3's always do, and is then counted, not
parsed. At most one piece waits while the caller sends the one before, as through
obstore: the socket is not read until the caller takes it. Connect failures, timeouts
and 5xx or 429 answers before the body are retried up to `attempts` times;
`read_timeout` bounds every wait. TLS endpoints, and endpoints behind the HTTP proxy
the environment names, stay on obstore.
"""

from __future__ import annotations

import asyncio
import collections
import re
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast
from urllib.parse import urlsplit

import httptools

from storage.driver import PathNotFoundError, StorageUnavailableError

# Below this many bytes, a connect costs more than obstore's pooled connections save.
SMALLEST = 1 << 20
# Curl downloads of 256 MiB from one worker cost its server 0.36 s of CPU a GiB with
# pieces of 512 or 640 KiB, 0.40 with 384, 0.44 with 256 (READ_CHUNK), 0.52-0.56 with
# 960 KiB and 0.80 with 1 MiB (a fresh mmap each, registry/malloc.py).
PIECE = 512 << 10
_HEAD_READ = 64 << 10  # smaller than a piece: the body bytes read with the head fit in one
_ERROR_BODY_LIMIT = 64 << 10
_RETRY_PAUSE = 0.1
_FAILED = "S3 GetObject failed: "
_ERROR_CODE = re.compile(rb"<Code>([A-Za-z0-9.]{1,64})</Code>")
_RANGE_START = re.compile(rb"bytes (\d+)-")

Presign = Callable[[str], Awaitable[str]]


class _Answer(asyncio.BufferedProtocol):
    """One GET's answer: its head parsed, then its body counted into pieces."""

    def __init__(self, loop: asyncio.AbstractEventLoop, read_timeout: float) -> None:
        self._loop = loop
        self._read_timeout = read_timeout  # the longest wait for the next bytes
        self._parser = httptools.HttpResponseParser(self)
        self._head_read = bytearray(_HEAD_READ)
        self._head_done: asyncio.Future[None] = loop.create_future()
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.error_body = bytearray()
        self.counting = False  # a 2xx with Content-Length: reads land in `_piece` unparsed
        self.size = 0  # its Content-Length
        self._left = 0  # body bytes still to come
        self._piece = bytearray(PIECE)
        self._filled = 0
        self._pieces: collections.deque[bytes] = collections.deque()
        self._paused = False
        self._ended = False
        self._failure: StorageUnavailableError | None = None
        self._wake: asyncio.Future[None] | None = None
        self._transport: asyncio.Transport | None = None

    # -- the transport's side ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def get_buffer(self, sizehint: int) -> memoryview | bytearray:
        if self.counting:
            return memoryview(self._piece)[self._filled : self._filled + self._left]
        return self._head_read

    def buffer_updated(self, nbytes: int) -> None:
        if self.counting:
            self._counted(nbytes)
            return
        try:
            self._parser.feed_data(memoryview(self._head_read)[:nbytes])
        except httptools.HttpParserError as error:
            self._fail(f"a malformed answer ({error})")

    def eof_received(self) -> bool:
        return False  # the transport closes; connection_lost says what is missing

    def connection_lost(self, exc: Exception | None) -> None:
        if self._ended or self._failure is not None:
            return
        if not self._head_done.done():
            self._fail("the connection closed before the answer's head")
        elif self.counting:
            self._fail(f"the connection closed {self._left} bytes before the body's end")
        else:
            self._end()  # an error body that runs to the connection's close

    # -- httptools' callbacks ------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        length = self.headers.get(b"content-length", b"")
        if 200 <= self.status < 300 and length.isdigit():
            self.size = self._left = int(length)
            self.counting = True  # this read's rest still comes through on_body
        self._head_done.set_result(None)
        if self.counting and not self._left:
            self._end()

    def on_body(self, body: bytes) -> None:
        if self.counting:
            size = min(len(body), self._left)
            self._piece[self._filled : self._filled + size] = body[:size]
            self._counted(size)
        else:  # an error's body: its start is enough
            self.error_body += body[: _ERROR_BODY_LIMIT - len(self.error_body)]
            if len(self.error_body) == _ERROR_BODY_LIMIT:
                self._end()

    def on_message_complete(self) -> None:
        if not self.counting:
            self._end()

    # -- the caller's side ---------------------------------------------------------

    async def head(self) -> None:
        async with asyncio.timeout(self._read_timeout):
            await self._head_done

    async def error(self) -> bytes:
        """The body of an answer that is not a counted 2xx, up to `_ERROR_BODY_LIMIT`."""
        while not self._ended and self._failure is None:
            await self._wait()
        return bytes(self.error_body)

    async def pieces(self) -> AsyncIterator[bytes]:
        while True:
            if self._pieces:
                piece = self._pieces.popleft()
                if self._paused and self._transport is not None:
                    self._paused = False
                    self._transport.resume_reading()
                yield piece
            elif self._failure is not None:
                raise self._failure
            elif self._ended:
                return
            else:
                await self._wait()

    def close(self) -> None:
        if self._transport is not None and not self._ended:
            self._transport.abort()

    # -- between them --------------------------------------------------------------

    def _counted(self, nbytes: int) -> None:
        self._filled += nbytes
        self._left -= nbytes
        if self._filled == len(self._piece) or not self._left:
            self._pieces.append(bytes(memoryview(self._piece)[: self._filled]))
            self._filled = 0
            if not self._left:
                self._end()
            elif self._transport is not None and not self._paused:
                self._paused = True  # until the caller takes this piece
                self._transport.pause_reading()
            self._wakeup()

    async def _wait(self) -> None:
        self._wake = self._loop.create_future()
        try:
            async with asyncio.timeout(self._read_timeout):
                await self._wake
        except TimeoutError:
            raise StorageUnavailableError(
                _FAILED + f"nothing received for {self._read_timeout:g} s"
            ) from None

    def _wakeup(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _end(self) -> None:
        self._ended = True
        self._paused = False  # nothing to resume on a closed transport
        if self._transport is not None:
            self._transport.close()
        self._wakeup()

    def _fail(self, why: str) -> None:
        self._failure = StorageUnavailableError(_FAILED + why)
        self._paused = False
        if not self._head_done.done():
            self._head_done.set_exception(self._failure)
        if self._transport is not None:
            self._transport.abort()
        self._wakeup()


def reaches_directly(endpoint: str | None) -> bool:
    """Whether `endpoint` is plain HTTP with no proxy between (HTTP_PROXY and NO_PROXY)."""
    if not endpoint or not endpoint.startswith("http://"):
        return False
    host = urlsplit(endpoint).hostname or ""
    return "http" not in urllib.request.getproxies() or bool(urllib.request.proxy_bypass(host))


class PlainGet:
    """Streams `length` bytes of an object from `offset` (the whole range or what the
    object holds of it); a missing object raises PathNotFoundError(key)."""

    def __init__(
        self, presign: Presign, connect_timeout: float, read_timeout: float, attempts: int
    ) -> None:
        self._presign = presign
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._attempts = max(1, attempts)

    async def stream(self, key: str, offset: int, length: int) -> AsyncIterator[bytes]:
        answer = await self._answer(key, offset, length)
        if answer is None:
            return  # a range starting at the end (S3 answers 416): nothing to read
        try:
            async for piece in answer.pieces():
                yield piece
        finally:
            answer.close()

    async def _answer(self, key: str, offset: int, length: int) -> _Answer | None:
        failure = ""
        for attempt in range(self._attempts):
            if attempt:
                await asyncio.sleep(_RETRY_PAUSE * 2 ** (attempt - 1))
            try:
                answer = await self._request(key, offset, length)
            except StorageUnavailableError as error:  # the answer broke off before its head
                failure = str(error).removeprefix(_FAILED)
                continue
            except (OSError, TimeoutError) as error:
                failure = ": ".join(filter(None, (type(error).__name__, str(error))))
                continue
            if answer.counting:
                if _is_range(answer, offset, length):
                    return answer
                answer.close()
                raise StorageUnavailableError(
                    _FAILED + f"HTTP {answer.status} without the range asked for"
                )
            if 200 <= answer.status < 300:
                answer.close()
                raise StorageUnavailableError(
                    _FAILED + f"HTTP {answer.status} without Content-Length"
                )
            try:
                said = await answer.error()
            finally:
                answer.close()
            if answer.status == 404:
                raise PathNotFoundError(key)
            if answer.status == 416:
                return None
            code = _ERROR_CODE.search(said)
            failure = f"HTTP {answer.status}" + (f" ({code[1].decode()})" if code else "")
            if answer.status < 500 and answer.status != 429:
                break  # asking again would get the same answer
        raise StorageUnavailableError(_FAILED + failure)

    async def _request(self, key: str, offset: int, length: int) -> _Answer:
        url = urlsplit(await self._presign(key))
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._connect_timeout):
            transport, answer = await loop.create_connection(
                lambda: _Answer(loop, self._read_timeout), url.hostname, url.port or 80
            )
        target = f"{url.path}?{url.query}" if url.query else url.path
        transport.write(
            f"GET {target} HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Range: bytes={offset}-{offset + length - 1}\r\nConnection: close\r\n\r\n".encode()
        )
        try:
            await answer.head()
        except BaseException:
            answer.close()
            raise
        return answer


def _is_range(answer: _Answer, offset: int, length: int) -> bool:
    """Whether a 2xx body is the range asked for, or what the object holds of it: a 206
    says where it starts, a 200 is the whole object."""
    if answer.size > length:
        return False
    if answer.status == 200:
        return offset == 0
    start = _RANGE_START.match(answer.headers.get(b"content-range", b""))
    return answer.status == 206 and start is not None and int(start[1]) == offset
