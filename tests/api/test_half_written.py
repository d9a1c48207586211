"""Readers ignore half-written entries: an object a cut-off write left empty (SeaweedFS
keeps one when the registry is killed after a PutObject's headers) is no entry, never a
500 and never wrong bytes, and pushing again repairs it.

Each state is written straight into storage, as a kill -9 of the registry would leave it.
"""

from __future__ import annotations

import httpx

from oci.references import Digest
from storage import paths
from storage.driver import StorageDriver
from tests.api.helpers import (
    OCI_MANIFEST,
    push_blob,
    push_image,
    push_referrer,
    put_manifest,
)
from tests.api.test_concurrency import client_for

NAME = "team/app"


async def test_an_empty_tag_link_is_no_tag_and_can_be_deleted(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    await push_image(client, NAME, "1.0")
    await driver.put(paths.tag_link(NAME, "1.0"), b"")
    assert (await client.get(f"/v2/{NAME}/manifests/1.0")).status_code == 404
    assert (await client.head(f"/v2/{NAME}/manifests/1.0")).status_code == 404
    assert (await client.delete(f"/v2/{NAME}/manifests/1.0")).status_code == 202
    assert "1.0" not in ((await client.get(f"/v2/{NAME}/tags/list")).json()["tags"] or [])


async def test_an_empty_revision_link_is_no_manifest_and_a_push_repairs_it(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    digest, raw = await push_image(client, NAME, "1.0")
    await driver.put(paths.revision_link(NAME, Digest.parse(digest)), b"")
    assert (await client.get(f"/v2/{NAME}/manifests/{digest}")).status_code == 404
    assert (await client.get(f"/v2/{NAME}/manifests/1.0")).status_code == 404
    assert (await put_manifest(client, NAME, "1.0", raw, OCI_MANIFEST)).status_code == 201
    assert (await client.get(f"/v2/{NAME}/manifests/1.0")).content == raw


async def test_empty_manifest_content_is_never_served_and_a_push_repairs_it(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    digest, raw = await push_image(client, NAME, "1.0")
    await driver.put(paths.blob_data(Digest.parse(digest)), b"")
    async with client_for(driver) as other:  # a process without the bytes in its cache
        assert (await other.get(f"/v2/{NAME}/manifests/{digest}")).status_code == 404
        assert (await other.get(f"/v2/{NAME}/manifests/1.0")).status_code == 404
    assert (await put_manifest(client, NAME, "1.0", raw, OCI_MANIFEST)).status_code == 201
    assert await driver.get(paths.blob_data(Digest.parse(digest))) == raw


async def test_empty_blob_data_is_missing_and_pushing_again_stores_the_bytes(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    data = b"a layer cut off mid write" * 100
    digest = await push_blob(client, NAME, data)
    await driver.put(paths.blob_data(Digest.parse(digest)), b"")
    async with client_for(driver) as other:  # a process with no size remembered
        assert (await other.head(f"/v2/{NAME}/blobs/{digest}")).status_code == 404
        assert (await other.get(f"/v2/{NAME}/blobs/{digest}")).status_code == 404
        assert await push_blob(other, NAME, data) == digest
        response = await other.get(f"/v2/{NAME}/blobs/{digest}")
    assert response.status_code == 200 and response.content == data


async def test_an_empty_blob_is_still_a_blob(client: httpx.AsyncClient) -> None:
    digest = await push_blob(client, NAME, b"")
    response = await client.get(f"/v2/{NAME}/blobs/{digest}")
    assert response.status_code == 200 and response.content == b""


async def test_an_empty_referrer_entry_is_not_listed(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    subject_digest, subject = await push_image(client, NAME, "1.0")
    referrer, _, _ = await push_referrer(client, NAME, subject, "application/sbom", b"sbom")
    entry = paths.referrer_entry(NAME, Digest.parse(subject_digest), Digest.parse(referrer))
    await driver.put(entry, b"")
    response = await client.get(f"/v2/{NAME}/referrers/{subject_digest}")
    assert response.status_code == 200
    assert response.json()["manifests"] == []


async def test_an_empty_upload_info_is_an_unknown_upload(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    location = (await client.post(f"/v2/{NAME}/blobs/uploads/")).headers["location"]
    await driver.put(paths.upload_info(location.rsplit("/", 1)[-1]), b"")
    assert (await client.get(location)).status_code == 404
    assert (await client.patch(location, content=b"x")).status_code == 404
