"""A repository's blob links: one object each (storage/paths.py `layer_link`), and the
`<hex>/link` ones versions before 2026-12 wrote still counted, served and collected, on
every driver."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import pytest

from oci.references import Digest
from storage import paths
from storage.driver import StorageDriver
from storage.filesystem import FilesystemDriver
from storage.store import Store
from tests.api.helpers import OCI_MANIFEST, image_manifest, push_blob, put_manifest
from tests.collector.support import age, run_gc


async def test_a_link_is_one_object_not_a_folder(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    """A folder per link cost the collector an rmdir, and the disk a block freed (and
    discarded), per unreferenced blob."""
    digest = Digest.parse(await push_blob(client, "team/app", b"a layer"))
    listed = await driver.scan(paths.layers_dir("team/app"))
    assert [info.key for info in listed] == [paths.layer_link("team/app", digest)]
    if isinstance(driver, FilesystemDriver):
        mode = driver.path(paths.layer_link("team/app", digest)).stat().st_mode
        assert stat.S_ISREG(mode)


async def _legacy_link(driver: StorageDriver, name: str, digest: str) -> Digest:
    """A link as older versions wrote it, to a blob whose data is stored."""
    parsed = Digest.parse(digest)
    await driver.put(paths.legacy_layer_link(name, parsed), b"")
    await Store(driver).catalog.add(name)
    return parsed


async def test_a_link_an_older_version_wrote_still_serves_the_blob(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    config, layer = b"legacy config", b"legacy layer"
    for data in (config, layer):
        await _legacy_link(driver, "team/old", await push_blob(client, "team/elsewhere", data))
    layer_url = f"/v2/team/old/blobs/{Digest.of(layer)}"
    assert (await client.head(layer_url)).status_code == 200
    assert (await client.get(layer_url)).content == layer
    # Pushed there again: linked again, in whichever shape the storage can hold (on the
    # filesystem the older link's folder is in the way of the new shape: it is kept).
    await push_blob(client, "team/old", layer)
    # A manifest pushed there finds its blobs given to the repository.
    manifest = image_manifest(config, [layer])
    response = await put_manifest(client, "team/old", "v1", manifest, OCI_MANIFEST)
    assert response.status_code == 201, response.text
    assert Digest.of(layer) in await Store(driver).blobs.links("team/old")


async def test_deleting_a_blob_removes_a_link_an_older_version_wrote(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    digest = await _legacy_link(driver, "team/old", await push_blob(client, "team/a", b"x"))
    assert (await client.delete(f"/v2/team/old/blobs/{digest}")).status_code == 202
    assert (await client.head(f"/v2/team/old/blobs/{digest}")).status_code == 404
    assert await driver.scan(paths.layers_dir("team/old")) == []


async def test_the_collector_removes_a_link_an_older_version_wrote(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    """Unreferenced in its repository, in either shape (both at once too), it goes with
    the repository it leaves empty; the blob stays for the repository that uses it."""
    await push_blob(client, "team/uses", b"kept")
    kept = Digest.of(b"kept")
    manifest = image_manifest(b"kept", [b"kept"])
    response = await put_manifest(client, "team/uses", "v1", manifest, OCI_MANIFEST)
    assert response.status_code == 201, response.text
    await _legacy_link(driver, "team/old", str(kept))
    await _legacy_link(driver, "team/both", str(kept))
    await Store(driver).blobs.link("team/both", kept)  # beside it, where the storage can
    shapes = len(await driver.scan(paths.layers_dir("team/both")))
    assert shapes == (1 if isinstance(driver, FilesystemDriver) else 2)
    await age(driver)
    result, deletions = await run_gc(driver)
    links = sorted(d.what for d in deletions if d.kind == "link")
    assert links == [f"team/both@{kept}"] * shapes + [f"team/old@{kept}"]
    assert result.repositories == 2 and result.blobs == 0
    for name in ("team/old", "team/both"):
        assert await driver.scan(paths.repository(name)) == []
    assert (await client.get("/v2/_catalog")).json()["repositories"] == ["team/uses"]
    assert (await client.get(f"/v2/team/uses/blobs/{kept}")).content == b"kept"


async def test_removing_many_links_of_one_repository_tries_its_folder_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The links sit side by side in `_layers/<alg>`: one rmdir for it per batch, not
    one per link (it nearly always holds others)."""
    driver = FilesystemDriver(tmp_path)
    links = [paths.layer_link("r", Digest.of(bytes([n]))) for n in range(50)]
    kept = paths.layer_link("r", Digest.of(b"kept"))
    for key in (*links, kept):
        await driver.put(key, b"")
    removed: list[str] = []
    rmdir = os.rmdir
    monkeypatch.setattr(os, "rmdir", lambda path: (removed.append(path), rmdir(path)))
    await driver.delete_then([([key], []) for key in links])
    assert removed == [str(tmp_path / "repositories/r/_layers/sha256")]
    assert [info.key for info in await driver.scan("repositories/r/_layers")] == [kept]
