"""docker pull from a real two-worker server records the manifest's pull time."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.dockerd import DockerDaemon
from tests.support.server import RegistryProcess

pytestmark = pytest.mark.e2e


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryProcess]:
    with RegistryProcess(tmp_path / "registry", {"storage": {"driver": "filesystem"}}) as server:
        yield server


def test_docker_pull_records_the_pull(
    dockerd: DockerDaemon, registry: RegistryProcess, tmp_path: Path
) -> None:
    image = f"{registry.host}/team/app:1"
    dockerd.build_image(image, tmp_path / "context")
    try:
        digest = re.search(r"digest: sha256:([0-9a-f]{64})", dockerd.run("push", image).stdout)
        assert digest
        pulled = (
            registry.workdir / f"data/repositories/team/app/_manifests/pulled/sha256/{digest[1]}"
        )
        assert not pulled.exists()  # a push is no pull
        dockerd.run("rmi", image)
        before = time.time()
        dockerd.run("pull", image)
        for _ in range(200):  # the write runs after the answer: give it up to 20 s
            if pulled.exists():
                break
            time.sleep(0.1)
        assert pulled.exists(), registry.log()[-2000:]
        assert pulled.stat().st_mtime >= before - 1
    finally:
        dockerd.run("rmi", "--force", image, check=False)
