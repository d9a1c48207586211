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
from tests.support.required import REQUIRED, unavailable
from tests.support.seaweedfs import SeaweedFS, unique_prefix
from tests.support.server import RegistryProcess


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "registry_workers(n): run the `registry` fixture with n worker processes"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach the registry's log to a failure; with E2E_REQUIRED=1, fail a test skipped
    in any other way than `unavailable` too."""
    report = yield
    server = getattr(item, "funcargs", {}).get("registry")
    if report.failed and isinstance(server, RegistryProcess):
        report.sections.append(("registry log (last lines)", server.log()[-4000:]))
    if REQUIRED and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"E2E_REQUIRED=1 but the test was skipped: {reason}"
    return report


@pytest.fixture(scope="session")
def dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerDaemon]:
    daemon = DockerDaemon(tmp_path_factory.mktemp("dockerd"))
    try:
        daemon.start()
    except DockerUnavailableError as error:
        unavailable(f"dockerd cannot start: {error}")
    yield daemon
    daemon.stop()


@pytest.fixture(scope="session")
def image_archive(dockerd: DockerDaemon, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `docker save` tarball of a busybox image built FROM scratch (then removed locally)."""
    workdir = tmp_path_factory.mktemp("image")
    tag = "dockyard-e2e/archived:1"
    dockerd.build_image(tag, workdir / "context")
    archive = workdir / "image.tar"
    dockerd.run("save", "--output", str(archive), tag)
    dockerd.run("rmi", tag)
    return archive


STORAGE = ["filesystem", "s3"]


@pytest.fixture(params=STORAGE)
def storage_config(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The `storage:` section every real-client test runs with, once per driver."""
    if request.param == "s3":
        seaweedfs: SeaweedFS = request.getfixturevalue("seaweedfs")
        return seaweedfs.storage_config(request.getfixturevalue("s3_bucket"), unique_prefix())
    return {"driver": request.param}


@pytest.fixture
def registry(
    request: pytest.FixtureRequest, tmp_path: Path, storage_config: dict[str, Any]
) -> Iterator[RegistryProcess]:
    """A running registry; two workers unless marked, so the requests of one push may land
    on different processes as in production."""
    marker = request.node.get_closest_marker("registry_workers")
    workers = marker.args[0] if marker else 2
    with RegistryProcess(tmp_path / "registry", {"storage": storage_config}, workers) as server:
        yield server
