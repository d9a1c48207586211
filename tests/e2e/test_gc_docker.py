"""docker end to end with the collector (issue 11 §4): push two images sharing base layers,
delete one, `dockyard gc`: storage shrinks, the other still pulls and runs, and pushing the
deleted one again really uploads its layers."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from registry.config import S3Config
from registry.drivers import s3_settings
from storage.driver import StorageDriver
from storage.filesystem import FilesystemDriver
from storage.s3 import S3Driver
from tests.e2e.test_docker import pushed_digest
from tests.support.dockerd import DockerDaemon
from tests.support.server import ROOT, RegistryProcess

pytestmark = pytest.mark.e2e


def blob_bytes(driver: StorageDriver) -> int:
    """Bytes of every blob stored (what `dockyard gc` frees)."""

    async def scan() -> int:
        try:
            infos = await driver.scan("blobs")
        finally:
            await driver.close()
        return sum(info.size for info in infos if info.key.endswith("/data"))

    return asyncio.run(scan())


def test_docker_push_delete_gc_pull_and_push_again(
    dockerd: DockerDaemon, tmp_path: Path, storage_config: dict[str, Any]
) -> None:
    config = {"storage": storage_config, "gc": {"enabled": False, "grace": "1s"}}

    def driver() -> StorageDriver:
        if "s3" in storage_config:
            return S3Driver(s3_settings(S3Config(**storage_config["s3"])))
        return FilesystemDriver(tmp_path / "registry" / "data")

    with RegistryProcess(tmp_path / "registry", config, workers=2) as registry:
        keep, gone = f"{registry.host}/team/keep:1", f"{registry.host}/team/gone:1"
        try:
            dockerd.build_image(keep, tmp_path / "keep")
            dockerd.build_image(gone, tmp_path / "gone")
            dockerd.run("push", keep)
            digest = pushed_digest(dockerd.run("push", gone).stdout)
            before = blob_bytes(driver())
            deleted = httpx.delete(f"{registry.url}/v2/team/gone/manifests/{digest}")
            assert deleted.status_code == 202
            time.sleep(2.2)  # past the grace of 1 s (S3 times are whole seconds)
            collected = subprocess.run(
                [sys.executable, "-m", "registry", "gc", "--json",
                 "--config", str(registry.config_path)],
                cwd=ROOT, capture_output=True, check=True,
            )  # fmt: skip
            summary = json.loads(collected.stdout.splitlines()[-1])["summary"]
            # its two own layers, its config and its manifest; the shared base layers stay
            assert summary["blobs"] == 4 and summary["repositories"] == 1, summary
            assert before - blob_bytes(driver()) == summary["bytes_freed"] > 0
            catalog = httpx.get(f"{registry.url}/v2/_catalog").json()["repositories"]
            assert catalog == ["team/keep"]

            again = dockerd.run("push", gone).stdout
            assert "already exists" not in again, again
            assert again.count(": Pushed") >= 2, again  # its own two layers, really sent

            dockerd.run("rmi", keep, gone)
            for image in (keep, gone):
                pulled = dockerd.run("pull", image).stdout
                assert pulled.count(": Pull complete") == 4 or image == gone, pulled
                ran = dockerd.run("run", "--rm", "--network", "none", image).stdout
                assert ran.split() == [f"layer-0-{image}", f"layer-1-{image}"]
        finally:
            dockerd.run("rmi", "--force", keep, gone, check=False)
