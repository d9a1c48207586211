"""`check`: corrupt blobs, dangling tags and links found, repaired, and found no more."""

from __future__ import annotations

import httpx

from oci.references import Digest
from registry.app import create_app
from registry.config import Config
from storage import paths
from storage.check import Checker, render
from storage.driver import StorageDriver
from storage.filesystem import FilesystemDriver
from storage.store import Store
from tests.api.helpers import digest_of, push_image
from tests.support.drivers import twin


async def corrupt(driver: StorageDriver, digest: str, data: bytes) -> None:
    """Change a blob's stored bytes behind the registry's back: on disk, or in the bucket."""
    key = paths.blob_data(Digest.parse(digest))
    if isinstance(driver, FilesystemDriver):
        (driver.root / key).write_bytes(data)
    else:
        await driver.put(key, data)


async def check(driver: StorageDriver, repair: bool = False) -> list[tuple[str, str, bool]]:
    """Run a check as `dockyard check` does, from a store of its own."""
    report = await Checker(Store(twin(driver)), repair=repair).run()
    assert render(report, repair)  # renders whatever it found
    return sorted((p.kind, p.subject, p.repaired) for p in report.problems)


async def test_check_finds_and_repairs_corrupt_blobs_dangling_tags_and_links(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    await push_image(client, "team/app", "good", seed="good")
    broken, _ = await push_image(client, "team/app", "broken", seed="broken")
    layer = digest_of(b"layer of broken")
    assert await check(driver) == []

    await corrupt(driver, layer, b"layer of broken, but changed on disk")
    await driver.delete(paths.revision_link("team/app", Digest.parse(broken)))  # tag dangles
    ghost = Digest.parse(digest_of(b"never stored"))
    await driver.put(paths.layer_link("team/app", ghost), str(ghost).encode())

    found = await check(driver)
    assert found == [
        ("corrupt-blob", layer, False),
        ("dangling-link", str(ghost), False),
        ("dangling-tag", "broken", False),
    ]
    assert await check(driver) == found  # nothing changed without --repair

    repaired = await check(driver, repair=True)
    assert repaired == [
        ("corrupt-blob", layer, True),
        ("dangling-link", layer, True),  # the corrupt blob's link, once it is moved aside
        ("dangling-link", str(ghost), True),
        ("dangling-tag", "broken", True),
    ]
    assert await check(driver) == []

    quarantined = await driver.get(paths.quarantined(Digest.parse(layer)))
    assert quarantined == b"layer of broken, but changed on disk"
    fresh = create_app(Config(), twin(driver))  # a process that never saw the blob
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=fresh), base_url="http://r.test"
    ) as other:
        assert (await other.get(f"/v2/team/app/blobs/{layer}")).status_code == 404
        assert (await other.get("/v2/team/app/tags/list")).json()["tags"] == ["good"]
        assert (await other.get("/v2/team/app/manifests/good")).status_code == 200
    summary = await Store(twin(driver)).usage.summary("team/app")
    assert summary is not None and (summary.tags, summary.manifests) == (1, 1)


async def test_check_reports_a_manifest_whose_blob_is_gone(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    digest, _ = await push_image(client, "team/app", "1")
    layer = Digest.parse(digest_of(b"layer of x"))
    await driver.delete(paths.blob_data(layer))
    assert await check(driver) == [
        ("dangling-link", str(layer), False),
        ("missing-reference", digest, False),
    ]
