"""Step 5 (one collector at a time) and step 6 (crashes), and the driver primitive the
lease is built on (create / replace), on every driver."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import httpx
import pytest

from oci.references import Digest
from storage import lease, paths, stale_tombs
from storage.catalog import Catalog
from storage.driver import StorageDriver
from storage.lease import LeaseLostError
from storage.s3 import S3Driver
from tests.api.helpers import push_blob, push_image
from tests.collector.support import NO_GRACE, Steps, age, run_gc
from tests.support.drivers import twin


async def test_create_and_replace_are_conditional_across_processes(
    driver: StorageDriver,
) -> None:
    other = twin(driver)
    try:
        first = await driver.create("_gc/test", b"one")
        assert first is not None
        assert await other.create("_gc/test", b"two") is None
        current = await other.read_versioned("_gc/test")
        assert (current.data, current.version) == (b"one", first)
        second = await other.replace("_gc/test", b"two", first)
        assert second is not None and second != first
        assert await driver.replace("_gc/test", b"three", first) is None  # stale version
        assert (await driver.read_versioned("_gc/test")).data == b"two"
        assert await driver.replace("_gc/missing", b"x", second) is None
    finally:
        if other is not driver:
            await other.close()


@pytest.mark.parametrize("driver", ["s3"], indirect=True)
async def test_s3_without_conditional_writes_falls_back_to_reading_back(
    driver: StorageDriver,
) -> None:
    """Where the server ignores If-None-Match / If-Match, create and replace still refuse
    an existing key or a changed version (by reading first, then reading back)."""
    assert isinstance(driver, S3Driver)
    driver._conditional = False  # as the probe finds on such a server
    first = await driver.create("_gc/fallback", b"one")
    assert first is not None and await driver.create("_gc/fallback", b"two") is None
    second = await driver.replace("_gc/fallback", b"two", first)
    assert second is not None
    assert await driver.replace("_gc/fallback", b"three", first) is None
    assert (await driver.read_versioned("_gc/fallback")).data == b"two"


async def test_racing_creates_let_exactly_one_win(driver: StorageDriver) -> None:
    others = [twin(driver) for _ in range(4)]
    try:
        won = await asyncio.gather(
            *(d.create("_gc/race", f"{i}".encode()) for i, d in enumerate(others))
        )
        assert sum(version is not None for version in won) == 1
    finally:
        for other in others:
            if other is not driver:
                await other.close()


async def test_one_collector_at_a_time(driver: StorageDriver) -> None:
    held = await lease.take(driver, paths.gc_lease())
    assert held is not None
    assert await lease.take(twin(driver), paths.gc_lease()) is None
    result, deletions = await run_gc(driver)
    assert result.skipped and deletions == []
    await held.release()
    again = await lease.take(twin(driver), paths.gc_lease())
    assert again is not None
    await again.release()


async def test_a_lease_its_holder_stopped_renewing_is_taken_over(driver: StorageDriver) -> None:
    stalled = await lease.take(driver, paths.gc_lease(), seconds=0.5)
    assert stalled is not None
    await asyncio.sleep(1.05)  # storage clocks (S3) count whole seconds
    taker = await lease.take(twin(driver), paths.gc_lease(), seconds=0.5)
    assert taker is not None
    stalled.renewed -= 1  # due for renewal: it finds out it lost the lease
    try:
        await stalled.keep()
        raise AssertionError("the stalled collector kept a lease another took over")
    except LeaseLostError:
        pass
    await taker.release()


async def test_a_tomb_left_by_a_killed_collector_is_cleared_by_the_next_run(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    """Step 6: a run killed after writing a tomb (on a blob an image uses, and on an orphan)
    leaves the blob answered missing; a run after `stale_tomb_after` clears the tomb of
    what stays and finishes deleting the rest."""
    await push_image(client, "team/app", "v1", seed="kept")
    layer = Digest.parse(await push_blob(client, "team/app", b"layer of kept"))
    orphan = Digest.parse(await push_blob(client, "team/app", b"orphan"))
    for digest in (layer, orphan):
        await driver.put(paths.blob_tomb(digest, "dead"), b"")
    assert (await client.head(f"/v2/team/app/blobs/{layer}")).status_code == 404
    await age(driver)
    young, _ = await run_gc(driver)  # a tomb this young may be a live collector's
    assert young.blobs == 1 and await driver.exists(paths.blob_tomb(layer, "dead"))
    result, _ = await run_gc(driver, replace(NO_GRACE, stale_tomb_after=0.0))
    assert result.blobs == 0
    assert not await driver.exists(paths.blob_tomb(layer, "dead"))
    assert not await driver.exists(paths.blob_data(orphan))
    assert not await driver.exists(paths.blob_tomb(orphan, "dead"))
    assert (await client.head(f"/v2/team/app/blobs/{layer}")).status_code == 200


async def test_a_tomb_a_killed_collector_left_is_removed_by_the_api_once_stale(
    client: httpx.AsyncClient, driver: StorageDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Step 6: a killed run's tombs stand until they are `stale_tomb_after` old; then the
    first request that meets one removes it, holding the lease as a run would, and the
    blob answers and uploads again with no run (a server's next may be an hour away).
    Not while a run holds the lease, nor before."""
    monkeypatch.setattr(stale_tombs, "STALE_AFTER", 1.5)  # storage clocks: whole seconds
    await push_image(client, "team/app", "v1", seed="kept")
    layer = Digest.parse(await push_blob(client, "team/app", b"layer of kept"))
    orphan = Digest.parse(await push_blob(client, "team/app", b"orphan"))
    for digest in (layer, orphan):
        await driver.put(paths.blob_tomb(digest, "dead"), b"")

    async def upload_orphan() -> int:
        url = f"/v2/team/app/blobs/uploads/?digest={orphan}"
        return (await client.post(url, content=b"orphan")).status_code

    async def head_layer() -> int:
        return (await client.head(f"/v2/team/app/blobs/{layer}")).status_code

    assert (await head_layer(), await upload_orphan()) == (404, 503)  # maybe a live run's
    await asyncio.sleep(2.6)
    running = await lease.take(driver, paths.gc_lease())
    assert running is not None
    assert (await head_layer(), await upload_orphan()) == (404, 503)  # a run is under way
    assert await driver.exists(paths.blob_tomb(layer, "dead"))
    await running.release()
    assert (await head_layer(), await upload_orphan()) == (200, 201)
    for digest in (layer, orphan):
        assert not await driver.exists(paths.blob_tomb(digest, "dead"))
    assert not await lease.held(driver, paths.gc_lease())


