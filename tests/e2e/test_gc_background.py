"""The background collector of a real 2-worker server: `/metrics` counts its runs and
what they removed, and its last run's record is in the storage for any process to read."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import httpx
import psutil
import pytest

from collector.last_run import RunRecord, last_run
from storage.filesystem import FilesystemDriver
from storage.store import Store
from tests.support.metrics import Samples, scrape_until
from tests.support.server import RegistryProcess

pytestmark = pytest.mark.e2e

ORPHAN = b"an upload no manifest ever referenced"


def _record(root: Path) -> RunRecord | None:
    async def read() -> RunRecord | None:
        store = Store(FilesystemDriver(root))
        try:
            return await last_run(store)
        finally:
            await store.close()

    return asyncio.run(read())


def test_metrics_and_the_stored_record_of_background_runs(tmp_path: Path) -> None:
    config = {"gc": {"enabled": True, "interval": "1s", "grace": "0s"}}
    with RegistryProcess(tmp_path / "registry", config, workers=2) as registry:
        digest = "sha256:" + hashlib.sha256(ORPHAN).hexdigest()
        answer = httpx.post(
            f"{registry.url}/v2/team/app/blobs/uploads/?digest={digest}", content=ORPHAN
        )
        assert answer.status_code == 201, answer.text

        def collected(samples: Samples) -> bool:
            return samples.get(("registry_gc_blobs_deleted_total", frozenset()), 0) >= 1

        samples = scrape_until(f"{registry.url}/metrics", collected, timeout=30)
        assert samples[("registry_gc_blobs_deleted_total", frozenset())] == 1
        assert samples[("registry_gc_bytes_freed_total", frozenset())] == len(ORPHAN)
        runs = samples[("registry_gc_runs_total", frozenset())]
        assert runs >= 1
        assert samples[("registry_gc_duration_seconds_count", frozenset())] == runs
        assert samples[("registry_gc_manifests_deleted_total", frozenset())] == 0
        assert httpx.head(f"{registry.url}/v2/team/app/blobs/{digest}").status_code == 404
        record = _record(tmp_path / "registry" / "data")
        assert record is not None and record.error is None
        workers = {child.pid for child in psutil.Process(registry.process.pid).children()}
        assert record.pid in workers  # a worker of this server ran it
        assert record.started <= record.finished
