"""What one run removes and keeps (design note: the mark, step 2 cutoffs, step 4 links and
repositories), on every driver."""

from __future__ import annotations

import time

import httpx
import pytest

import storage.memory
from collector.run import GcOptions
from oci.references import Digest
from storage import paths
from storage.driver import StorageDriver
from storage.store import Store
from storage.usage import Facts, Usage
from tests.api.helpers import (
    OCI_LAYER,
    OCI_MANIFEST,
    descriptor,
    digest_of,
    push_blob,
    push_image,
    put_manifest,
)
from tests.collector.support import NO_GRACE, Steps, age, run_gc


async def _pulls(client: httpx.AsyncClient, name: str, reference: str) -> None:
    """The manifest and every blob it names come back, each hashing to its digest."""
    response = await client.get(
        f"/v2/{name}/manifests/{reference}", headers={"Accept": OCI_MANIFEST}
    )
    assert response.status_code == 200, response.text
    document = response.json()
    for item in [document["config"], *document["layers"]]:
        blob = await client.get(f"/v2/{name}/blobs/{item['digest']}")
        assert blob.status_code == 200, blob.text
        assert digest_of(blob.content) == item["digest"]


async def _stored(driver: StorageDriver, digest: str) -> bool:
    return await driver.exists(paths.blob_data(Digest.parse(digest)))


