"""The gc figure's data (bench/gc.py): both registries' storage layouts."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from bench import gc
from collector.run import GcOptions, collect
from oci.references import Digest
from storage import paths
from storage.memory import MemoryDriver
from storage.store import Store

DATA = gc.GcData(200)


def test_the_dockyard_layout_is_a_registry_our_collector_halves() -> None:
    written = [item for objects in gc.dockyard_objects(DATA) for item in objects.items()]

    async def check() -> None:
        driver = MemoryDriver()
        for key, value in written:
            await driver.put(key, value)
        store = Store(driver)
        image = next(gc.images(DATA))
        assert str(await store.manifests.resolve(image.repository, image.tag)) == image.digest
        assert len(await store.catalog.names()) == DATA.repositories
        result = await collect(store, GcOptions(grace=0.0, upload_max_age=86400.0))
        assert result.blobs == DATA.blobs // 2
        for digest, _ in image.blobs:
            assert await driver.exists(paths.blob_data(Digest.parse(digest)))

    asyncio.run(check())


def test_the_reference_layout_is_distributions() -> None:
    objects = {key: value for batch in gc.reference_objects(DATA) for key, value in batch.items()}
    image = next(gc.images(DATA))
    hex_ = image.digest.removeprefix("sha256:")
    base = f"docker/registry/v2/repositories/{image.repository}/_manifests"
    assert objects[f"{base}/tags/{image.tag}/current/link"] == image.digest.encode()
    assert objects[f"{base}/tags/{image.tag}/index/sha256/{hex_}/link"] == image.digest.encode()
    assert objects[f"{base}/revisions/sha256/{hex_}/link"] == image.digest.encode()
    manifest = objects[f"docker/registry/v2/blobs/sha256/{hex_[:2]}/{hex_}/data"]
    layers = [layer["digest"] for layer in json.loads(manifest)["layers"]]
    assert [digest for digest, _ in image.blobs[1:]] == layers
    data = [key for key in objects if key.endswith("/data")]
    assert len(data) == DATA.blobs + DATA.manifests


def test_a_collectors_peak_memory_is_its_own_not_the_benchs(tmp_path: Path) -> None:
    held = bytearray(300 << 20)  # the bench's own memory, which a child inherits at exec
    child = [sys.executable, "-c", "x = bytearray(50 << 20); x[::4096] = b'1' * len(x[::4096])"]
    run = gc.collect(child, None, tmp_path / "child.log")
    assert 50e6 < run.rss < 150e6
    del held


def test_a_collections_memory_counts_its_helper_processes(tmp_path: Path) -> None:
    """Dockyard's filesystem sweep deletes through helper processes: the collection's
    memory is theirs and its own together (GNU time's peak is the largest one's)."""
    helper = (
        "x = bytearray(60 << 20); x[::4096] = b'1' * len(x[::4096]); import time; time.sleep(1)"
    )
    child = [
        sys.executable,
        "-c",
        "import subprocess, sys; "
        f"helpers = [subprocess.Popen([sys.executable, '-c', {helper!r}]) for _ in range(2)]; "
        "[helper.wait() for helper in helpers]",
    ]
    run = gc.collect(child, None, tmp_path / "child.log")
    assert run.rss < 100e6
    assert run.pss > 120e6


def test_collection_work_overlaps_a_measurement_only_when_a_run_was_under_way() -> None:
    """The collecting request rates count only while a background run works (a run
    finishing is not needed: on SeaweedFS one outlasts a measurement)."""
    idle = gc.RunsLogged.of("INFO: started\n")
    one = "INFO:     gc run 5f3a started\n"
    done = one + "INFO:     gc run 5f3a: removed 0 manifests, 0 tags, 3 blobs (9 bytes) in 1.0s\n"
    assert (idle.started, idle.ended) == (0, 0)
    assert gc.RunsLogged.of(one).running and not gc.RunsLogged.of(done).running
    assert not gc.overlapped(idle, idle)  # the S3 case the notes once called collecting
    assert gc.overlapped(idle, gc.RunsLogged.of(one))  # started during it
    assert gc.overlapped(gc.RunsLogged.of(one), gc.RunsLogged.of(one))  # under way all along
    assert not gc.overlapped(gc.RunsLogged.of(done), gc.RunsLogged.of(done))
    failed = done + one + "ERROR: garbage collection failed (the next run finishes the job)\n"
    assert not gc.RunsLogged.of(failed).running


def test_the_rate_ratio_pairs_each_rounds_measurements() -> None:
    """A machine that drifts between rounds moves both of a round's measurements: the
    ratio is each round's own, not one of the columns' medians (here 1.05x)."""
    columns = {"idle": [100.0, 200.0, 400.0], "collecting": [90.0, 210.0, 380.0]}
    assert gc.paired_ratio(columns) == pytest.approx(0.95)


def test_the_collections_are_listed_in_the_order_taken_and_summed_up_by_medians() -> None:
    """The notes list them as taken; the figure is each one's median, and its highest peak."""
    result = gc.StorageResult(
        "filesystem",
        [
            ("dockyard", gc.Collection(10.0, 50e6, 6)),
            ("reference", gc.Collection(11.0, 20e6, 6)),
            ("reference", gc.Collection(15.0, 30e6, 6)),
            ("dockyard", gc.Collection(14.0, 70e6, 6, pss=90e6)),
        ],
        1.0,
        {},
    )
    assert result.seconds == (12.0, 13.0)
    assert result.rss == (70e6, 30e6)
    assert result.pss == (90e6, 0.0)
    assert gc._collections(result) == (
        "the collections, in the order timed: Dockyard 10.0 s, the reference 11.0 s, "
        "the reference 15.0 s, Dockyard 14.0 s"
    )
