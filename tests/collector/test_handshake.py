"""Step 1 (the touch/tomb handshake) and step 3 (manifests), with the API's requests
forced between the collector's steps: every branch of the argument in the design note
(collector/__init__.py), on every driver."""

from __future__ import annotations

import json
import math
import time

import httpx

from collector.run import UNLISTED
from collector.sweep import Cutoffs, Sweeper, Swept, no_hook
from oci.references import Digest
from storage import paths
from storage.driver import StorageDriver
from storage.lease import LEASE_SECONDS, Lease
from storage.s3 import S3Driver
from storage.store import Store
from tests.api.helpers import (
    OCI_MANIFEST,
    digest_of,
    error_code,
    image_manifest,
    push_blob,
    push_image,
    put_manifest,
)
from tests.collector.support import Steps, age, run_gc
from tests.support.drivers import twin

# Their digests share a fan-out folder (sha256:93...), so the sweep takes them in one
# batch and the hooks' steps below are steps of both.
LAYER = b"a layer nobody references yet 664"
CONFIG = b'{"config": "nobody references yet"}'


async def _orphans(client: httpx.AsyncClient, driver: StorageDriver) -> tuple[str, str]:
    """A config and a layer in team/app that no manifest references, older than the cutoff."""
    config = await push_blob(client, "team/app", CONFIG)
    layer = await push_blob(client, "team/app", LAYER)
    assert paths.blob_fan_out(Digest.parse(config)) == paths.blob_fan_out(Digest.parse(layer))
    await age(driver)
    return config, layer


async def _stored(driver: StorageDriver, digest: str) -> bool:
    return await driver.exists(paths.blob_data(Digest.parse(digest)))


