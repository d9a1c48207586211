"""The read caches (manifest revisions, vouched blobs) and their deletion generation.

A process answers repeated HEADs and manifest GETs from memory; a request that
begins after a deletion answered, on this process or another, never sees what it
deleted (storage/deletions.py).
"""

from __future__ import annotations

from typing import Any

import httpx
from starlette.applications import Starlette

from oci.references import Digest
from registry.app import create_app
from registry.config import Config
from storage import paths
from storage.driver import StorageDriver
from storage.memory import MemoryDriver
from storage.store import Store
from tests.api.helpers import OCI_MANIFEST, digest_of, push_image, put_manifest
from tests.api.test_concurrency import client_for
from tests.support.drivers import twin

NAME = "team/app"
LAYER = digest_of(b"layer of x")


def client_of(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r.test")


async def warm(client: httpx.AsyncClient, digest: str) -> None:
    for reference in ("v1", digest, digest):
        assert (await client.get(f"/v2/{NAME}/manifests/{reference}")).status_code == 200
    for _ in range(2):
        assert (await client.head(f"/v2/{NAME}/blobs/{LAYER}")).status_code == 200


async def test_a_delete_then_a_get_on_the_same_process_answers_404(
    client: httpx.AsyncClient,
) -> None:
    digest, _ = await push_image(client, NAME, "v1")
    await warm(client, digest)
    assert (await client.delete(f"/v2/{NAME}/manifests/{digest}")).status_code == 202
    assert (await client.get(f"/v2/{NAME}/manifests/{digest}")).status_code == 404
    assert (await client.head(f"/v2/{NAME}/manifests/{digest}")).status_code == 404
    assert (await client.delete(f"/v2/{NAME}/blobs/{LAYER}")).status_code == 202
    assert (await client.head(f"/v2/{NAME}/blobs/{LAYER}")).status_code == 404


async def test_another_process_sees_an_api_delete_at_once(
    driver: StorageDriver,
) -> None:
    async with client_for(driver) as first, client_for(driver) as second:
        digest, _ = await push_image(second, NAME, "v1")
        await warm(first, digest)
        assert (await second.delete(f"/v2/{NAME}/manifests/{digest}")).status_code == 202
        assert (await second.delete(f"/v2/{NAME}/blobs/{LAYER}")).status_code == 202
        assert (await first.get(f"/v2/{NAME}/manifests/{digest}")).status_code == 404
        assert (await first.head(f"/v2/{NAME}/blobs/{LAYER}")).status_code == 404


async def test_another_process_sees_a_collector_deletion_at_once(
    driver: StorageDriver,
) -> None:
    """Retention removes manifests through the store, as `dockyard gc` does in its own
    process."""
    async with client_for(driver) as first:
        digest, _ = await push_image(first, NAME, "v1")
        await warm(first, digest)
        collector = Store(twin(driver))
        assert await collector.manifests.delete(NAME, Digest.parse(digest))
        assert (await first.get(f"/v2/{NAME}/manifests/{digest}")).status_code == 404


async def test_another_process_sees_tag_changes_at_once(driver: StorageDriver) -> None:
    async with client_for(driver) as first, client_for(driver) as second:
        digest, raw = await push_image(second, NAME, "v1")
        assert (await put_manifest(second, NAME, "old", raw, OCI_MANIFEST)).status_code == 201
        assert (await second.delete(f"/v2/{NAME}/manifests/old")).status_code == 202

        async def listed() -> list[str]:
            return (await first.get(f"/v2/{NAME}/tags/list")).json()["tags"]

        assert await listed() == ["v1"]
        assert await listed() == ["v1"]  # from memory
        assert (await put_manifest(second, NAME, "v2", raw, OCI_MANIFEST)).status_code == 201
        assert await listed() == ["v1", "v2"]
        assert (await second.delete(f"/v2/{NAME}/manifests/v1")).status_code == 202
        assert await listed() == ["v2"]
        assert (await second.delete(f"/v2/{NAME}/manifests/{digest}")).status_code == 202
        assert await listed() == []


class Recording(MemoryDriver):
    """A memory driver that records the key of every read."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    async def get(self, key: str) -> bytes:
        self.reads.append(key)
        return await super().get(key)

    async def stat(self, key: str) -> Any:
        self.reads.append(key)
        return await super().stat(key)

    async def exists(self, key: str) -> bool:
        self.reads.append(key)
        return await super().exists(key)

    async def list(self, prefix: str) -> list[str]:
        self.reads.append(prefix)
        return await super().list(prefix)


async def test_repeated_reads_come_from_memory() -> None:
    """A HEAD blob again reads nothing, a manifest GET by tag only the tag, a tag list
    only the repository's `tags_changed` (and the first two the deletion generation)."""
    driver = Recording()
    async with client_of(create_app(Config(), driver)) as client:
        digest, _ = await push_image(client, NAME, "v1")
        await warm(client, digest)
        assert (await client.get(f"/v2/{NAME}/tags/list")).json()["tags"] == ["v1"]
        driver.reads.clear()
        assert (await client.head(f"/v2/{NAME}/blobs/{LAYER}")).status_code == 200
        assert (await client.get(f"/v2/{NAME}/manifests/{digest}")).status_code == 200
        assert (await client.get(f"/v2/{NAME}/manifests/v1")).status_code == 200
        reads_before_listing = len(driver.reads)
        assert (await client.get(f"/v2/{NAME}/tags/list")).json()["tags"] == ["v1"]
    reads = {key for key in driver.reads[:reads_before_listing] if key != paths.deletions()}
    assert reads == {paths.tag_link(NAME, "v1")}
    assert set(driver.reads[reads_before_listing:]) == {
        paths.catalog_marker(NAME),  # the route's check that the repository exists
        paths.tags_changed(NAME),
    }
