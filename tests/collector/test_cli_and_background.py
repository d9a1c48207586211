"""`dockyard gc` (its output, --dry-run, --json) and the server's background collector."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from collector import last_run
from collector.background import collect_forever
from collector.cli import Lines
from collector.run import GcOptions, collect
from oci.references import Digest
from registry import cli
from registry.config import CONFIG_ENV
from storage.filesystem import FilesystemDriver
from storage.memory import MemoryDriver
from storage.store import Store
from tests.api.helpers import digest_of
from tests.collector.support import NO_GRACE


@pytest.fixture
def orphan_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """A filesystem registry's config holding one old blob nobody references."""
    for variable in [v for v in os.environ if v.startswith("DOCKYARD_")]:
        monkeypatch.delenv(variable)
    data = b"nobody references me"
    digest = digest_of(data)

    async def store_it() -> None:
        store = Store(FilesystemDriver(tmp_path / "data"))
        upload = await store.uploads.start("team/app")

        async def chunks():
            yield data

        await store.uploads.append(upload, chunks())
        upload = await store.uploads.get("team/app", upload.id)
        await store.uploads.finish(upload, Digest.parse(digest))

    asyncio.run(store_it())
    config = tmp_path / "config.yaml"
    config.write_text(f"storage:\n  filesystem:\n    root: {tmp_path / 'data'}\ngc:\n  grace: 0s\n")
    monkeypatch.setenv(CONFIG_ENV, str(config))
    time.sleep(0.02)
    return tmp_path / "data", digest


def test_dry_run_prints_what_would_go_and_keeps_it(
    orphan_on_disk: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    root, digest = orphan_on_disk
    assert cli.main(["gc", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"would delete blob {digest} (20 bytes)" in out
    assert "would remove: 0 manifests, 0 tags, 1 blobs" in out
    assert (root / "blobs" / "sha256" / digest[7:9] / digest[7:] / "data").exists()


def test_json_lines_then_a_summary_and_the_blob_is_gone(
    orphan_on_disk: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    root, digest = orphan_on_disk
    assert cli.main(["gc", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {"deleted": "blob", "what": digest, "why": "", "size": 20} in lines
    summary = lines[-1]["summary"]
    assert (summary["blobs"], summary["bytes_freed"], summary["repositories"]) == (1, 20, 1)
    assert summary["skipped"] is None and summary["duration"] >= 0
    assert not (root / "blobs" / "sha256" / digest[7:9] / digest[7:] / "data").exists()


def test_report_lines_go_out_a_chunk_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """One write a chunk, not one per line (or two: text, then newline) where the output
    is unbuffered."""
    writes: list[str] = []
    monkeypatch.setattr(sys, "stdout", SimpleNamespace(write=writes.append))
    lines = Lines(chunk=1000)
    for n in range(2500):
        lines.add(f"deleted blob {n}")
    lines.flush()
    assert len(writes) == 3
    assert "".join(writes).splitlines() == [f"deleted blob {n}" for n in range(2500)]


async def test_the_background_collector_runs_every_interval_and_purges_uploads() -> None:
    store = Store(MemoryDriver())
    upload = await store.uploads.start("team/app")
    options = GcOptions(grace=0.0, upload_max_age=0.01)
    await asyncio.sleep(0.05)
    task = asyncio.create_task(collect_forever(lambda: collect(store, options), interval=0.05))
    try:
        for _ in range(100):
            if not await store.driver.list("uploads"):
                break
            await asyncio.sleep(0.05)
        assert await store.driver.list("uploads") == [], upload.id
    finally:
        task.cancel()


async def test_the_background_collector_keeps_to_the_stored_schedule_across_restarts() -> None:
    """A process tries a run `gc.interval` after the last run of any process finished
    (the stored record), not `gc.interval` after it started: a server restarted more
    often than its interval (a daily restart with `interval: 24h`) never collected."""
    store = Store(MemoryDriver())
    interval = 20.0
    assert await last_run.due_in(store, interval) is None  # no run yet: a whole interval

    async def ran_within(seconds: float) -> bool:
        """Whether a started collector recorded a run within `seconds`."""
        before = await last_run.last_run(store)
        due_in = functools.partial(last_run.due_in, store, interval)
        task = asyncio.create_task(
            collect_forever(lambda: collect(store, NO_GRACE), interval, due_in=due_in)
        )
        try:
            for _ in range(int(seconds / 0.05)):
                if await last_run.last_run(store) != before:
                    return True
                await asyncio.sleep(0.05)
            return False
        finally:
            task.cancel()

    await collect(store, NO_GRACE)  # a run an interval ago: overdue for a started server
    overdue = await last_run.last_run(store)
    assert overdue is not None
    await last_run.save(store, replace(overdue, finished=time.time() - interval - 1))
    assert await last_run.due_in(store, interval) < 0
    assert await ran_within(8.0)  # after the jitter (1-2 s), not 20 s
    assert 19 < await last_run.due_in(store, interval) <= 20  # the run just recorded
    assert not await ran_within(3.0)  # past the jitter: the next is 20 s off