async def test_a_run_stopped_while_it_holds_tombs_finishes_that_step_first(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    """Step 6: a run cancelled (a server stopping its collector, Ctrl-C on `dockyard gc`)
    between writing a folder's tombs and removing them finishes that step, then stops.
    Stopped there, it left the tombs, and the blob's upload answered 503 until they were
    `stale_tomb_after` old."""
    orphan = await push_blob(client, "team/app", b"orphan")
    await age(driver)
    entombed, go_on = asyncio.Event(), asyncio.Event()

    async def stop_here() -> None:
        entombed.set()
        await go_on.wait()

    run = asyncio.ensure_future(run_gc(driver, hook=Steps("entombed", stop_here)))
    await entombed.wait()
    run.cancel()
    await asyncio.sleep(0.05)  # the cancellation reaches the run while it waits here
    go_on.set()
    with pytest.raises(asyncio.CancelledError):
        await run
    left = [info.key for info in await driver.scan(paths.blobs_dir())]
    assert not [key for key in left if paths.is_tomb(key.rsplit("/", 1)[-1])]
    assert not await driver.exists(paths.blob_data(Digest.parse(orphan)))
    assert not await lease.held(driver, paths.gc_lease())  # and it let its lease go
    assert await push_blob(client, "team/app", b"orphan") == orphan  # 201, not 503


async def test_a_run_killed_between_a_repositorys_records_and_its_marker_is_finished(
    client: httpx.AsyncClient, driver: StorageDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Step 6: a run killed after deleting an emptied repository's records, before taking
    it out of the catalog, leaves it listed and holding nothing; the next run takes it out."""
    digest, _ = await push_image(client, "team/gone", "v1", seed="gone")
    assert (await client.delete(f"/v2/team/gone/manifests/{digest}")).status_code == 202
    assert await driver.exists(paths.summary("team/gone"))
    await age(driver)

    async def killed(self: Catalog, name: str) -> None:
        raise RuntimeError("killed")

    with monkeypatch.context() as patched:
        patched.setattr(Catalog, "remove", killed)
        with pytest.raises(RuntimeError, match="killed"):
            await run_gc(driver)
    assert not await driver.exists(paths.summary("team/gone"))  # the records went first
    assert (await client.get("/v2/_catalog")).json()["repositories"] == ["team/gone"]
    result, _ = await run_gc(driver)
    assert result.repositories == 1
    assert (await client.get("/v2/_catalog")).json()["repositories"] == []
    assert await driver.scan(paths.repository("team/gone")) == []
