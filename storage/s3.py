"""S3 driver: keys are objects below an optional prefix in one bucket.

The hot reads (HEAD, GET, streamed ranges, listings, presigned GETs) and the small
writes go through obstore (storage/s3_obstore.py says why), but for ranges of a MiB or
more from a plain-HTTP endpoint, which the event loop receives itself
(storage/s3_plain_get.py); everything else through boto3, whose every call runs in
the driver's bounded thread pool, never on the event loop.
Connection and read timeouts plus botocore's standard retries bound every call;
what still fails becomes `StorageUnavailableError` (the API answers 503).

A writer keeps its state in the bucket, so any process can resume it:

    _writers/<key>/lease           owner id of the writer owning it (empty: free)
    _writers/<key>/part-00001 ...  full parts, `part_size` bytes at first, growing
                                   as the blob grows (storage/s3_part_sizes.py)
    _writers/<key>/tail-<offset>   bytes after the last full part (< the next part)
    _writers/<key>/commit          id of the multipart upload a commit has open

A tail is valid only when its offset equals the size of all parts: a part that
absorbed an older tail makes it stale, so a crash between the two writes never
counts bytes twice.

One writer per key across processes and replicas: `writer()` takes the lease with a
conditional PutObject (If-None-Match: * to create it, If-Match: <ETag> to take over a
free one, or one whose holder has not renewed it for `LEASE_SECONDS` by the server's
clock) or raises WriterBusyError; the holder renews it as it writes and empties it on
close; commit and cancel delete it with the state, so a late writer finds no lease
and gives up (PathNotFoundError). Servers ignoring conditional writes are detected
once per driver and get best-effort leases. Independently of the lease, a writer
knows the ETag of every stored piece it builds on; `chunks()` reads them with
If-Match and `commit()` copies them with x-amz-copy-source-if-match, and sends the
tail from the very buffer `chunks()` streamed: a piece changed meanwhile fails the
commit, so the bytes stored are always the bytes hashed. `reader()` and `stat()` on
the writer's key see the parts and the tail.

A writer fills one part at a time in a `PartBuffer`: in memory when the per-process
budget (`BufferBudget`, `buffer_memory` bytes in slots of `part_size`) has a free
slot when `writer()` opens it and the part fits a slot, else in an unnamed temporary
file in the system's temp directory. Nothing ever waits for a slot, so slow uploads
holding memory never stall the others, and memory stays bounded however many uploads
run. A full part in memory goes to S3 on a second slot when one is free, while the
next part fills; otherwise (and always from a file, which boto3 reads in the pool) it is uploaded
before the writer takes more bytes. File I/O runs in the driver's thread pool. A
buffer is freed (slot returned, file closed and gone) on `close()`, `commit()` or
`cancel()`, also when they fail or are cancelled.
`commit()` assembles a multipart upload directly at the destination from the
stored parts by server-side copy (UploadPartCopy) plus the tail as the last part,
so the data never passes through the registry again; a failed commit aborts it,
and deleting the writer's state aborts one a crashed process left open.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import boto3
import botocore.exceptions
import botocore.session
import botocore.utils
from botocore.config import Config as BotoConfig

from storage.driver import (
    READ_CHUNK,
    FileInfo,
    PathNotFoundError,
    StorageDriver,
    StorageError,
    StorageFullError,
    StorageLimitError,
    StorageUnavailableError,
    Versioned,
    Writer,
    WriterBusyError,
    check_key,
)
from storage.s3_buffers import BufferBudget, FileBuffer, MemoryBuffer, PartBuffer
from storage.s3_obstore import ObstoreCalls
from storage.s3_part_sizes import (
    MAX_OBJECT_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    PARTS_PER_STEP,
    part_size,
)
from storage.s3_plain_get import SMALLEST as PLAIN_GET_SMALLEST
from storage.s3_plain_get import PlainGet, reaches_directly

log = logging.getLogger("dockyard.s3")

PRESIGN_SECONDS = 20 * 60
_WRITERS = "_writers"
_DELETE_BATCH = 1000
_PART = re.compile(r"part-(\d{5})")
_TAIL = re.compile(r"tail-(\d+)")
_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchUpload"}
_PRECONDITION_FAILED = {"412", "PreconditionFailed"}
LEASE_SECONDS = 60.0
_RENEW_AFTER = LEASE_SECONDS / 3
_SETTLE_SECONDS = 0.5

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class S3Settings:
    """What the driver needs to reach its bucket; built from `storage.s3` in the config."""

    bucket: str
    prefix: str = ""
    region: str | None = None
    endpoint_url: str | None = None
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    addressing: str = "auto"
    part_size: int = 10 << 20
    parts_per_step: int = PARTS_PER_STEP
    buffer_memory: int = 40 << 20
    server_side_encryption: str | None = None
    kms_key_id: str | None = None
    redirect: bool = False
    max_concurrency: int = 16
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    max_attempts: int = 3


def _status(error: Exception) -> int:
    if isinstance(error, botocore.exceptions.ClientError):
        return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    return 0


def _unavailable(operation: str, error: Exception) -> StorageError:
    if isinstance(error, botocore.exceptions.ClientError):
        code, status = _error_code(error), _status(error)
        return StorageUnavailableError(f"S3 {operation} failed: {code} (HTTP {status})")
    return StorageUnavailableError(f"S3 {operation} failed: {type(error).__name__}: {error}")


def _error_code(error: Exception) -> str:
    if isinstance(error, botocore.exceptions.ClientError):
        return str(error.response.get("Error", {}).get("Code", ""))
    return ""


class _PreconditionFailedError(StorageError):
    """A conditional request found the object changed (or present, or absent)."""


def _parse_timestamp(value: str) -> datetime:
    """ISO 8601 times (every key of a listing has one) and HTTP dates (Last-Modified of
    HEAD and GET) without dateutil, which botocore uses by default and which costs more
    than the rest of a 1,000-key listing, and 15 times what the stdlib takes for a date."""
    try:
        if value[:1].isdigit():
            parsed = datetime.fromisoformat(value)
        else:
            parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return botocore.utils.parse_timestamp(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _without_expect_continue(request: Any, **_: Any) -> None:
    """Send bodies at once: with `Expect: 100-continue`, an empty PutObject leaves a
    stray response on the pooled connection of some servers (SeaweedFS), and the next
    request on it waits for its read timeout."""
    request.headers.pop("Expect", None)


@dataclass(frozen=True, slots=True)
class _Piece:
    """A stored object of a writer state, pinned by its ETag."""

    key: str
    size: int
    etag: str


@dataclass(slots=True)
class _WriterState:
    """What a writer left in the bucket: its parts in order and the valid tail."""

    parts: list[_Piece]
    tail: _Piece | None
    stale: list[str]
    modified: float

    @property
    def size(self) -> int:
        return sum(part.size for part in self.parts) + (self.tail.size if self.tail else 0)

    @property
    def exists(self) -> bool:
        return bool(self.parts) or self.tail is not None


class S3Writer(Writer):
    """Appends to a writer state in the bucket; see the module docstring for the layout.

    Created by `S3Driver.writer()` holding the lease `lease_etag` names, with the
    buffer of the part being filled (in memory on a slot of the driver's budget, else
    in a file); frees it on close, commit or cancel.
    """

    def __init__(
        self, driver: S3Driver, key: str, state: _WriterState, tail: PartBuffer, lease: _Lease
    ) -> None:
        self._driver = driver
        self._key = key
        self._parts = list(state.parts)
        self._filling = len(self._parts) + 1  # the number of the part the buffer fills
        self._saved_tail = state.tail
        self._stale = list(state.stale)
        self._buffer = tail
        self._lease = lease
        self._uploading: asyncio.Task[None] | None = None
        self._finished = False
        self.size = state.size

    @property
    def version(self) -> str:
        tail = self._saved_tail.etag if self._saved_tail else ""
        return ",".join([*(part.etag for part in self._parts), tail, str(self.size)])

    def _state_key(self, name: str) -> str:
        return self._driver.writer_key(self._key, name)

    async def write(self, data: bytes) -> None:
        if self.size + len(data) > MAX_OBJECT_SIZE:
            raise StorageLimitError(f"a blob holds at most {MAX_OBJECT_SIZE >> 40} TiB on S3")
        await self._lease.keep(self._driver)
        rest = memoryview(data)
        while rest:
            limit = self._driver.part_size(self._filling)
            if not self._buffer.size and not self._driver.fits_budget(self._buffer, limit):
                await self._buffer.close()  # a part bigger than a memory slot: to a file
                self._buffer = await self._driver.part_buffer(limit)
            piece = rest[: limit - self._buffer.size]
            await self._buffer.append(piece)
            self.size += len(piece)
            rest = rest[len(piece) :]
            if self._buffer.size == limit:
                await self._send_part()

    async def chunks(self) -> AsyncIterator[bytes]:
        await self._settle()
        for part in self._parts:
            async for chunk in self._driver.read_pinned(part):
                yield chunk
        async for chunk in self._buffer.chunks(READ_CHUNK):
            yield chunk

    async def _send_part(self) -> None:
        """Store the full buffer as the next part: in the background on a second slot
        if one is free (the next part fills meanwhile), else before going on."""
        await self._settle()  # parts stay numbered in order
        self._filling += 1
        part = self._buffer.take(self._driver.buffer_budget)
        if part is not None:
            self._uploading = asyncio.create_task(self._put_taken_part(part))
            return
        self._uploading = asyncio.create_task(self._put_part(self._buffer))
        await self._settle()

    async def _settle(self) -> None:
        """Wait for the part in flight, if any; its failure is raised here.

        Cancelling the waiter leaves the upload running, so a later `close()` can
        still wait for it and record the part.
        """
        uploading = self._uploading
        if uploading is None:
            return
        try:
            await asyncio.shield(uploading)
        finally:
            if uploading.done():
                self._uploading = None

    async def _put_part(self, part: PartBuffer) -> None:
        number = len(self._parts) + 1
        if number >= MAX_PARTS:  # the tail still needs a part number of its own
            raise StorageLimitError(f"a blob holds at most {MAX_PARTS - 1} full parts on S3")
        key = self._state_key(f"part-{number:05d}")
        etag = await part.send(functools.partial(self._driver.put_body, key))
        self._parts.append(_Piece(key, part.size, etag))
        await part.clear()

    async def _put_taken_part(self, part: PartBuffer) -> None:
        try:
            await self._put_part(part)
        finally:
            await part.close()

    def _tail_key(self) -> str:
        return self._state_key(f"tail-{sum(part.size for part in self._parts)}")

    async def close(self) -> None:
        if self._finished:
            return
        self._finished = True
        try:
            await self._save_tail()
            if self._stale:
                await self._driver.delete_objects(self._stale)
                self._stale = []
        finally:
            await self._lease.release(self._driver)

    async def _save_tail(self) -> None:
        saved = self._saved_tail
        try:
            await self._settle()
            size, key = self._buffer.size, self._tail_key()
            tail = saved if saved and (saved.key, saved.size) == (key, size) else None
            if size and tail is None:
                etag = await self._buffer.send(functools.partial(self._driver.put_body, key))
                tail = _Piece(key, size, etag)
        finally:
            await self._buffer.close()
        if saved is not None and (tail is None or saved.key != tail.key):
            self._stale.append(saved.key)
        self._saved_tail = tail

    async def commit(self, destination: str) -> None:
        self._finished = True
        try:
            try:
                await self._settle()
                await self._lease.keep(self._driver, now=True)
                if not self._parts:
                    await self._buffer.send(functools.partial(self._driver.put_body, destination))
                else:
                    await self._driver.assemble(
                        destination, self._parts, self._buffer, self._state_key("commit")
                    )
            finally:
                await self._buffer.close()
        except BaseException:
            await self._lease.release(self._driver)  # what was stored stays for a retry
            raise
        await self._discard()

    async def cancel(self) -> None:
        self._finished = True
        try:
            with contextlib.suppress(StorageError):
                await self._settle()
        finally:
            await self._buffer.close()
        await self._discard()

    async def _discard(self) -> None:
        self._parts = []
        self._lease.released = True  # the lease goes with the state
        await self._driver.delete_writer_state(self._key)


@dataclass(slots=True)
class _Lease:
    """Ownership of a writer state: the `lease` object of it holds our owner id.

    Taken and renewed by conditional writes (If-None-Match / If-Match on its ETag), so
    of many processes and replicas one wins; free when empty, or when the server's
    clock says it was last written `LEASE_SECONDS` ago (its holder stalled or died).
    """

    key: str
    owner: str
    etag: str
    renewed: float = field(default_factory=time.monotonic)
    released: bool = False

    async def keep(self, driver: S3Driver, now: bool = False) -> None:
        """Renew the lease if a third of it passed (or `now`); raises WriterBusyError
        if another writer took it over."""
        if self.released or (not now and time.monotonic() - self.renewed < _RENEW_AFTER):
            return
        etag = await driver.replace(self.key, self.owner.encode(), self.etag)
        if etag is None:
            raise WriterBusyError(self.key)
        self.etag = etag
        self.renewed = time.monotonic()

    async def release(self, driver: S3Driver) -> None:
        if self.released:
            return
        self.released = True
        await driver.replace(self.key, b"", self.etag)


def _folders_of(root: str, deleted: Iterable[str]) -> set[str]:
    """The folders of `deleted` keys below `root` (for `S3Driver._delete_folders`)."""
    folders: set[str] = set()
    depth = root.count("/") + 1
    for name in deleted:
        parts = name.split("/")
        folders.update("/".join(parts[:end]) for end in range(depth, len(parts)))
    return folders


def _folders_of_keys(keys: list[str]) -> set[str]:
    """The folders of `keys` below their roots (`<root>/<name>`), gathered so that one
    DeleteObjects removes those of every root, not one a root."""
    folders: set[str] = set()
    for root in {"/".join(key.split("/")[:2]) for key in keys}:
        folders |= _folders_of(root, [key for key in keys if key.startswith(root + "/")])
    return folders


class S3Driver(StorageDriver):
    name = "s3"

    def __init__(self, settings: S3Settings) -> None:
        if settings.part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes")
        if settings.buffer_memory < 2 * settings.part_size:
            raise ValueError("buffer_memory must hold at least two parts of part_size bytes")
        self.settings = settings
        self.buffer_budget = BufferBudget(settings.buffer_memory // settings.part_size)
        self._prefix = settings.prefix.strip("/")
        self._executor = ThreadPoolExecutor(settings.max_concurrency, thread_name_prefix="s3")
        self._client = self._make_client(settings)
        self._obstore = ObstoreCalls(settings)
        self._plain: PlainGet | None = None
        if reaches_directly(settings.endpoint_url):
            self._plain = PlainGet(
                functools.partial(self._obstore.presigned_get, seconds=PRESIGN_SECONDS),
                settings.connect_timeout,
                settings.read_timeout,
                settings.max_attempts,
            )
        self._conditional: bool | None = None

    @staticmethod
    def _make_client(settings: S3Settings) -> Any:
        config = BotoConfig(
            region_name=settings.region,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            retries={"mode": "standard", "max_attempts": settings.max_attempts},
            max_pool_connections=settings.max_concurrency,
            s3={"addressing_style": settings.addressing},
            signature_version="s3v4",
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            # Per-call CPU: our parameters are built here, and a fixed User-Agent is not
            # rebuilt from a dozen components twice per request.
            parameter_validation=False,
            user_agent=f"dockyard Boto3/{boto3.__version__}",
        )
        core = botocore.session.get_session()
        parsers = core.get_component("response_parser_factory")
        parsers.set_parser_defaults(timestamp_parser=_parse_timestamp)
        session = boto3.session.Session(
            botocore_session=core,
            aws_access_key_id=settings.access_key,
            aws_secret_access_key=settings.secret_key,
            region_name=settings.region,
        )
        client = session.client("s3", endpoint_url=settings.endpoint_url, config=config)
        client.meta.events.register("before-send.s3", _without_expect_continue)
        return client

    # -- keys ------------------------------------------------------------------

    def object_key(self, key: str) -> str:
        check_key(key)
        return f"{self._prefix}/{key}" if self._prefix else key

    def writer_key(self, key: str, name: str = "") -> str:
        """A key of the writer state of `key` (its directory when `name` is empty)."""
        return f"{_WRITERS}/{key}/{name}" if name else f"{_WRITERS}/{key}"

    # -- calling boto3 ---------------------------------------------------------

    async def _call(self, operation: str, function: Callable[..., T], **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        arguments = [kwargs]

        def call() -> T:
            # The thread lets go of the arguments (a part buffer) before the caller goes
            # on; the pool's work item would keep them alive a while after the result.
            return function(**arguments.pop())

        try:
            return await loop.run_in_executor(self._executor, call)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            code = _error_code(error)
            if code in _NOT_FOUND:
                raise PathNotFoundError(kwargs.get("Key", "")) from None
            if code == "XMinioStorageFull" or _status(error) == 507:  # Insufficient Storage
                raise StorageFullError(f"S3 {operation} failed: {code} (HTTP 507)") from None
            if code in _PRECONDITION_FAILED:
                raise _PreconditionFailedError(operation) from None
            raise _unavailable(operation, error) from error

    async def _s3(self, method: str, **kwargs: Any) -> Any:
        """Call the S3 client's `method` on our bucket, off the event loop."""
        function = getattr(self._client, method)
        return await self._call(method, function, Bucket=self.settings.bucket, **kwargs)

    def _encryption(self) -> dict[str, str]:
        settings = self.settings
        if not settings.server_side_encryption:
            return {}
        extra = {"ServerSideEncryption": settings.server_side_encryption}
        if settings.kms_key_id:
            extra["SSEKMSKeyId"] = settings.kms_key_id
        return extra

    # -- the driver interface ----------------------------------------------------

    async def get(self, key: str) -> bytes:
        try:
            return await self._obstore.get(self.object_key(key))
        except PathNotFoundError:
            raise PathNotFoundError(key) from None

    async def put(self, key: str, data: bytes | bytearray) -> None:
        await self._obstore.put(self.object_key(key), data)

    async def put_markers(self, keys: list[str]) -> None:
        await self._obstore.put_empty([self.object_key(key) for key in keys])

    async def reader(
        self, key: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        if length == 0:
            await self.stat(key)
            return
        pieces = [(key, offset, length)]
        try:
            first = self._body(key, offset, length)
            chunk = await anext(first, None)
        except PathNotFoundError:
            pieces = await self._writer_pieces(key, offset, length)
        else:
            pieces = []
            try:
                while chunk is not None:
                    yield chunk
                    chunk = await anext(first, None)
            finally:
                await first.aclose()
        for piece_key, piece_offset, piece_length in pieces:
            async for chunk in self._body(piece_key, piece_offset, piece_length):
                yield chunk

    def _body(self, key: str, offset: int, length: int | None) -> AsyncIterator[bytes]:
        """An object's bytes: a large range from a plain-HTTP endpoint with one copy per
        byte (storage/s3_plain_get.py), the rest through obstore."""
        if self._plain is not None and length is not None and length >= PLAIN_GET_SMALLEST:
            return self._plain.stream(self.object_key(key), offset, length)
        return self._obstore.stream(self.object_key(key), offset, length)

    async def _stream(self, body: Any) -> AsyncIterator[bytes]:
        try:
            while chunk := await self._call("GetObject", body.read, amt=READ_CHUNK):
                yield chunk
        finally:
            await self._call("GetObject", body.close)

    async def _writer_pieces(
        self, key: str, offset: int, length: int | None
    ) -> list[tuple[str, int, int | None]]:
        """(key, offset, length) of the stored pieces of a writer's bytes in a range."""
        state = await self._writer_state(key)
        if not state.exists:
            raise PathNotFoundError(key)
        end = state.size if length is None else min(state.size, offset + length)
        pieces, start = [], 0
        for piece in [*state.parts, *([state.tail] if state.tail else [])]:
            low, high = max(offset, start), min(end, start + piece.size)
            if low < high:
                pieces.append((piece.key, low - start, high - low))
            start += piece.size
        return pieces

    async def _writer_state(self, key: str) -> _WriterState:
        parts: dict[int, _Piece] = {}
        tails: dict[int, _Piece] = {}
        modified = 0.0
        for name, size, when, etag in await self._list_objects(self.writer_key(key)):
            base = name.rsplit("/", 1)[-1]
            if match := _PART.fullmatch(base):
                parts[int(match[1])] = _Piece(name, size, etag)
            elif match := _TAIL.fullmatch(base):
                tails[int(match[1])] = _Piece(name, size, etag)
            else:
                continue  # the lease and the commit's id: opening a writer is no write
            modified = max(modified, when)
        ordered: list[_Piece] = []
        while len(ordered) + 1 in parts:
            ordered.append(parts[len(ordered) + 1])
        tail = tails.pop(sum(part.size for part in ordered), None)
        stale = [piece.key for piece in tails.values()]
        return _WriterState(ordered, tail, stale, modified)

    async def writer(self, key: str, append: bool = False) -> S3Writer:
        """A writer owning the key's lease, whose part buffer is in memory when the budget
        has a free slot, else in a temporary file: it never waits for another writer."""
        check_key(key)
        lease = await self._take_lease(key, create=not append)
        buffer: PartBuffer | None = None
        try:
            state = await self._writer_state(key)
            if not append and state.exists:  # start over
                await self.delete_objects([p.key for p in state.parts] + state.stale)
                await self.delete_objects([state.tail.key] if state.tail else [])
                state = _WriterState([], None, [], state.modified)
            buffer = await self.part_buffer(self.part_size(len(state.parts) + 1))
            if state.tail:
                async for chunk in self.read_pinned(state.tail):
                    await buffer.append(chunk)
            return S3Writer(self, key, state, buffer, lease)
        except BaseException:
            if buffer is not None:
                await buffer.close()
            await lease.release(self)
            raise

    async def _take_lease(self, key: str, create: bool) -> _Lease:
        """Own the writer state of `key` (see `_Lease`), or raise WriterBusyError; without
        `create`, a state that has no lease (none, or committed) is PathNotFoundError."""
        lease_key, owner = self.writer_key(key, "lease"), uuid.uuid4().hex
        if create and (etag := await self.create(lease_key, owner.encode())) is not None:
            return _Lease(lease_key, owner, etag)
        try:  # a lease exists: take it over if it is free
            current = await self.read_versioned(lease_key)
        except PathNotFoundError:
            raise PathNotFoundError(key) from None
        if current.data and current.age < LEASE_SECONDS:
            raise WriterBusyError(key)
        etag = await self.replace(lease_key, owner.encode(), current.version)
        if etag is None:
            raise WriterBusyError(key)
        return _Lease(lease_key, owner, etag)

    async def _put_small(self, key: str, data: bytes, **condition: str) -> str:
        """PutObject of a small object (under an If-Match / If-None-Match condition);
        returns its ETag."""
        response = await self._s3(
            "put_object", Key=self.object_key(key), Body=data, **condition, **self._encryption()
        )
        return str(response["ETag"])

    async def read_versioned(self, key: str) -> Versioned:
        try:
            response = await self._s3("get_object", Key=self.object_key(key))
        except PathNotFoundError:
            raise PathNotFoundError(key) from None
        with contextlib.closing(response["Body"]) as body:
            data = await self._call("GetObject", body.read)
        server_now = _parse_timestamp(response["ResponseMetadata"]["HTTPHeaders"]["date"])
        age = (server_now - response["LastModified"]).total_seconds()
        return Versioned(data, str(response["ETag"]), age)

    async def create(self, key: str, data: bytes, durable: bool = True) -> str | None:
        if await self._honours_conditional_writes():
            try:
                return await self._put_small(key, data, IfNoneMatch="*")
            except _PreconditionFailedError:
                return None
        if await self.exists(key):
            return None
        await self._put_small(key, data)
        return await self._still_ours(key, data)

    async def replace(self, key: str, data: bytes, version: str) -> str | None:
        if await self._honours_conditional_writes():
            try:
                return await self._put_small(key, data, IfMatch=version)
            except (_PreconditionFailedError, PathNotFoundError):
                return None
        try:
            if (await self.read_versioned(key)).version != version:
                return None
        except PathNotFoundError:
            return None
        await self._put_small(key, data)
        return await self._still_ours(key, data)

    async def _still_ours(self, key: str, data: bytes) -> str | None:
        """The fallback where the server ignores conditions: after a pause for racing
        writes to land, the last of them won (best effort, logged at the probe)."""
        await asyncio.sleep(_SETTLE_SECONDS)
        try:
            current = await self.read_versioned(key)
        except PathNotFoundError:
            return None
        return current.version if current.data == data else None

    async def _honours_conditional_writes(self) -> bool:
        """Whether the server refuses a PutObject with If-None-Match: * on an existing
        key. Probed once; when it does not, leases are best effort (logged), while
        commits stay exact since they pin every piece by ETag."""
        if self._conditional is None:
            probe = self.writer_key(f"probe-{uuid.uuid4().hex}")
            await self._put_small(probe, b"probe", IfNoneMatch="*")
            try:
                await self._put_small(probe, b"probe", IfNoneMatch="*")
                self._conditional = False
                log.warning(
                    "the S3 server ignores conditional writes: one writer per upload and"
                    " one garbage collector at a time are best effort (a digest is still"
                    " never stored over other bytes)"
                )
            except _PreconditionFailedError:
                self._conditional = True
            finally:
                await self.delete_objects([probe])
        return self._conditional

    async def read_pinned(self, piece: _Piece) -> AsyncIterator[bytes]:
        """Stream a writer piece, failing (WriterBusyError) if it is not the one pinned."""
        try:
            response = await self._s3(
                "get_object", Key=self.object_key(piece.key), IfMatch=piece.etag
            )
        except (_PreconditionFailedError, PathNotFoundError):
            raise WriterBusyError(piece.key) from None
        async for chunk in self._stream(response["Body"]):
            yield chunk

    async def exists(self, key: str) -> bool:
        # One HEAD: the writer-state LIST `stat` falls back to would double the cost of
        # every miss (clients HEAD each blob before pushing it).
        try:
            await self._obstore.head(self.object_key(key))
        except PathNotFoundError:
            return False
        return True

    async def stat(self, key: str) -> FileInfo:
        try:
            info = await self._obstore.head(self.object_key(key))
        except PathNotFoundError:
            state = await self._writer_state(key)
            if not state.exists:
                raise PathNotFoundError(key) from None
            return FileInfo(key, state.size, state.modified)
        return FileInfo(key, info.size, info.modified)

    async def list(self, prefix: str) -> list[str]:
        return await self._obstore.children(self.object_key(prefix) + "/")

    async def delete(self, key: str) -> None:
        await self.delete_writer_state(key)
        below = [name for name, *_ in await self._list_objects(key)]
        await self.delete_objects([key, *below])
        await self._delete_folders(_folders_of(key, below))

    async def scan(self, prefix: str) -> list[FileInfo]:
        return [
            FileInfo(key, size, when) for key, size, when, _ in await self._list_objects(prefix)
        ]

    async def delete_many(self, keys: list[str]) -> None:
        await self.delete_objects(keys)
        await self._delete_folders(_folders_of_keys(keys))

    async def delete_then(self, groups: Sequence[tuple[list[str], list[str]]]) -> None:
        """Every group's keys, then every `after`, then the folders of both at once: a
        blob's folder empties only when its tomb goes, so removing folders after the
        first batch too would be a DeleteObjects that removes nothing (as costly on
        SeaweedFS as one that does)."""
        keys = [key for keys, _ in groups for key in keys]
        after = [key for _, after in groups for key in after]
        await self.delete_objects(keys)
        await self.delete_objects(after)
        await self._delete_folders(_folders_of_keys(keys + after))

    async def _delete_folders(self, folders: set[str]) -> None:
        """Remove these folders (`_folders_of`), deepest first.

        Servers with real folders (SeaweedFS) keep listing an emptied folder as a
        common prefix for minutes, which would list a deleted tag; deleting a folder
        key removes it there only if it is empty, and is a no-op on S3 itself.
        """
        if folders:
            deepest_first = sorted(folders, key=lambda folder: (-folder.count("/"), folder))
            await self.delete_objects(deepest_first, folders=True)

    async def redirect_url(self, key: str) -> str | None:
        if not self.settings.redirect:
            return None
        return await self._obstore.presigned_get(self.object_key(key), PRESIGN_SECONDS)

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        await self._obstore.close()

    # -- helpers the writer uses -----------------------------------------------

    def part_size(self, number: int) -> int:
        """The size of a writer's part `number` (from 1), by the growing schedule."""
        return part_size(number, self.settings.part_size, self.settings.parts_per_step)

    def fits_budget(self, buffer: PartBuffer, size: int) -> bool:
        """Whether `buffer` may hold a part of `size` bytes (one in memory holds a slot)."""
        return not isinstance(buffer, MemoryBuffer) or size <= self.settings.part_size

    async def part_buffer(self, size: int) -> PartBuffer:
        """An empty buffer for a part of `size` bytes: in memory on a free slot of the
        budget when it fits one, else in a file."""
        if size <= self.settings.part_size and self.buffer_budget.try_acquire():
            return MemoryBuffer(self.buffer_budget)
        return await FileBuffer.create(self.in_pool)

    def in_pool(self, function: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run a blocking `function` (file I/O) in the driver's thread pool."""
        return asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def put_body(self, key: str, body: Any, length: int) -> str:
        """Store `length` bytes of `body` (bytes or a file at their start) as `key`;
        returns the ETag of what was stored."""
        response = await self._s3(
            "put_object",
            Key=self.object_key(key),
            Body=body,
            ContentLength=length,
            **self._encryption(),
        )
        return str(response["ETag"])

    async def _list_objects(self, prefix: str) -> list[tuple[str, int, float, str]]:
        """(key, size, modified, ETag) of every object below the directory `prefix`."""
        start = self.object_key(prefix) + "/"
        cut = len(start) - len(prefix) - 1
        return [
            (
                meta["path"][cut:],
                meta["size"],
                meta["last_modified"].timestamp(),
                meta["e_tag"] or "",
            )
            for meta in await self._obstore.scan(start)
        ]

    async def delete_objects(self, keys: list[str], folders: bool = False) -> None:
        """Delete `keys` (or, with `folders`, the folder keys `key/`) in batches, in order."""
        suffix = "/" if folders else ""
        for first in range(0, len(keys), _DELETE_BATCH):
            batch = [
                {"Key": self.object_key(k) + suffix} for k in keys[first : first + _DELETE_BATCH]
            ]
            response = await self._s3("delete_objects", Delete={"Objects": batch, "Quiet": True})
            if errors := response.get("Errors"):
                raise StorageUnavailableError(f"S3 DeleteObjects failed for {len(errors)} keys")

    async def delete_writer_state(self, key: str) -> None:
        """Remove the writer state of `key` and of every key below it, aborting open commits."""
        root = self.writer_key(key)
        state = [name for name, *_ in await self._list_objects(root)]
        for name in state:
            if name.endswith("/commit"):
                await self._abort_recorded(name)
        await self.delete_objects(state)
        await self._delete_folders(_folders_of(root, state))

    async def _abort_recorded(self, commit_key: str) -> None:
        with contextlib.suppress(PathNotFoundError):
            destination, upload_id = (await self.get(commit_key)).decode().split("\n", 1)
            await self._abort(destination, upload_id)

    async def _abort(self, destination: str, upload_id: str) -> None:
        with contextlib.suppress(PathNotFoundError):
            await self._s3(
                "abort_multipart_upload",
                Key=self.object_key(destination),
                UploadId=upload_id,
            )

    async def assemble(
        self, destination: str, pieces: list[_Piece], tail: PartBuffer, commit_key: str
    ) -> None:
        """Complete a multipart upload at `destination` from stored parts plus `tail`;
        a part whose ETag changed fails it (WriterBusyError) before anything is stored."""
        bucket, target = self.settings.bucket, self.object_key(destination)
        created = await self._s3(
            "create_multipart_upload",
            Key=target,
            **self._encryption(),
        )
        upload_id = created["UploadId"]
        await self.put(commit_key, f"{destination}\n{upload_id}".encode())
        limit = asyncio.Semaphore(max(1, self.settings.max_concurrency // 2))

        async def copy(number: int, source: _Piece) -> dict[str, Any]:
            async with limit:
                try:
                    result = await self._s3(
                        "upload_part_copy",
                        Key=target,
                        UploadId=upload_id,
                        PartNumber=number,
                        CopySource={"Bucket": bucket, "Key": self.object_key(source.key)},
                        CopySourceIfMatch=source.etag,
                    )
                except (_PreconditionFailedError, PathNotFoundError):
                    raise WriterBusyError(source.key) from None
            return {"PartNumber": number, "ETag": result["CopyPartResult"]["ETag"]}

        try:
            copies = [copy(n, piece) for n, piece in enumerate(pieces, start=1)]
            parts = list(await asyncio.gather(*copies))
            if tail.size:
                uploaded = await tail.send(
                    lambda body, length: self._s3(
                        "upload_part",
                        Key=target,
                        UploadId=upload_id,
                        PartNumber=len(parts) + 1,
                        Body=body,
                        ContentLength=length,
                    )
                )
                parts.append({"PartNumber": len(parts) + 1, "ETag": uploaded["ETag"]})
            await self._s3(
                "complete_multipart_upload",
                Key=target,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            with contextlib.suppress(StorageError):
                await self._abort(destination, upload_id)
            raise
        # Completed: nothing is left to abort (aborting a completed upload confuses some servers).
        await self.delete_objects([commit_key])
