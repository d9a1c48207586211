"""Usage summaries: exact after pushes, deletes and concurrent pushes from two processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette

from registry.app import create_app
from registry.config import Config
from storage.driver import FileInfo, StorageDriver, Versioned, Writer
from storage.store import Store
from storage.usage import Summary, usage_report
from tests.api.helpers import (
    OCI_MANIFEST,
    digest_of,
    image_manifest,
    push_blob,
    put_manifest,
)
from tests.api.test_concurrency import client_for
from tests.support.drivers import twin


def store_of(app: Starlette) -> Store:
    return app.state.store


async def push(
    client: httpx.AsyncClient, name: str, tag: str, config: bytes, layers: list[bytes]
) -> bytes:
    """Push an image; returns its manifest."""
    for blob in (config, *layers):
        await push_blob(client, name, blob)
    manifest = image_manifest(config, layers)
    response = await put_manifest(client, name, tag, manifest, OCI_MANIFEST)
    assert response.status_code == 201, response.text
    return manifest


def size(*blobs: bytes) -> int:
    return sum(len(blob) for blob in blobs)


async def test_shared_layers_count_once_in_the_total(
    client: httpx.AsyncClient, app: Starlette
) -> None:
    shared, only_a, only_b = b"s" * 5000, b"a" * 3000, b"b" * 700
    started = time.time()
    manifest_a = await push(client, "team/a", "1", b'{"a":1}', [shared, only_a])
    manifest_b = await push(client, "team/b", "1", b'{"b":1}', [shared, only_b])
    manifest_b2 = await push(client, "team/b", "2", b'{"b":2}', [shared])
    store = store_of(app)

    a = await store.usage.summary("team/a")
    assert a is not None and a.last_push is not None
    assert (a.tags, a.manifests, a.blobs) == (1, 1, 4)
    assert a.bytes == size(manifest_a, b'{"a":1}', shared, only_a)
    assert started <= a.last_push <= time.time()
    b = await store.usage.summary("team/b")
    assert b is not None
    assert (b.tags, b.manifests, b.blobs) == (2, 2, 6)
    assert b.bytes == size(manifest_b, manifest_b2, b'{"b":1}', b'{"b":2}', shared, only_b)

    report = await usage_report(store.usage, store.catalog)
    unique = {row.name: row.unique_bytes for row in report.repositories}
    assert unique == {"team/a": a.bytes - len(shared), "team/b": b.bytes - len(shared)}
    assert report.total_bytes == a.bytes + b.bytes - len(shared)
    only_b_report = await usage_report(store.usage, store.catalog, ["team/b"])
    assert [row.name for row in only_b_report.repositories] == ["team/b"]
    assert only_b_report.total_bytes == b.bytes


async def test_summary_follows_tag_manifest_and_blob_deletes(
    client: httpx.AsyncClient, app: Starlette
) -> None:
    layer, config, loose = b"l" * 4000, b'{"x":1}', b"in no manifest" * 30
    await push_blob(client, "team/app", loose)
    manifest = await push(client, "team/app", "1", config, [layer])
    assert (await put_manifest(client, "team/app", "2", manifest, OCI_MANIFEST)).status_code == 201
    other = await push(client, "team/app", "3", b'{"x":2}', [layer])
    usage = store_of(app).usage
    pushed = await usage.summary("team/app")
    assert pushed is not None and (pushed.tags, pushed.manifests) == (3, 2)

    assert (await client.delete("/v2/team/app/manifests/3")).status_code == 202
    untagged = await usage.summary("team/app")
    assert untagged == Summary(2, 2, 6, pushed.bytes, pushed.last_push)

    # Deleting manifest 1 removes tags 1 and 2 with it.
    response = await client.delete(f"/v2/team/app/manifests/{digest_of(manifest)}")
    assert response.status_code == 202
    deleted = await usage.summary("team/app")
    assert deleted == Summary(0, 1, 5, pushed.bytes - len(manifest), pushed.last_push)
    assert deleted.bytes == size(other, config, b'{"x":2}', layer, loose)

    assert (await client.delete(f"/v2/team/app/blobs/{digest_of(loose)}")).status_code == 202
    unlinked = await usage.summary("team/app")
    assert unlinked == Summary(0, 1, 4, deleted.bytes - len(loose), pushed.last_push)


async def test_concurrent_pushes_from_two_processes_end_exact(driver: StorageDriver) -> None:
    """Manifest PUTs at once through two processes: their summary rewrites overlap, and
    whichever writes last must not leave out what the others pushed."""
    config, common = b'{"shared":true}', b"common" * 50
    layers = [f"layer {i}".encode() * 100 for i in range(16)]
    manifests = [image_manifest(config, [layer, common]) for layer in layers]
    async with client_for(driver) as first, client_for(driver) as second:
        for blob in (config, common, *layers):
            await push_blob(first, "team/app", blob)
        responses = await asyncio.gather(
            *(
                put_manifest((first, second)[i % 2], "team/app", f"t{i}", raw, OCI_MANIFEST)
                for i, raw in enumerate(manifests)
            )
        )
        assert [response.status_code for response in responses] == [201] * len(manifests)
    blobs = {config, common, *layers, *manifests}
    usage = Store(twin(driver)).usage  # a third process reads what both wrote
    summary = await usage.summary("team/app")
    assert summary is not None
    assert (summary.tags, summary.manifests, summary.blobs) == (16, 16, len(blobs))
    assert summary.bytes == size(*blobs)
    assert len(await usage.sizes("team/app") or {}) == len(blobs)


class HeldSummaryWrites(StorageDriver):
    """Another process's view of `driver` whose first summary write waits for `release`:
    the slow writer of a race, made to lose it every time."""

    name = "held"

    def __init__(self, driver: StorageDriver) -> None:
        self._driver = driver
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    async def put(self, key: str, data: bytes) -> None:
        if key.endswith("/_summary_blobs") and not self.held.is_set():
            self.held.set()
            await self.release.wait()
        await self._driver.put(key, data)

    async def get(self, key: str) -> bytes:
        return await self._driver.get(key)

    def reader(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        return self._driver.reader(key, offset, length)

    async def writer(self, key: str, append: bool = False) -> Writer:
        return await self._driver.writer(key, append)

    async def scan(self, prefix: str) -> list[FileInfo]:
        return await self._driver.scan(prefix)

    async def read_versioned(self, key: str) -> Versioned:
        return await self._driver.read_versioned(key)

    async def create(self, key: str, data: bytes, durable: bool = True) -> str | None:
        return await self._driver.create(key, data, durable)

    async def replace(self, key: str, data: bytes, version: str) -> str | None:
        return await self._driver.replace(key, data, version)

    async def stat(self, key: str) -> FileInfo:
        return await self._driver.stat(key)

    async def list(self, prefix: str) -> list[str]:
        return await self._driver.list(prefix)

    async def delete(self, key: str) -> None:
        await self._driver.delete(key)


async def test_a_summary_written_late_from_old_facts_is_corrected(driver: StorageDriver) -> None:
    config, layer = b'{"late":true}', b"late layer" * 100
    first_manifest = image_manifest(config, [layer])
    second_manifest = image_manifest(config, [layer], annotations={"second": "yes"})
    slow = HeldSummaryWrites(twin(driver))
    app = create_app(Config(), slow)
    slow_client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://r.test"
    )
    async with slow_client as first, client_for(driver) as second:
        for blob in (config, layer):
            await push_blob(second, "team/app", blob)
        late = asyncio.create_task(
            put_manifest(first, "team/app", "1", first_manifest, OCI_MANIFEST)
        )
        await asyncio.wait_for(slow.held.wait(), 30)  # it listed the facts: tag 1 only
        response = await put_manifest(second, "team/app", "2", second_manifest, OCI_MANIFEST)
        assert response.status_code == 201
        slow.release.set()  # ... and now writes what it computed from them
        assert (await late).status_code == 201
    summary = await Store(twin(driver)).usage.summary("team/app")
    assert summary is not None
    assert (summary.tags, summary.manifests) == (2, 2)
    assert summary.bytes == size(config, layer, first_manifest, second_manifest)
