"""Many clients at once, and several processes sharing one storage root."""

from __future__ import annotations

import asyncio

import httpx

from registry.app import create_app
from registry.config import Config
from storage.driver import StorageDriver
from tests.api.helpers import (
    OCI_MANIFEST,
    digest_of,
    image_manifest,
    push_blob,
    push_image,
    put_manifest,
)
from tests.support.drivers import twin


def client_for(driver: StorageDriver) -> httpx.AsyncClient:
    """A client of its own app over `driver`'s storage: stands in for another process."""
    app = create_app(Config(), twin(driver))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r.test")


async def test_same_blob_pushed_concurrently(client: httpx.AsyncClient) -> None:
    data = b"shared layer" * 10_000
    digest = digest_of(data)

    async def push(name: str) -> int:
        location = (await client.post(f"/v2/{name}/blobs/uploads/")).headers["location"]
        await client.patch(location, content=data)
        return (await client.put(f"{location}?digest={digest}")).status_code

    statuses = await asyncio.gather(*(push(f"team/app{i % 3}") for i in range(12)))
    assert statuses == [201] * 12
    for i in range(3):
        assert (await client.get(f"/v2/team/app{i}/blobs/{digest}")).content == data


async def test_same_tag_pushed_concurrently(client: httpx.AsyncClient) -> None:
    await push_blob(client, "team/app", b"{}")
    layers = [f"layer {i}".encode() for i in range(8)]
    for layer in layers:
        await push_blob(client, "team/app", layer)
    manifests = [image_manifest(b"{}", [layer]) for layer in layers]
    responses = await asyncio.gather(
        *(put_manifest(client, "team/app", "latest", raw, OCI_MANIFEST) for raw in manifests)
    )
    assert [r.status_code for r in responses] == [201] * len(manifests)
    current = (await client.get("/v2/team/app/manifests/latest")).content
    assert current in manifests  # one whole manifest won, none was torn


async def test_upload_alternating_between_processes(driver: StorageDriver) -> None:
    data = bytes(range(256)) * 50_000
    digest = digest_of(data)
    step = len(data) // 5
    async with client_for(driver) as first, client_for(driver) as second:
        location = (await first.post("/v2/team/app/blobs/uploads/")).headers["location"]
        for index, offset in enumerate(range(0, len(data), step)):
            chunk = data[offset : offset + step]
            peer = (first, second)[index % 2]
            response = await peer.patch(
                location,
                content=chunk,
                headers={"Content-Range": f"{offset}-{offset + len(chunk) - 1}"},
            )
            assert response.status_code == 202, response.text
        status = await second.get(location)
        assert status.headers["range"] == f"0-{len(data) - 1}"
        assert (await first.put(f"{location}?digest={digest}")).status_code == 201
        for peer in (first, second):
            assert (await peer.get(f"/v2/team/app/blobs/{digest}")).content == data


async def test_manifest_pushed_in_one_process_served_by_another(
    driver: StorageDriver,
) -> None:
    async with client_for(driver) as first, client_for(driver) as second:
        await push_blob(first, "team/app", b"{}")
        raw = image_manifest(b"{}", [])
        assert (await put_manifest(first, "team/app", "v1", raw, OCI_MANIFEST)).status_code == 201
        assert (await second.get("/v2/team/app/manifests/v1")).content == raw
        assert (await second.delete("/v2/team/app/manifests/v1")).status_code == 202
        assert (await first.get("/v2/team/app/manifests/v1")).status_code == 404
        assert (await first.get("/v2/_catalog")).json() == {"repositories": ["team/app"]}


async def test_one_process_sees_what_another_changed(driver: StorageDriver) -> None:
    """Nothing a process remembers may hide a change made by another process."""
    async with client_for(driver) as first, client_for(driver) as second:
        old, _ = await push_image(second, "team/app", "latest", seed="old")
        new_digest, new = await push_image(second, "team/app", "other", seed="new")
        layer = digest_of(b"layer of old")
        for reference in ("latest", old):  # warm every cache of the first process
            assert (await first.get(f"/v2/team/app/manifests/{reference}")).status_code == 200
        assert (await first.head(f"/v2/team/app/blobs/{layer}")).status_code == 200
        assert (await first.get("/v2/team/app/tags/list")).json()["tags"] == ["latest", "other"]

        await put_manifest(second, "team/app", "latest", new, OCI_MANIFEST)  # retag
        assert (await first.get("/v2/team/app/manifests/latest")).content == new
        assert (await second.delete(f"/v2/team/app/manifests/{new_digest}")).status_code == 202
        for reference in ("latest", "other", new_digest):
            response = await first.get(f"/v2/team/app/manifests/{reference}")
            assert response.status_code == 404, reference
        assert (await first.get("/v2/team/app/tags/list")).json()["tags"] == []
        assert (await second.delete(f"/v2/team/app/manifests/{old}")).status_code == 202
        assert (await second.delete(f"/v2/team/app/blobs/{layer}")).status_code == 202
        assert (await first.head(f"/v2/team/app/blobs/{layer}")).status_code == 404