async def test_a_blob_vouched_for_before_the_tomb_is_spared(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    """The API's touch completed before the collector's tomb: the collector's re-read
    of the touch sees it (HEAD 200 within the grace: never deleted)."""
    _, layer = await _orphans(client, driver)

    async def head() -> None:
        assert (await client.head(f"/v2/team/app/blobs/{layer}")).status_code == 200

    result, _ = await run_gc(driver, hook=Steps("candidates", head))
    assert await _stored(driver, layer)
    assert result.blobs == 1  # the config, which nobody vouched for
    assert (await client.head(f"/v2/team/app/blobs/{layer}")).status_code == 200


async def test_a_touch_between_the_tomb_and_the_re_read_spares_the_blob(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    """The API wrote its touch after the tomb but before the collector re-read touches
    (its own tomb check then sees the tomb: it answers missing, and the blob stays)."""
    _, layer = await _orphans(client, driver)

    async def touch() -> None:
        await driver.put(paths.blob_touched(Digest.parse(layer)), b"")

    await run_gc(driver, hook=Steps("entombed", touch))
    assert await _stored(driver, layer)


async def test_a_blob_under_a_tomb_is_answered_missing(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    """The API read the tomb: HEAD and GET 404, mount starts an upload instead, a
    manifest naming it is refused, an upload of it fails with a retryable error; after
    the run, pushing it again works and everything pulls."""
    config, layer = await _orphans(client, driver)
    answers: dict[str, object] = {}

    async def meanwhile() -> None:
        answers["head"] = (await client.head(f"/v2/team/app/blobs/{layer}")).status_code
        answers["get"] = (await client.get(f"/v2/team/app/blobs/{layer}")).status_code
        mount = await client.post(f"/v2/team/other/blobs/uploads/?mount={layer}&from=team/app")
        answers["mount"] = mount.status_code
        manifest = image_manifest(CONFIG, [LAYER])
        put = await put_manifest(client, "team/app", "v1", manifest, OCI_MANIFEST)
        answers["manifest"] = (put.status_code, error_code(put))
        upload = await client.post(f"/v2/team/app/blobs/uploads/?digest={layer}", content=LAYER)
        answers["upload"] = (upload.status_code, error_code(upload))

    result, _ = await run_gc(driver, hook=Steps("entombed", meanwhile))
    assert answers == {
        "head": 404,
        "get": 404,
        "mount": 202,
        "manifest": (400, "MANIFEST_BLOB_UNKNOWN"),
        "upload": (503, "UNAVAILABLE"),
    }
    # The requests touched the blobs before reading the tombs, so the collector spared
    # them (conservative); either way, the client's second push succeeds and is whole.
    assert result.blobs == 0
    await push_blob(client, "team/app", LAYER)
    await push_blob(client, "team/app", CONFIG)
    manifest = image_manifest(CONFIG, [LAYER])
    assert (await put_manifest(client, "team/app", "v1", manifest, OCI_MANIFEST)).status_code == 201
    for digest, data in ((layer, LAYER), (config, CONFIG)):
        got = await client.get(f"/v2/team/app/blobs/{digest}")
        assert got.status_code == 200 and got.content == data


async def test_a_manifest_pushed_after_the_mark_keeps_its_blobs(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    """Step 3: a manifest stored after the run marked its repository (so it is not in the
    live set) references old blobs; as docker does, the client HEADs them, then PUTs the
    manifest, after the mark and before the sweep: the HEADs and the PUT vouched for them,
    so the sweep spares them."""
    config, layer = await _orphans(client, driver)
    manifest = image_manifest(CONFIG, [LAYER])

    async def client_pushes(step: str) -> None:
        if step == "marked":
            for digest in (config, layer):
                answers.append((await client.head(f"/v2/team/app/blobs/{digest}")).status_code)
            put = await put_manifest(client, "team/app", "v1", manifest, OCI_MANIFEST)
            answers.append(put.status_code)

    answers: list[int] = []
    result, _ = await run_gc(driver, hook=client_pushes)
    assert answers == [200, 200, 201]
    assert result.blobs == 0
    assert await _stored(driver, config) and await _stored(driver, layer)
    got = await client.get("/v2/team/app/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert got.status_code == 200 and digest_of(got.content) == digest_of(manifest)
    # ... and the next run marks it.
    await age(driver)
    assert (await run_gc(driver))[0].blobs == 0


async def test_a_mount_before_the_tomb_keeps_the_link(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    """Step 4 with step 1: a link the repository does not reference is spared when a mount
    (or HEAD) vouched for its blob within the grace."""
    _, layer = await _orphans(client, driver)

    async def mount() -> None:
        response = await client.post(f"/v2/team/other/blobs/uploads/?mount={layer}&from=team/app")
        assert response.status_code == 201

    result, _ = await run_gc(driver, hook=Steps("candidates", mount))
    assert await _stored(driver, layer)
    assert (await client.head(f"/v2/team/other/blobs/{layer}")).status_code == 200
    assert (await client.head(f"/v2/team/app/blobs/{layer}")).status_code == 200
    assert result.links == 1  # the config's link: nobody vouched for it


async def test_a_link_under_its_blobs_tomb_is_answered_missing(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    """Step 4 with step 1: a blob's one tomb covers the links to it too. team/app holds
    links it does not reference to blobs team/kept's manifest keeps: a HEAD through
    team/app between the tomb and the re-read of the touches answers 404 (it read the
    tomb), and its touch spares the link; the link nobody vouched for goes."""
    config, layer = await _orphans(client, driver)
    for data in (CONFIG, LAYER):
        await push_blob(client, "team/kept", data)
    manifest = image_manifest(CONFIG, [LAYER])
    assert (
        await put_manifest(client, "team/kept", "v1", manifest, OCI_MANIFEST)
    ).status_code == 201
    await age(driver)
    answers: list[int] = []

    async def head() -> None:
        answers.append((await client.head(f"/v2/team/app/blobs/{layer}")).status_code)

    result, _ = await run_gc(driver, hook=Steps("entombed", head))
    assert answers == [404]
    assert (result.blobs, result.links) == (0, 1)
    assert (await client.head(f"/v2/team/app/blobs/{layer}")).status_code == 200
    assert (await client.head(f"/v2/team/app/blobs/{config}")).status_code == 404
    assert (await client.head(f"/v2/team/kept/blobs/{config}")).status_code == 200


async def test_a_push_into_a_repository_being_uncataloged_keeps_it_listed(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    """Step 4: content stored between the collector's removal of the catalog marker and its
    last look puts the repository back in the catalog."""
    digest = await push_blob(client, "team/empty", b"soon unlinked")
    assert (await client.delete(f"/v2/team/empty/blobs/{digest}")).status_code == 202
    await age(driver)

    async def push() -> None:
        await push_blob(client, "team/empty", b"pushed meanwhile")

    result, _ = await run_gc(driver, hook=Steps("uncataloged", push))
    assert result.repositories == 0
    assert "team/empty" in (await client.get("/v2/_catalog")).json()["repositories"]


async def test_a_push_into_a_repository_being_emptied_keeps_its_records(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    """Step 4: an image pushed into an empty repository just before the collector deletes
    the repository's records: it finds the image after removing the catalog marker and
    puts the repository back, with its usage summary rewritten and its tag listed."""
    digest = await push_blob(client, "team/empty", b"soon unlinked")
    assert (await client.delete(f"/v2/team/empty/blobs/{digest}")).status_code == 202
    await age(driver)

    async def push() -> None:
        await push_image(client, "team/empty", "v1", seed="meanwhile")

    result, _ = await run_gc(driver, hook=Steps("emptying", push))
    assert result.repositories == 0
    assert "team/empty" in (await client.get("/v2/_catalog")).json()["repositories"]
    summary = json.loads(await driver.get(paths.summary("team/empty")))
    assert (summary["manifests"], summary["tags"]) == (1, 1)
    assert (await client.get("/v2/team/empty/tags/list")).json()["tags"] == ["v1"]


async def test_two_collectors_at_once_keep_the_handshake(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    """Step 1 with two runs at once (a lease lost to a stall, or an S3 server without
    conditional writes): a run that keeps the blob must not clear the other's tomb, so a
    HEAD after the other read the touches, before it deletes, answers 404, never 200."""
    _, layer = await _orphans(client, driver)
    now = time.time()
    if isinstance(driver, S3Driver):
        now = float(math.floor(now))  # S3 stores whole seconds
    cutoffs = Cutoffs(data=now, touch=now, tomb=now - 120)
    answers: list[int] = []

    async def meanwhile(step: str) -> None:
        if step != "checked" or answers:
            return
        keeper = Sweeper(Store(twin(driver)), _lease(driver, "keeper"), cutoffs, no_hook)
        # its mark saw a manifest referencing the layer
        await keeper.sweep(live={layer: UNLISTED}, account=lambda swept: None)
        answers.append((await client.head(f"/v2/team/app/blobs/{layer}")).status_code)

    deleter = Sweeper(Store(twin(driver)), _lease(driver, "deleter"), cutoffs, meanwhile)
    swept = Swept()
    await deleter.sweep(live={}, account=swept.add)
    assert answers == [404]
    assert layer in {str(item.digest) for item in swept.blobs} and not await _stored(driver, layer)


def _lease(driver: StorageDriver, owner: str) -> Lease:
    return Lease(
        driver, paths.gc_lease(), owner, version="unused", seconds=LEASE_SECONDS
    )  # renewed just now
