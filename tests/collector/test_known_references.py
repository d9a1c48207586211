"""The local cache of what manifests reference (collector/known_references.py): a run that
finds a manifest there reads nothing of it, and still keeps and deletes what a run that
reads everything would; a cache that is off, full, damaged or out of reach is no error."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from collector.known_references import FILE_NAME, Known, KnownReferences
from collector.run import GcOptions, GcResult, collect
from oci.references import Digest
from registry.config import GcConfig, RetentionRule
from storage import paths
from storage.driver import StorageDriver
from storage.store import Store
from tests.api.helpers import (
    OCI_INDEX,
    OCI_MANIFEST,
    descriptor,
    digest_of,
    push_blob,
    push_image,
    push_referrer,
    put_manifest,
)
from tests.collector.support import NO_GRACE, age
from tests.support.drivers import twin


def _cache(folder: Path, bound: int = 1 << 20) -> GcConfig:
    return GcConfig(cache_dir=folder, cache_bytes=bound)


async def _collect(
    driver: StorageDriver, cache: GcConfig, options: GcOptions = NO_GRACE
) -> tuple[GcResult, list[str]]:
    """One run by another process with `cache`; the blobs it read (manifests' bytes)."""
    read: list[str] = []
    other = twin(driver)
    get = other.get

    async def recorded(key: str) -> bytes:
        read.append(key)
        return await get(key)

    other.get = recorded  # type: ignore[method-assign]
    store = Store(other)
    try:
        with KnownReferences.opened(cache) as known:
            result = await collect(store, options, known=known)
    finally:
        await store.close()
    return result, [key for key in read if key.startswith("blobs/")]


def _data(*digests: str) -> list[str]:
    return [paths.blob_data(Digest.parse(digest)) for digest in digests]


async def _has(driver: StorageDriver, data: bytes) -> bool:
    return bool(await driver.scan(paths.blob_dir(Digest.parse(digest_of(data)))))


async def test_a_run_reads_only_the_manifests_no_run_before_it_read(
    client: httpx.AsyncClient, driver: StorageDriver, tmp_path: Path
) -> None:
    """And, reading none, keeps every blob they reference and deletes what they do not."""
    cache = _cache(tmp_path)
    first, first_bytes = await push_image(client, "team/app", "v1", seed="one")
    await age(driver)
    assert (await _collect(driver, cache))[1] == _data(first)

    second, second_bytes = await push_image(client, "team/app", "v2", seed="two")
    await push_blob(client, "team/app", b"referenced by nothing")
    await age(driver)
    result, read = await _collect(driver, cache)
    assert read == _data(second)
    assert result.blobs == 1
    assert (await _collect(driver, cache))[1] == []
    for seed, manifest in [("one", first_bytes), ("two", second_bytes)]:
        for data in (manifest, json.dumps({"seed": seed}).encode(), f"layer of {seed}".encode()):
            assert await _has(driver, data), data
    assert not await _has(driver, b"referenced by nothing")


async def test_with_retention_a_run_reads_each_manifest_once_and_the_next_none(
    client: httpx.AsyncClient, driver: StorageDriver, tmp_path: Path
) -> None:
    """Retention's facts take what manifests reference from the mark's reading, through
    the cache: they used to read every manifest of the repositories judged, each run."""
    rule = RetentionRule(repositories=["team/*"], keep_last=10, untagged_after=3600)
    options = replace(NO_GRACE, retention=(rule,))
    cache = _cache(tmp_path)
    child, child_bytes = await push_image(client, "team/app", "child", seed="child")
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [descriptor(OCI_MANIFEST, child_bytes)],
        }
    ).encode()
    assert (await put_manifest(client, "team/app", "multi", index, OCI_INDEX)).status_code == 201
    await age(driver)
    result, read = await _collect(driver, cache, options)
    assert sorted(read) == sorted(_data(child, digest_of(index)))
    assert (result.tags, result.manifests) == (0, 0)  # all kept: the rule's facts were read
    assert (await _collect(driver, cache, options))[1] == []


