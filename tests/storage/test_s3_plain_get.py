"""Large GetObject ranges from a plain-HTTP endpoint (storage/s3_plain_get.py): the
bytes asked for from a real SeaweedFS, and every way a server can fail it, from
loopback servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from storage.driver import READ_CHUNK, PathNotFoundError, StorageUnavailableError
from storage.s3 import S3Driver
from storage.s3_plain_get import SMALLEST, PlainGet, reaches_directly

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def count_obstore_streams(driver: S3Driver, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The lengths asked of obstore's stream from now on."""
    asked: list[int] = []
    stream = driver._obstore.stream

    def counted(key: str, offset: int, length: int | None) -> AsyncIterator[bytes]:
        asked.append(length or 0)
        return stream(key, offset, length)

    monkeypatch.setattr(driver._obstore, "stream", counted)
    return asked


async def read(pieces: AsyncIterator[bytes]) -> bytes:
    return b"".join([piece async for piece in pieces])


async def test_large_ranges_come_whole_and_exact(
    s3: S3Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(3 * SMALLEST + 12345)
    await s3.put("blobs/large", data)
    through_obstore = count_obstore_streams(s3, monkeypatch)
    size = len(data)
    for offset, length in [(0, size), (777, SMALLEST), (size - SMALLEST, SMALLEST)]:
        assert await read(s3.reader("blobs/large", offset, length)) == data[offset:][:length]
    # What the object holds of a range past its end, and nothing from its end on.
    assert await read(s3.reader("blobs/large", size - 10, SMALLEST)) == data[-10:]
    assert await read(s3.reader("blobs/large", size, SMALLEST)) == b""
    assert through_obstore == []
    with pytest.raises(PathNotFoundError):
        await read(s3.reader("blobs/missing", 0, SMALLEST))
    # Small ranges, and reads of unknown length, stay on obstore's pooled connections.
    assert await read(s3.reader("blobs/large", 5, SMALLEST - 1)) == data[5 : SMALLEST + 4]
    assert await read(s3.reader("blobs/large")) == data
    assert through_obstore == [SMALLEST - 1, 0]


async def test_a_writers_bytes_come_from_its_pieces(
    s3: S3Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer's key is no object (404): its parts and tail are read instead."""
    data = os.urandom(s3.settings.part_size + 2 * SMALLEST)
    writer = await s3.writer("uploads/session/data")
    await writer.write(data)
    await writer.close()
    through_obstore = count_obstore_streams(s3, monkeypatch)
    assert await read(s3.reader("uploads/session/data", 0, len(data))) == data
    assert through_obstore == []


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[PlainGet]:
    """A PlainGet whose every request goes to a loopback server running `handler`."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def presign(key: str) -> str:
        return f"http://127.0.0.1:{port}/bucket/{key}?X-Amz-Signature=0"

    async with server:
        yield PlainGet(presign, connect_timeout=2, read_timeout=0.5, attempts=3)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def head(status: str, length: int, *extra: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {length}", *extra, "", ""]
    return "\r\n".join(lines).encode()


async def test_the_request_is_a_presigned_get_with_its_range() -> None:
    requests: list[bytes] = []
    body = os.urandom(SMALLEST)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await read_request(reader))
        writer.write(
            head("206 Partial Content", len(body), f"Content-Range: bytes 5-{SMALLEST + 4}/9")
        )
        writer.write(body)
        await writer.drain()
        writer.close()

    async with serving(answer) as plain:
        assert await read(plain.stream("a/key", 5, SMALLEST)) == body
    request_line, *headers = requests[0].decode().strip().split("\r\n")
    assert request_line == "GET /bucket/a/key?X-Amz-Signature=0 HTTP/1.1"
    assert f"Range: bytes=5-{SMALLEST + 4}" in headers
    assert "Connection: close" in headers


async def test_a_body_cut_short_fails_after_what_came() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(head("200 OK", 2 * SMALLEST) + b"x" * SMALLEST)
        await writer.drain()
        writer.close()

    received = 0
    async with serving(answer) as plain:
        with pytest.raises(StorageUnavailableError, match="closed 1048576 bytes before"):
            async for piece in plain.stream("key", 0, 2 * SMALLEST):
                received += len(piece)
    assert received == SMALLEST


async def test_a_stalled_body_fails_within_the_read_timeout() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(head("200 OK", SMALLEST) + b"x" * 1000)
        await writer.drain()
        await reader.read()  # until the client gives up

    async with serving(answer) as plain:
        with pytest.raises(StorageUnavailableError, match=r"nothing received for 0\.5 s"):
            await asyncio.wait_for(read(plain.stream("key", 0, SMALLEST)), timeout=10)


async def test_server_errors_are_asked_again_and_refusals_are_not() -> None:
    statuses = ["503 Slow Down", "500 Internal Server Error", "206 Partial Content"]
    asked: list[str] = []
    error = b"<Error><Code>SlowDown</Code></Error>"

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        status = statuses[len(asked)]
        asked.append(status)
        if status.startswith("206"):
            writer.write(head(status, SMALLEST, "Content-Range: bytes 0-1/2") + b"y" * SMALLEST)
        else:
            writer.write(head(status, len(error)) + error)
        await writer.drain()
        writer.close()

    async with serving(answer) as plain:
        assert await read(plain.stream("key", 0, SMALLEST)) == b"y" * SMALLEST
    assert len(asked) == 3

    statuses[:] = ["403 Forbidden"] * 3
    asked.clear()
    error = b"<Error><Code>SignatureDoesNotMatch</Code></Error>"
    async with serving(answer) as plain:
        with pytest.raises(StorageUnavailableError, match=r"HTTP 403 \(SignatureDoesNotMatch\)"):
            await read(plain.stream("key", 0, SMALLEST))
    assert len(asked) == 1


async def test_answers_that_break_off_or_cannot_be_counted_fail_clearly() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-")
        await writer.drain()
        writer.close()

    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await reader.read()

    async with serving(hang_up) as plain:
        with pytest.raises(StorageUnavailableError, match="closed before the answer's head"):
            await read(plain.stream("key", 0, SMALLEST))
    async with serving(chunked) as plain:
        with pytest.raises(StorageUnavailableError, match="HTTP 200 without Content-Length"):
            await read(plain.stream("key", 0, SMALLEST))


@pytest.mark.parametrize(
    ("status", "extra"),
    [("200 OK", []), ("206 Partial Content", ["Content-Range: bytes 0-1048575/3145728"])],
)
async def test_bytes_from_elsewhere_than_the_range_are_refused(
    status: str, extra: list[str]
) -> None:
    """A server that ignores the Range (the whole object) or answers another one."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(head(status, SMALLEST, *extra) + b"z" * SMALLEST)
        await writer.drain()
        writer.close()

    async with serving(answer) as plain:
        with pytest.raises(StorageUnavailableError, match="without the range asked for"):
            await read(plain.stream("key", 5, SMALLEST))


async def test_a_slow_caller_stops_the_reading() -> None:
    """Memory stays at a few pieces: the server can send no more than the sockets hold."""
    size = 256 * SMALLEST
    sent = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await read_request(reader)
        writer.write(head("200 OK", size))
        block = b"s" * READ_CHUNK
        with contextlib.suppress(ConnectionError):
            while sent < size:
                writer.write(block)
                await writer.drain()
                sent += len(block)

    async with serving(answer) as plain:
        pieces = plain.stream("key", 0, size)
        await anext(pieces)
        await asyncio.sleep(1)
        assert sent < size // 8  # kernel buffers, a piece waiting and one being filled
        await pieces.aclose()
        await asyncio.sleep(0.2)
        assert sent < size // 8  # and the connection is gone, not drained


def test_only_plain_http_with_no_proxy_between_is_read_directly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert reaches_directly("http://127.0.0.1:8333")
    assert not reaches_directly("https://s3.eu-west-1.amazonaws.com")
    assert not reaches_directly(None)  # AWS's default endpoint: HTTPS
    monkeypatch.setenv("http_proxy", "http://proxy.internal:3128")
    assert not reaches_directly("http://127.0.0.1:8333")  # obstore goes through the proxy
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    assert reaches_directly("http://127.0.0.1:8333")
