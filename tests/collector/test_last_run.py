"""The stored record of the last run (collector/last_run.py), read by any process."""

from __future__ import annotations

import os
import socket
import time

import httpx
import pytest

from collector.last_run import last_run
from storage.driver import StorageDriver
from storage.store import Store
from tests.api.helpers import push_blob, push_image
from tests.collector.support import age, run_gc


async def test_a_run_stores_its_record_and_a_dry_run_none(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    store = Store(driver)
    await push_image(client, "team/app", "v1", seed="kept")
    await push_blob(client, "team/app", b"nobody references me")
    await age(driver)
    assert await last_run(store) is None
    await run_gc(driver, dry_run=True)
    assert await last_run(store) is None
    before = time.time()
    result, _ = await run_gc(driver)
    record = await last_run(store)
    assert record is not None
    assert (record.blobs, record.bytes_freed) == (1, len(b"nobody references me"))
    assert (record.manifests, record.tags, record.uploads) == (0, 0, 0)
    assert record.duration == result.duration
    assert before <= record.started <= record.finished <= time.time()
    assert (record.host, record.pid) == (socket.gethostname(), os.getpid())
    assert record.error is None and record.dry_run is False


async def test_a_run_that_fails_stores_why(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    await push_blob(client, "team/app", b"nobody references me")
    await age(driver)

    async def fail(step: str) -> None:
        if step == "marked":
            raise RuntimeError("storage went away")

    with pytest.raises(RuntimeError):
        await run_gc(driver, hook=fail)
    record = await last_run(Store(driver))
    assert record is not None
    assert record.error == "RuntimeError: storage went away"
    assert record.blobs == 0
