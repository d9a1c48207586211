"""Fixtures for real-client tests: a private dockerd and a running registry.

Tests that need a tool which cannot run here skip with the reason; with
`E2E_REQUIRED=1` (set by .ci/run) they fail instead, so CI cannot pass by skipping.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.dockerd import DockerDaemon, DockerUnavailableError
from tests.support.required import require_tool, unavailable
from tests.support.seaweedfs import SeaweedFS, unique_prefix
from tests.support.server import RegistryProcess

__all__ = ["require_tool"]


@pytest.fixture(scope="session")
def dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerDaemon]:
    daemon = DockerDaemon(tmp_path_factory.mktemp("dockerd"))
    try:
        daemon.start()
    except DockerUnavailableError as error:
        unavailable(f"dockerd cannot start: {error}")
    yield daemon
    daemon.stop()


STORAGE = ["filesystem", "s3"]


@pytest.fixture(params=STORAGE)
def storage_config(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The `storage:` section every real-client test runs with, once per driver."""
    if request.param == "s3":
        seaweedfs: SeaweedFS = request.getfixturevalue("seaweedfs")
        return seaweedfs.storage_config(request.getfixturevalue("s3_bucket"), unique_prefix())
    return {"driver": request.param}


@pytest.fixture
def registry(tmp_path: Path, storage_config: dict[str, Any]) -> Iterator[RegistryProcess]:
    with RegistryProcess(tmp_path / "registry", {"storage": storage_config}) as server:
        yield server
