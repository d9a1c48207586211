"""`dockyard gc` (its output, --dry-run, --json) and the server's background collector."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

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
