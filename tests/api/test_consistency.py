"""Manifests, tags, referrers and deletes stay consistent under races and after crashes.

Crash states are written straight into storage, as a kill -9 between two writes
would leave them; races run two apps (stand-ins for two processes) on one storage.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import Awaitable

import httpx
import pytest
from starlette.applications import Starlette

from oci.references import Digest
from storage import paths
from storage.driver import StorageDriver
from storage.filesystem import FilesystemDriver
from storage.s3 import S3Driver
from tests.api.helpers import (
    OCI_INDEX,
    OCI_MANIFEST,
    descriptor,
    digest_of,
    error_code,
    image_manifest,
    push_blob,
    push_image,
    push_referrer,
    put_manifest,
)
from tests.api.test_concurrency import client_for

NAME = "team/app"
RACES = 200


async def staggered(request: Awaitable[httpx.Response], rng: random.Random) -> httpx.Response:
    """`request`, started after a random number of turns of the event loop, so that
    the races cover many interleavings (also over the memory driver)."""
    for _ in range(rng.randrange(40)):
        await asyncio.sleep(0)
    return await request


async def state_of(client: httpx.AsyncClient, tag: str, digest: str) -> tuple[bool, int, int]:
    """(tag listed, GET by tag, GET by digest): consistent when all agree."""
    listed = tag in (await client.get(f"/v2/{NAME}/tags/list")).json()["tags"]
    by_tag = (await client.get(f"/v2/{NAME}/manifests/{tag}")).status_code
    by_digest = (await client.get(f"/v2/{NAME}/manifests/{digest}")).status_code
    return listed, by_tag, by_digest


def consistent(state: tuple[bool, int, int]) -> bool:
    return state in ((True, 200, 200), (False, 404, 404))


async def leave_tag_write_leftovers(driver: StorageDriver, tag: str) -> None:
    """What a kill (or a full disk) during the write or delete of `tag` leaves."""
    key = paths.tag_link(NAME, tag)
    if isinstance(driver, FilesystemDriver):
        temp = driver.path(key).parent / f".tmp-{uuid.uuid4().hex}"
        temp.parent.mkdir(parents=True, exist_ok=True)
        temp.write_bytes(b"sha256:")  # killed before the rename
    else:
        assert isinstance(driver, S3Driver)
        await driver.put(key, b"x")
        await driver.delete_objects([key])  # killed before removing its folders


# The memory driver has no temporary files and no folders: nothing is left behind.
@pytest.mark.parametrize("driver", ["filesystem", "s3"], indirect=True)
async def test_tag_write_leftovers_are_not_a_tag(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    await push_image(client, NAME, "keep")
    await leave_tag_write_leftovers(driver, "ghost")
    assert (await client.get(f"/v2/{NAME}/tags/list")).json()["tags"] == ["keep"]
    assert (await client.get(f"/v2/{NAME}/manifests/ghost")).status_code == 404
    # The name works as a tag again: pushed, listed, deleted.
    _, raw = await push_image(client, NAME, "ghost")
    assert (await client.get(f"/v2/{NAME}/manifests/ghost")).content == raw
    assert (await client.delete(f"/v2/{NAME}/manifests/ghost")).status_code == 202
    assert (await client.get(f"/v2/{NAME}/tags/list")).json()["tags"] == ["keep"]


async def test_put_and_delete_races_end_consistent(driver: StorageDriver) -> None:
    """PUT with a tag and DELETE by digest of one manifest, from two processes at once
    (two of each every fourth round): afterwards tag, tag GET and digest GET agree."""
    async with client_for(driver) as first, client_for(driver) as second:
        digest, raw = await push_image(first, NAME, "v1")
        inconsistent = []
        rng = random.Random(0)
        for round_ in range(RACES):
            await put_manifest(first, NAME, "v1", raw, OCI_MANIFEST)
            requests = [
                put_manifest(first, NAME, "v1", raw, OCI_MANIFEST),
                second.delete(f"/v2/{NAME}/manifests/{digest}"),
            ]
            if round_ % 4 == 3:
                requests += [
                    first.delete(f"/v2/{NAME}/manifests/{digest}"),
                    put_manifest(second, NAME, "v1", raw, OCI_MANIFEST),
                ]
            responses = await asyncio.gather(*(staggered(r, rng) for r in requests))
            for response in responses:
                assert response.status_code in (201, 202, 404), response.text
            for client in (first, second):
                state = await state_of(client, "v1", digest)
                if not consistent(state):
                    inconsistent.append((round_, state))
        assert inconsistent == []


async def test_tag_left_on_a_deleted_manifest_is_absent_and_removable(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    """A kill after a DELETE removed the revision, before its last pass over the tags.
    The restarted process reads storage (a process that cached the revision may serve it
    for `storage.deletions.MAX_AGE`: the killed DELETE never published its deletion)."""
    digest, _ = await push_image(client, NAME, "v1")
    await put_manifest(
        client, NAME, "v2", (await client.get(f"/v2/{NAME}/manifests/v1")).content, OCI_MANIFEST
    )
    await driver.delete(paths.revision_link(NAME, Digest.parse(digest)))
    async with client_for(driver) as restarted:
        await tag_left_on_a_deleted_manifest_is_absent_and_removable(restarted, digest)


async def tag_left_on_a_deleted_manifest_is_absent_and_removable(
    client: httpx.AsyncClient, digest: str
) -> None:
    for reference in ("v1", "v2", digest):
        response = await client.get(f"/v2/{NAME}/manifests/{reference}")
        assert response.status_code == 404, reference
        assert (await client.head(f"/v2/{NAME}/manifests/{reference}")).status_code == 404
    assert (await client.delete(f"/v2/{NAME}/manifests/v1")).status_code == 202
    # Deleting the digest again finishes the interrupted delete.
    assert (await client.delete(f"/v2/{NAME}/manifests/{digest}")).status_code == 202
    assert (await client.get(f"/v2/{NAME}/tags/list")).json()["tags"] == []
    assert (await client.delete(f"/v2/{NAME}/manifests/{digest}")).status_code == 404


async def test_referrer_entry_left_on_a_deleted_manifest_is_not_listed(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    subject_digest, subject = await push_image(client, NAME, "v1")
    referrer, _, _ = await push_referrer(client, NAME, subject, "application/x", b"p")
    kept, _, _ = await push_referrer(client, NAME, subject, "application/y", b"q")
    await driver.delete(paths.revision_link(NAME, Digest.parse(referrer)))
    listed = (await client.get(f"/v2/{NAME}/referrers/{subject_digest}")).json()["manifests"]
    assert [entry["digest"] for entry in listed] == [kept]


async def test_untagged_manifest_left_by_a_partial_delete_is_served_and_deletable(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    """A kill after a DELETE removed the tags, before the revision."""
    digest, raw = await push_image(client, NAME, "v1")
    await driver.delete(paths.tag_link(NAME, "v1"))
    assert (await client.get(f"/v2/{NAME}/manifests/{digest}")).content == raw
    assert (await client.get(f"/v2/{NAME}/manifests/v1")).status_code == 404
    assert (await client.delete(f"/v2/{NAME}/manifests/{digest}")).status_code == 202
    assert (await client.get(f"/v2/{NAME}/manifests/{digest}")).status_code == 404


async def test_blob_delete_refused_while_a_manifest_references_it(
    client: httpx.AsyncClient,
) -> None:
    digest, _ = await push_image(client, NAME, "v1", seed="s")
    layer = digest_of(b"layer of s")
    config = digest_of(json.dumps({"seed": "s"}).encode())
    await client.delete(f"/v2/{NAME}/manifests/v1")  # untagged, still referencing
    for blob in (layer, config):
        response = await client.delete(f"/v2/{NAME}/blobs/{blob}")
        assert response.status_code == 405
        assert error_code(response) == "UNSUPPORTED"
        assert digest in response.json()["errors"][0]["message"]
        assert (await client.get(f"/v2/{NAME}/blobs/{blob}")).status_code == 200
    assert (await client.get(f"/v2/{NAME}/manifests/{digest}")).status_code == 200
    assert (await client.delete(f"/v2/{NAME}/manifests/{digest}")).status_code == 202
    for blob in (layer, config):
        assert (await client.delete(f"/v2/{NAME}/blobs/{blob}")).status_code == 202
        assert (await client.get(f"/v2/{NAME}/blobs/{blob}")).status_code == 404


async def test_blob_referenced_in_another_repository_may_be_deleted(
    client: httpx.AsyncClient,
) -> None:
    await push_image(client, "team/other", "v1", seed="s")
    layer = await push_blob(client, NAME, b"layer of s")
    assert (await client.delete(f"/v2/{NAME}/blobs/{layer}")).status_code == 202


async def push_index(client: httpx.AsyncClient, children: list[bytes], tag: str) -> str:
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [descriptor(OCI_MANIFEST, child) for child in children],
    }
    raw = json.dumps(document).encode()
    response = await put_manifest(client, NAME, tag, raw, OCI_INDEX)
    assert response.status_code == 201, response.text
    return digest_of(raw)


async def test_manifest_delete_refused_while_an_index_references_it(
    client: httpx.AsyncClient,
) -> None:
    child, raw = await push_image(client, NAME, "child")
    index = await push_index(client, [raw], "multi")
    response = await client.delete(f"/v2/{NAME}/manifests/{child}")
    assert response.status_code == 405
    assert error_code(response) == "UNSUPPORTED"
    assert index in response.json()["errors"][0]["message"]
    for reference in ("child", child, "multi"):
        assert (await client.get(f"/v2/{NAME}/manifests/{reference}")).status_code == 200
    assert (await client.delete(f"/v2/{NAME}/manifests/{index}")).status_code == 202
    assert (await client.delete(f"/v2/{NAME}/manifests/{child}")).status_code == 202


async def test_subject_may_be_deleted_while_referrers_remain(client: httpx.AsyncClient) -> None:
    subject_digest, subject = await push_image(client, NAME, "v1")
    await push_referrer(client, NAME, subject, "application/x", b"p")
    assert (await client.delete(f"/v2/{NAME}/manifests/{subject_digest}")).status_code == 202


async def test_blob_delete_racing_a_push_that_references_it(driver: StorageDriver) -> None:
    """Whichever wins, a stored manifest never lacks a blob it references."""
    async with client_for(driver) as first, client_for(driver) as second:
        config = await push_blob(first, NAME, b"{}")
        rng = random.Random(0)
        for round_ in range(RACES // 4):
            layer_bytes = f"layer {round_}".encode()
            layer = await push_blob(first, NAME, layer_bytes)
            raw = image_manifest(b"{}", [layer_bytes])
            put, delete = await asyncio.gather(
                staggered(put_manifest(first, NAME, f"r{round_}", raw, OCI_MANIFEST), rng),
                staggered(second.delete(f"/v2/{NAME}/blobs/{layer}"), rng),
            )
            assert put.status_code in (201, 400) and delete.status_code in (202, 405)
            if (await second.get(f"/v2/{NAME}/manifests/r{round_}")).status_code == 200:
                for blob in (config, layer):
                    response = await first.head(f"/v2/{NAME}/blobs/{blob}")
                    assert response.status_code == 200, (round_, put.text, delete.text)


async def test_manifest_delete_racing_a_push_of_an_index_that_lists_it(
    driver: StorageDriver,
) -> None:
    """Whichever wins, a stored index never lacks a manifest it lists."""
    async with client_for(driver) as first, client_for(driver) as second:
        rng = random.Random(0)
        for round_ in range(RACES // 4):
            child, raw = await push_image(first, NAME, f"c{round_}", seed=str(round_))
            document = {"schemaVersion": 2, "manifests": [descriptor(OCI_MANIFEST, raw)]}
            index = json.dumps({"mediaType": OCI_INDEX, **document}).encode()
            put, delete = await asyncio.gather(
                staggered(put_manifest(first, NAME, f"i{round_}", index, OCI_INDEX), rng),
                staggered(second.delete(f"/v2/{NAME}/manifests/{child}"), rng),
            )
            assert put.status_code in (201, 400) and delete.status_code in (202, 405)
            if (await second.get(f"/v2/{NAME}/manifests/i{round_}")).status_code == 200:
                response = await first.get(f"/v2/{NAME}/manifests/{child}")
                assert response.status_code == 200, (round_, put.text, delete.text)
                assert response.content == raw


async def test_push_links_no_blob_it_did_not_check(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    """The re-check after writing restores only what the push was checked against: a
    sparse image's missing layer that another repository holds stays out of this one."""
    app.state.config.validation.manifests.allow_missing_layers = "all"
    elsewhere = await push_blob(client, "team/other", b"elsewhere")
    await push_blob(client, NAME, b"{}")
    raw = image_manifest(b"{}", [b"elsewhere"])
    assert (await put_manifest(client, NAME, "v1", raw, OCI_MANIFEST)).status_code == 201
    assert (await client.get(f"/v2/{NAME}/blobs/{elsewhere}")).status_code == 404
