"""Maintenance mode switched by `dockyard maintenance` while two servers share the storage:
docker push fails with the message on both, docker pull works, and push works again after."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.dockerd import DockerDaemon
from tests.support.server import ROOT, RegistryProcess

pytestmark = pytest.mark.e2e

MESSAGE = "storage migration until 02:00 UTC"
# Every server re-reads the flag at most every 2 s (storage.maintenance.REFRESH_SECONDS);
# far more than that is allowed here, on a loaded machine.
SWITCH_DEADLINE = 60.0


def dockyard_maintenance(server: RegistryProcess, *args: str) -> str:
    command = [sys.executable, "-m", "registry", "maintenance", *args]
    result = subprocess.run(
        [*command, "--config", str(server.config_path)],
        cwd=ROOT, env=server.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def wait_for_writes(server: RegistryProcess, refused: bool) -> None:
    """Until a write answers 405 (refused) or 202; every worker has switched when a run of
    writes all agree, since consecutive connections spread over the workers."""
    deadline = time.monotonic() + SWITCH_DEADLINE
    while time.monotonic() < deadline:
        answers = []
        for _ in range(8):
            with httpx.Client() as client:  # a new connection: any worker may answer
                response = client.post(f"{server.url}/v2/probe/blobs/uploads/")
                if response.status_code == 202:
                    client.delete(f"{server.url}{response.headers['location']}")
            answers.append(response.status_code)
        if set(answers) == {405 if refused else 202}:
            return
        time.sleep(0.5)
    raise AssertionError(f"{server.url} did not switch maintenance to {refused}")


@pytest.fixture
def second(
    tmp_path: Path, registry: RegistryProcess, storage_config: dict[str, Any]
) -> Iterator[RegistryProcess]:
    """Another `dockyard serve` over the same storage, as a second replica."""
    settings: dict[str, Any] = {"storage": storage_config}
    if storage_config["driver"] == "filesystem":
        settings["storage"] = {
            **storage_config,
            "filesystem": {"root": str(registry.workdir / "data")},
        }
    with RegistryProcess(tmp_path / "second", settings, workers=2) as server:
        yield server


def test_cli_switch_refuses_docker_push_with_the_message_on_every_server_while_pulls_work(
    dockerd: DockerDaemon, registry: RegistryProcess, second: RegistryProcess, tmp_path: Path
) -> None:
    before = f"{registry.host}/team/app:before"
    dockerd.build_image(before, tmp_path / "context")
    tags = [before]
    try:
        dockerd.run("push", before)

        assert "maintenance: on" in dockyard_maintenance(registry, "on", "--message", MESSAGE)
        source = before  # a local image of the pushed one
        for server in (registry, second):
            wait_for_writes(server, refused=True)
            during = f"{server.host}/team/app:during"
            dockerd.run("tag", source, during)
            tags.append(during)
            pushed = dockerd.run("push", during, check=False)
            assert pushed.returncode != 0, pushed.stdout
            assert MESSAGE in pushed.stdout + pushed.stderr, pushed.stdout + pushed.stderr

            dockerd.run("rmi", "--force", *tags)  # no local layers: the pull fetches them all
            source = f"{server.host}/team/app:before"
            tags[:] = [source]
            pulled = dockerd.run("pull", source).stdout
            assert pulled.count(": Pull complete") == 4, pulled
        assert "maintenance: on" in dockyard_maintenance(registry, "status")

        assert "maintenance: off" in dockyard_maintenance(second, "off")
        for server in (registry, second):
            wait_for_writes(server, refused=False)
            after = f"{server.host}/team/app:after"
            dockerd.run("tag", source, after)
            tags.append(after)
            dockerd.run("push", after)
    finally:
        dockerd.run("rmi", "--force", *tags, check=False)
