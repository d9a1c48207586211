"""How a blob fill streams: the client's bytes are never held up by the storage (only the
last ones, by the digest check), processes sharing the storage fetch a blob once, and a
Range of a blob not cached yet is answered."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from oci.references import Digest
from proxy.blob_fill import BrokenUpstreamBody, FilledResponse
from storage.driver import StorageDriver
from storage.filesystem import FilesystemDriver
from storage.store import Store
from tests.api.helpers import digest_of, push_blob
from tests.proxy.conftest import CacheFactory, UpstreamTransport

PIECE = 64 << 10  # what the test transport sends at a time


async def cached_blob(
    upstream: httpx.AsyncClient, open_cache: CacheFactory, size: int
) -> tuple[httpx.AsyncClient, Store, bytes]:
    """A cache, its store, and a blob of `size` random bytes only the upstream has."""
    data = os.urandom(size)
    await push_blob(upstream, "library/app", data)
    cache = open_cache()
    return cache, cache.app.state.store, data  # type: ignore[attr-defined]


def held_up(
    monkeypatch: pytest.MonkeyPatch, owner: object, method: str
) -> tuple[asyncio.Event, asyncio.Event]:
    """Make `owner.method` wait until the second event is set; the first is set once it
    is called."""
    called, goes = asyncio.Event(), asyncio.Event()
    original = getattr(owner, method)

    async def waiting(*args: Any) -> Any:
        called.set()
        await goes.wait()
        return await original(*args)

    monkeypatch.setattr(owner, method, waiting)
    return called, goes


async def filled(cache: httpx.AsyncClient, data: bytes) -> tuple[FilledResponse, Digest]:
    """A cold GET of `data`'s blob through the cache's API, its body not read yet."""
    proxy = cache.app.state.proxy  # type: ignore[attr-defined]
    target = await proxy.target("hub/library/app", None)
    digest = Digest.parse(digest_of(data))
    response = await proxy.blob(target, digest, "GET")
    assert isinstance(response, FilledResponse)
    return response, digest


async def read(body: AsyncIterator[bytes], at_least: int) -> bytes:
    """Read `body` until `at_least` bytes came (a failure, not a wait, if they never do)."""
    parts, received = [], 0
    while received < at_least:
        part = await asyncio.wait_for(anext(body), 30)
        parts.append(part)
        received += len(part)
    return b"".join(parts)


async def test_the_client_gets_every_byte_while_the_storage_writes_are_held_up(
    upstream: httpx.AsyncClient, open_cache: CacheFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, store, layer = await cached_blob(upstream, open_cache, 4 << 20)
    writing, writes_go = held_up(monkeypatch, store.uploads, "_flush")
    response, digest = await filled(cache, layer)
    body = response.body_iterator
    # the last piece too: the digest is checked as the upstream's bytes come, not
    # once the storage has written them
    assert await read(body, len(layer)) == layer
    assert [part async for part in body] == []
    await asyncio.wait_for(writing.wait(), 30)
    assert await store.blobs.size(digest) is None
    writes_go.set()
    stored = await cache.get(f"/v2/hub/library/app/blobs/{digest}")
    assert stored.content == layer


@pytest.mark.parametrize("driver", ["filesystem"], indirect=True)  # the one that fsyncs
async def test_the_client_gets_its_first_bytes_while_fsyncs_are_held_up(
    upstream: httpx.AsyncClient,
    open_cache: CacheFactory,
    driver: StorageDriver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nothing on the way to the first byte waits for the disk: the fetch lease is not
    fsynced, the upload session is made while the bytes already flow."""
    assert isinstance(driver, FilesystemDriver)
    cache, _, layer = await cached_blob(upstream, open_cache, 1 << 20)
    fsyncs_go = threading.Event()
    original = os.fsync

    def held_fsync(fd: int) -> None:
        fsyncs_go.wait()
        original(fd)

    monkeypatch.setattr(os, "fsync", held_fsync)
    try:
        response, digest = await asyncio.wait_for(filled(cache, layer), 30)
        body = response.body_iterator
        first = await read(body, PIECE)
    finally:
        fsyncs_go.set()
    assert first + b"".join([part async for part in body]) == layer
    assert (await cache.get(f"/v2/hub/library/app/blobs/{digest}")).content == layer


async def test_a_client_never_gets_the_last_bytes_of_a_blob_that_does_not_match(
    upstream: httpx.AsyncClient, transport: UpstreamTransport, open_cache: CacheFactory
) -> None:
    cache, store, layer = await cached_blob(upstream, open_cache, 1 << 20)
    transport.corrupt = True
    response, digest = await filled(cache, layer)
    received = 0
    with pytest.raises(BrokenUpstreamBody):
        async for part in response.body_iterator:
            received += len(part)
    assert received <= len(layer) - PIECE
    assert await store.blobs.size(digest) is None


async def test_the_client_has_every_byte_before_the_blob_is_committed(
    upstream: httpx.AsyncClient, open_cache: CacheFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, store, layer = await cached_blob(upstream, open_cache, 1 << 20)
    committing, commit_goes = held_up(monkeypatch, store.blobs, "commit")
    response, digest = await filled(cache, layer)
    assert await read(response.body_iterator, len(layer)) == layer  # verified, and whole
    assert [part async for part in response.body_iterator] == []
    await asyncio.wait_for(committing.wait(), 30)
    assert await store.blobs.size(digest) is None  # not visible before it is committed
    commit_goes.set()
    stored = await cache.get(f"/v2/hub/library/app/blobs/{digest}")
    assert stored.content == layer


async def test_processes_sharing_the_storage_fetch_a_blob_from_the_upstream_once(
    upstream: httpx.AsyncClient, transport: UpstreamTransport, open_cache: CacheFactory
) -> None:
    layer = os.urandom(2 << 20)
    digest = await push_blob(upstream, "library/app", layer)
    processes = [open_cache(), open_cache()]  # each its own cache, on one storage
    pulled = await asyncio.gather(
        *(
            process.get(f"/v2/hub/library/app/blobs/{digest}")
            for process in processes
            for _ in range(3)
        )
    )
    assert {response.content for response in pulled} == {layer}
    assert transport.count("GET", f"/blobs/{digest}") == 1


async def test_a_range_of_a_blob_not_cached_yet_is_served(
    upstream: httpx.AsyncClient, transport: UpstreamTransport, open_cache: CacheFactory
) -> None:
    layer = os.urandom(1 << 20)
    digest = await push_blob(upstream, "library/app", layer)
    cache = open_cache()
    path = f"/v2/hub/library/app/blobs/{digest}"
    ranged = await cache.get(path, headers={"Range": "bytes=1000-1999"})
    assert ranged.status_code == 206
    assert ranged.headers["Content-Range"] == f"bytes 1000-1999/{len(layer)}"
    assert ranged.content == layer[1000:2000]
    assert (await cache.get(path)).content == layer  # the whole blob was cached
    assert transport.count("GET", f"/blobs/{digest}") == 1