async def test_unreferenced_blob_goes_and_images_stay(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    await push_image(client, "team/app", "v1", seed="kept")
    orphan = await push_blob(client, "team/app", b"nobody references me")
    await age(driver)
    result, deletions = await run_gc(driver)
    assert (result.blobs, result.bytes_freed) == (1, len(b"nobody references me"))
    assert [d.what for d in deletions if d.kind == "blob"] == [orphan]
    assert not await _stored(driver, orphan)
    assert (await client.head(f"/v2/team/app/blobs/{orphan}")).status_code == 404
    await _pulls(client, "team/app", "v1")


async def test_dry_run_reports_and_deletes_nothing(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    orphan = await push_blob(client, "team/app", b"would go")
    await age(driver)
    result, deletions = await run_gc(driver, dry_run=True)
    assert result.dry_run and result.blobs == 1
    assert {d.what for d in deletions} >= {orphan}
    assert await _stored(driver, orphan)
    assert (await client.head(f"/v2/team/app/blobs/{orphan}")).status_code == 200


async def test_nothing_younger_than_the_grace_goes(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    orphan = await push_blob(client, "team/app", b"young")
    await age(driver)
    result, _ = await run_gc(driver, GcOptions(grace=3600.0, upload_max_age=86400.0))
    assert result.blobs == 0 and result.links == 0
    assert await _stored(driver, orphan)


async def test_a_deleted_image_goes_whole_and_pushing_it_again_uploads(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    digest, _ = await push_image(client, "team/gone", "v1", seed="gone")
    assert (await client.delete(f"/v2/team/gone/manifests/{digest}")).status_code == 202
    await age(driver)
    result, _ = await run_gc(driver)
    assert result.blobs == 3  # config, layer, the manifest's own bytes
    assert result.repositories == 1
    assert "team/gone" not in (await client.get("/v2/_catalog")).json()["repositories"]
    layer = b"layer of gone"
    assert (await client.head(f"/v2/team/gone/blobs/{digest_of(layer)}")).status_code == 404
    await push_image(client, "team/gone", "v1", seed="gone")
    await _pulls(client, "team/gone", "v1")
    assert "team/gone" in (await client.get("/v2/_catalog")).json()["repositories"]


async def test_an_emptied_repository_leaves_no_records_behind(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    """Step 4: its usage summary, tag-change key and pull times go with its content, and a
    pull time recorded after its manifest's DELETE (a write in flight) does not keep it."""
    digest, _ = await push_image(client, "team/gone", "v1", seed="gone")
    assert (await client.delete(f"/v2/team/gone/manifests/{digest}")).status_code == 202
    await driver.put(paths.pulled_marker("team/gone", Digest.parse(digest)), b"")
    assert await driver.scan(paths.repository("team/gone"))
    await age(driver)
    result, _ = await run_gc(driver)
    assert result.repositories == 1
    assert await driver.scan(paths.repository("team/gone")) == []


async def test_a_link_the_repository_no_longer_references_goes(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    """Step 4: a repository's link to a blob none of its manifests references goes, the
    blob stays for the repository whose image uses it, and the emptied one is uncataloged."""
    await push_image(client, "team/uses", "v1", seed="shared")
    shared = digest_of(b"layer of shared")
    mounted = await client.post(f"/v2/team/mounts/blobs/uploads/?mount={shared}&from=team/uses")
    assert mounted.status_code == 201
    await age(driver)
    result, deletions = await run_gc(driver)
    assert (result.links, result.blobs, result.repositories) == (1, 0, 1)
    assert [d.what for d in deletions if d.kind == "link"] == [f"team/mounts@{shared}"]
    assert (await client.head(f"/v2/team/mounts/blobs/{shared}")).status_code == 404
    assert (await client.head(f"/v2/team/uses/blobs/{shared}")).status_code == 200
    assert (await client.get("/v2/_catalog")).json()["repositories"] == ["team/uses"]


async def test_referrers_of_a_deleted_subject_go(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    subject, subject_bytes = await push_image(client, "team/signed", "v1", seed="subject")
    config = await push_blob(client, "team/signed", b"{}")
    signature = b"signature bytes"
    await push_blob(client, "team/signed", signature)
    referrer = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
        "layers": [descriptor(OCI_LAYER, signature)],
        "subject": descriptor(OCI_MANIFEST, subject_bytes),
    }
    body = __import__("json").dumps(referrer).encode()
    assert (await put_manifest(client, "team/signed", "sig", body, OCI_MANIFEST)).status_code == 201
    await age(driver)
    kept, _ = await run_gc(driver)
    assert kept.manifests == 0 and kept.blobs == 0  # the subject is there: all stays
    assert (await client.delete(f"/v2/team/signed/manifests/{subject}")).status_code == 202
    await age(driver)
    result, deletions = await run_gc(driver)
    assert result.manifests == 1
    assert [d.what for d in deletions if d.kind == "manifest"] == [f"team/signed@{digest_of(body)}"]
    assert not await _stored(driver, digest_of(signature))
    assert (await client.get("/v2/team/signed/manifests/sig")).status_code == 404


async def test_idle_upload_sessions_go(client: httpx.AsyncClient, driver: StorageDriver) -> None:
    started = await client.post("/v2/team/app/blobs/uploads/")
    assert started.status_code == 202
    await client.patch(started.headers["Location"], content=b"half an upload")
    await age(driver)
    result, deletions = await run_gc(driver, GcOptions(grace=0.0, upload_max_age=0.01))
    assert result.uploads == 1 and [d.kind for d in deletions] == ["upload"]
    assert (await client.get(started.headers["Location"])).status_code == 404
    assert await driver.list(paths.uploads_dir()) == []


class _ClockBehind:
    """A storage whose clock runs an hour behind the collecting process's."""

    @staticmethod
    def time() -> float:
        return time.time() - 3600


@pytest.mark.parametrize("driver", ["memory"], indirect=True)
async def test_idle_uploads_are_judged_by_the_storages_clock(
    client: httpx.AsyncClient, driver: StorageDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage.memory, "time", _ClockBehind)
    started = await client.post("/v2/team/app/blobs/uploads/")
    await client.patch(started.headers["Location"], content=b"just written")
    result, _ = await run_gc(driver, GcOptions(grace=0.0, upload_max_age=1800.0))
    assert result.uploads == 0
    assert (await client.get(started.headers["Location"])).status_code == 204


async def test_runs_are_idempotent(client: httpx.AsyncClient, driver: StorageDriver) -> None:
    await push_image(client, "team/app", "v1", seed="kept")
    await push_blob(client, "team/app", b"orphan")
    await age(driver)
    await run_gc(driver)
    again, deletions = await run_gc(driver)
    assert deletions == [] and again.blobs == 0
    await _pulls(client, "team/app", "v1")


async def test_a_blob_deleted_by_another_process_is_not_answered_from_a_cache(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    orphan = await push_blob(client, "team/app", b"cached size")
    assert (await client.head(f"/v2/team/app/blobs/{orphan}")).status_code == 200
    await client.delete(f"/v2/team/app/blobs/{orphan}")  # unlinked: nothing references it
    await age(driver)
    assert (await run_gc(driver))[0].blobs == 1
    mounted = await client.post(f"/v2/team/other/blobs/uploads/?mount={orphan}")
    assert mounted.status_code == 202  # not "already exists": an upload starts instead
    _ = NO_GRACE


async def test_the_usage_summary_of_a_swept_repository_is_refreshed(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    await push_image(client, "team/uses", "v1", seed="shared")
    extra = await push_blob(client, "team/uses", b"an unreferenced extra blob")
    usage = Store(driver).usage
    assert (await usage.refresh("team/uses")).blobs == 4  # config, layer, manifest, extra
    await age(driver)
    result, _ = await run_gc(driver)
    assert result.links == 1 and not await _stored(driver, extra)
    summary = await usage.summary("team/uses")
    assert summary is not None and summary.blobs == 3


async def test_a_push_after_the_mark_is_in_the_usage_summary_the_run_writes(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    """The summary the run writes after its sweep counts a blob pushed after the mark:
    it comes from the repository's links as they are then, not as the mark listed them."""
    await push_image(client, "team/uses", "v1", seed="shared")
    await push_blob(client, "team/uses", b"an unreferenced extra blob")
    await age(driver)
    pushed: list[str] = []

    async def push() -> None:
        pushed.append(await push_blob(client, "team/uses", b"pushed after the mark"))

    result, _ = await run_gc(driver, hook=Steps("marked", push))
    assert result.links == 1 and pushed
    summary = await Store(driver).usage.summary("team/uses")
    assert summary is not None and summary.blobs == 4  # config, layer, manifest, new blob


async def test_the_mark_reads_each_manifest_once_and_no_revision_link(
    client: httpx.AsyncClient, driver: StorageDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per manifest the mark reads its bytes and nothing else: the subject a referrer's
    orphan check needs is in them (on S3, one GetObject a manifest, not two)."""
    digests = [(await push_image(client, "team/app", tag, seed=tag))[0] for tag in ("v1", "v2")]
    read: list[str] = []
    get = type(driver).get

    async def recorded(self: StorageDriver, key: str) -> bytes:
        read.append(key)
        return await get(self, key)

    monkeypatch.setattr(type(driver), "get", recorded)
    await run_gc(driver, NO_GRACE)
    assert [key for key in read if "/_manifests/revisions/" in key] == []
    for digest in digests:
        assert read.count(paths.blob_data(Digest.parse(digest))) == 1


async def test_the_usage_summary_the_run_writes_is_listed_once_after_the_write(
    client: httpx.AsyncClient, driver: StorageDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run writes a changed repository's summary from what its mark left and lists
    the repository's links, manifests and tags once, after the write, to check it."""
    await push_image(client, "team/uses", "v1", seed="shared")
    await push_blob(client, "team/uses", b"an unreferenced extra blob")
    await age(driver)
    listed: list[str] = []
    facts = Usage.facts

    async def recorded(self: Usage, name: str) -> Facts:
        listed.append(name)
        return await facts(self, name)

    monkeypatch.setattr(Usage, "facts", recorded)
    result, _ = await run_gc(driver)
    assert result.links == 1 and listed == ["team/uses"]
    summary = await Store(driver).usage.summary("team/uses")
    assert summary is not None and summary.blobs == 3  # config, layer, manifest
