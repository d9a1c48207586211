"""The S3 driver's calls through obstore: the hot read path (HeadObject, GetObject,
listings, presigned GET URLs) and the small writes. Large ranges from a plain-HTTP
endpoint are read without it (storage/s3_plain_get.py).

Why not boto3 here: the profile in bench/RESULTS-s3.md put ~700 µs of CPU on every
boto3 HeadObject (request signing, endpoint resolution, response parsing, urllib3),
plus a hop to a pool thread and back; obstore (Rust's object_store, native asyncio)
does the same request for ~200 µs of CPU measured here, with no thread hop, and
parses a listing in Rust: 6-8 µs of CPU a key where boto3's took 39-56 (10,000 keys of
SeaweedFS, 4 alternating rounds; a collection lists every blob, touch and link).
aiobotocore would keep botocore's per-call cost.
A small PutObject costs 1.9-2.5 ms of CPU through boto3 and 0.40-0.56 ms here (500
of 200 bytes one at a time, the same rounds: 219-291 a second against 395-542; 2,000
empty ones 16 at a time: 415-477 against 1,600-2,300): a push writes small objects
for each blob and manifest (links, touches, the tag, the revision), a collection one
tomb per candidate blob (50,000 in the gc bench) and a usage summary per repository.
A full server's 507 (MinIO's XMinioStorageFull) is StorageFullError, as through
boto3. The other writes (parts and their assembly, conditional PutObjects,
DeleteObjects) stay on boto3 in s3.py: obstore has no UploadPartCopy, and boto3 says
a failed precondition as such.

Every call is bounded: connect and read timeouts and a few retries within
`read_timeout`; a streamed body comes in pieces of about `READ_CHUNK` bytes, pulled
one piece ahead of what the caller consumed (the socket's window is the rest).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import obstore
from obstore.exceptions import BaseError as ObstoreError
from obstore.store import S3Store

from storage.driver import (
    READ_CHUNK,
    FileInfo,
    PathNotFoundError,
    StorageError,
    StorageFullError,
    StorageUnavailableError,
)

if TYPE_CHECKING:
    from obstore import ObjectMeta

    from storage.s3 import S3Settings

HANDOVER_SECONDS = 0.02


def _store(settings: S3Settings) -> S3Store:
    endpoint = settings.endpoint_url
    virtual = settings.addressing == "virtual" or (settings.addressing == "auto" and not endpoint)
    config: dict[str, Any] = {"region": settings.region or "us-east-1"}
    if settings.server_side_encryption:  # sent with PutObject only, as boto3's
        config["server_side_encryption"] = settings.server_side_encryption
        if settings.kms_key_id:
            config["sse_kms_key_id"] = settings.kms_key_id
    if endpoint:
        if virtual:  # object_store wants the bucket in a virtual-hosted endpoint
            scheme, _, host = endpoint.partition("://")
            endpoint = f"{scheme}://{settings.bucket}.{host}"
        config["endpoint"] = endpoint
    config["virtual_hosted_style_request"] = virtual
    credentials: Any = None
    if settings.access_key and settings.secret_key:
        config["access_key_id"] = settings.access_key
        config["secret_access_key"] = settings.secret_key
    else:  # the same chain boto3 uses (environment, profile, instance role)
        import boto3
        from obstore.auth.boto3 import Boto3CredentialProvider

        session = boto3.session.Session()
        if session.get_credentials() is not None:  # else requests fail as boto3's would
            credentials = Boto3CredentialProvider(session)
    timeout = timedelta(seconds=settings.read_timeout)
    return S3Store(
        settings.bucket,
        config=config,  # type: ignore[arg-type]
        client_options={
            "allow_http": bool(endpoint and endpoint.startswith("http://")),
            "connect_timeout": timedelta(seconds=settings.connect_timeout),
            "read_timeout": timeout,
            "timeout": timedelta(days=1),  # a whole download; `read_timeout` bounds stalls
            "pool_max_idle_per_host": str(max(settings.max_concurrency, 64)),
        },
        retry_config={"max_retries": max(0, settings.max_attempts - 1), "retry_timeout": timeout},
        credential_provider=credentials,
    )


class ObstoreCalls:
    """HeadObject, GetObject (whole or a range, streamed), listings and PutObjects of
    small objects, by full object keys; a missing key raises PathNotFoundError(key), a
    failure StorageUnavailableError (a write to a full server: StorageFullError)."""

    def __init__(self, settings: S3Settings) -> None:
        self._store = _store(settings)
        self._concurrency = settings.max_concurrency

    async def head(self, key: str) -> FileInfo:
        try:
            meta = await obstore.head_async(self._store, key)
        except FileNotFoundError:
            raise PathNotFoundError(key) from None
        except ObstoreError as error:
            raise _unavailable("HeadObject", error) from None
        return FileInfo(key, meta["size"], meta["last_modified"].timestamp())

    async def get(self, key: str) -> bytes:
        try:
            result = await obstore.get_async(self._store, key)
            return bytes(await result.bytes_async())
        except FileNotFoundError:
            raise PathNotFoundError(key) from None
        except ObstoreError as error:
            raise _unavailable("GetObject", error) from None

    async def stream(self, key: str, offset: int, length: int | None) -> AsyncIterator[bytes]:
        """The bytes of `key` from `offset` (`length` of them, all if None), in pieces."""
        if length is not None:
            options: Any = {"range": (offset, offset + length)}
        elif offset:
            options = {"range": {"offset": offset}}
        else:
            options = {}
        try:
            result = await obstore.get_async(self._store, key, options=options)
        except FileNotFoundError:
            raise PathNotFoundError(key) from None
        except ObstoreError as error:
            if options and offset >= (await self.head(key)).size:
                return  # a range starting at the end: nothing to read (S3 answers 416)
            raise _unavailable("GetObject", error) from None
        pieces = result.stream(min_chunk_size=READ_CHUNK)

        async def following() -> bytes | None:
            try:
                piece = await anext(pieces, None)
            except ObstoreError as error:
                raise _unavailable("GetObject", error) from None
            return None if piece is None else bytes(piece)

        # One piece read ahead while the caller sends the last: S3 and the client's
        # socket both stay busy, and a download holds at most two pieces.
        ahead = asyncio.ensure_future(following())
        try:
            while (piece := await ahead) is not None:
                ahead = asyncio.ensure_future(following())
                yield piece
        finally:
            ahead.cancel()

    async def put(self, key: str, data: bytes | bytearray) -> None:
        """A small object at `key` (replacing any), in one PutObject whatever its size."""
        try:
            await obstore.put_async(self._store, key, data, use_multipart=False)
        except ObstoreError as error:
            raise _failure("PutObject", error) from None

    async def put_empty(self, keys: Sequence[str]) -> None:
        """An empty object at each key (replacing any), `max_concurrency` at a time."""
        waiting = iter(keys)

        async def put_next() -> None:
            for key in waiting:  # each task takes the next key left
                await self.put(key, b"")

        workers = [asyncio.ensure_future(put_next()) for _ in range(self._concurrency)]
        try:
            await asyncio.gather(*workers)
        except StorageError:
            for worker in workers:
                worker.cancel()
            raise

    async def presigned_get(self, key: str, seconds: int) -> str:
        """A URL that GETs `key` without credentials for `seconds` (SigV4 query signing;
        ~50 µs of CPU and no thread hop, where boto3's took ~90 µs in a pool thread)."""
        try:
            return await obstore.sign_async(self._store, "GET", key, timedelta(seconds=seconds))
        except ObstoreError as error:
            raise _unavailable("presign", error) from None

    async def close(self) -> None:
        """Let obstore's threads finish handing their last results to this loop.

        A tokio thread hands a result over by `loop.call_soon_threadsafe`, which queues
        the callback and then writes to the loop's wake-up socket with the GIL released.
        The loop can run the callback and the program finish before that thread takes
        the GIL back; if it comes back while the interpreter is finalizing, CPython
        3.11 ends it with pthread_exit, whose forced unwind through Rust frames aborts
        the process (a `dockyard du` killed by SIGABRT after printing its report, about
        one run in fifty). Waiting in the loop's poll releases the GIL to them.
        """
        await asyncio.sleep(HANDOVER_SECONDS)

    async def scan(self, start: str) -> list[ObjectMeta]:
        """Every object whose key begins with `start` (ends in /), at any depth."""
        try:
            return await obstore.list(self._store, start).collect_async()
        except ObstoreError as error:
            raise _unavailable("ListObjectsV2", error) from None

    async def children(self, start: str) -> list[str]:
        """Names of the objects and common prefixes directly below `start` (ends in /)."""
        try:
            listing = await obstore.list_with_delimiter_async(self._store, start)
        except ObstoreError as error:
            raise _unavailable("ListObjectsV2", error) from None
        names = {entry[len(start) :].rstrip("/") for entry in listing["common_prefixes"]}
        names.update(meta["path"][len(start) :] for meta in listing["objects"])
        names.discard("")  # the prefix's own folder entry, on servers with real folders
        return sorted(names)


def _unavailable(operation: str, error: Exception) -> StorageUnavailableError:
    first = str(error).split("\n", 1)[0]
    return StorageUnavailableError(f"S3 {operation} failed: {type(error).__name__}: {first}")


def _failure(operation: str, error: Exception) -> StorageError:
    """StorageFullError for a server out of space (HTTP 507, MinIO's XMinioStorageFull:
    obstore says either only in its message), else StorageUnavailableError."""
    said = str(error)
    if "<Code>XMinioStorageFull</Code>" in said:
        return StorageFullError(f"S3 {operation} failed: XMinioStorageFull (HTTP 507)")
    if _INSUFFICIENT_STORAGE.search(said):
        return StorageFullError(f"S3 {operation} failed: Insufficient Storage (HTTP 507)")
    return _unavailable(operation, error)


_INSUFFICIENT_STORAGE = re.compile(r"status code: 507\b")