async def test_a_referrer_whose_subject_is_gone_goes_in_a_run_that_reads_neither(
    client: httpx.AsyncClient, driver: StorageDriver, tmp_path: Path
) -> None:
    """The subject comes from the cache as it came from the bytes."""
    cache = _cache(tmp_path)
    subject, subject_bytes = await push_image(client, "team/app", "v1", seed="subject")
    referrer, _, _ = await push_referrer(
        client, "team/app", subject_bytes, "application/vnd.example.sbom", b"an sbom"
    )
    await age(driver)
    result, read = await _collect(driver, cache)
    assert (result.manifests, sorted(read)) == (0, sorted(_data(subject, referrer)))
    assert (await client.delete(f"/v2/team/app/manifests/{subject}")).status_code == 202
    await age(driver)
    result, read = await _collect(driver, cache)
    assert (result.manifests, read) == (1, [])
    assert (await client.get(f"/v2/team/app/manifests/{referrer}")).status_code == 404
    assert not await _has(driver, b"an sbom")


def test_a_run_that_fills_the_file_adds_no_more_and_leaves_it_to_start_afresh(
    tmp_path: Path,
) -> None:
    known = Known(None, ["sha256:" + "b" * 64])
    bound = 64 * 1024
    with KnownReferences.opened(_cache(tmp_path, bound)) as cache:
        assert cache is not None
        for n in range(100):
            cache.add(f"sha256:{n:064x}", known)
    with KnownReferences.opened(_cache(tmp_path, bound)) as cache:
        assert cache is not None
        assert cache.get(f"sha256:{0:064x}") == known
        for n in range(100, 3000):
            cache.add(f"sha256:{n:064x}", known)
        assert (tmp_path / FILE_NAME).stat().st_size <= bound
        assert cache.get(f"sha256:{2999:064x}") is None
    assert not (tmp_path / FILE_NAME).exists()
    with KnownReferences.opened(_cache(tmp_path, bound)) as cache:
        assert cache is not None
        assert cache.get(f"sha256:{0:064x}") is None


def test_a_damaged_file_starts_afresh(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).write_bytes(b"not a database" * 100)
    known = Known("sha256:" + "c" * 64, [])
    with KnownReferences.opened(_cache(tmp_path)) as cache:
        assert cache is not None
        cache.add("sha256:" + "d" * 64, known)
    with KnownReferences.opened(_cache(tmp_path)) as cache:
        assert cache is not None
        assert cache.get("sha256:" + "d" * 64) == known


def test_a_file_found_damaged_in_a_run_is_read_no_more_and_removed_after_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    known = Known(None, ["sha256:" + "e" * 64])
    with KnownReferences.opened(_cache(tmp_path)) as cache:
        assert cache is not None
        for n in range(2000):
            cache.add(f"sha256:{n:064x}", known)
    path = tmp_path / FILE_NAME
    with path.open("r+b") as file:
        file.seek(4096)  # past the schema's page: the table's
        file.write(b"\xff" * (path.stat().st_size - 4096))
    with caplog.at_level(logging.WARNING, "dockyard.gc"):
        with KnownReferences.opened(_cache(tmp_path)) as cache:
            assert cache is not None
            assert [cache.get(f"sha256:{n:064x}") for n in range(3)] == [None] * 3
        assert caplog.text.count("failed: database disk image is malformed") == 1
    assert not path.exists()
    with KnownReferences.opened(_cache(tmp_path)) as cache:
        assert cache is not None
        cache.add("sha256:" + "f" * 64, known)
    with KnownReferences.opened(_cache(tmp_path)) as cache:
        assert cache is not None and cache.get("sha256:" + "f" * 64) == known


def test_off_or_out_of_reach_is_no_cache(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with KnownReferences.opened(_cache(tmp_path, 0)) as cache:
        assert cache is None
    assert not (tmp_path / FILE_NAME).exists()
    (tmp_path / "a-file").write_text("")
    with (
        caplog.at_level(logging.WARNING, "dockyard.gc"),
        KnownReferences.opened(_cache(tmp_path / "a-file" / "below")) as cache,
    ):
        assert cache is None
    assert "no cache of manifests' references" in caplog.text


def test_the_default_folder_is_the_users_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with KnownReferences.opened(GcConfig()) as cache:
        assert cache is not None
    assert (tmp_path / "xdg" / "dockyard" / FILE_NAME).exists()
