"""`dockyard du` and `dockyard check` on a real server's storage after docker pushes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from oci.references import Digest
from registry.config import CONFIG_ENV, Config, load_config
from registry.drivers import create_driver
from storage import paths
from storage.filesystem import FilesystemDriver
from tests.support.dockerd import DockerDaemon
from tests.support.server import ROOT, RegistryProcess

pytestmark = pytest.mark.e2e

MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


@pytest.fixture
def local_tags(dockerd: DockerDaemon) -> Iterator[list[str]]:
    tags: list[str] = []
    yield tags
    dockerd.run("rmi", "--force", *tags, check=False)


def dockyard(registry: RegistryProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """The `dockyard` command with the server's own configuration file."""
    return subprocess.run(
        [sys.executable, "-m", "registry", *args, "--config", str(registry.config_path)],
        cwd=ROOT,
        env=registry.env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def blob_sizes(registry: RegistryProcess, name: str, tag: str) -> dict[str, int]:
    """Every blob an image's repository holds for it (manifest included), by the API."""
    response = httpx.get(f"{registry.url}/v2/{name}/manifests/{tag}", headers={"Accept": MANIFEST})
    manifest = response.json()
    sizes = {response.headers["docker-content-digest"]: len(response.content)}
    for descriptor in (manifest["config"], *manifest["layers"]):
        sizes[descriptor["digest"]] = descriptor["size"]
    return sizes


async def corrupt(registry: RegistryProcess, digest: str) -> None:
    """Change a stored blob's bytes behind the registry: on disk, or in the bucket."""
    config = load_config_from(registry.config_path)
    driver = create_driver(config)
    key = paths.blob_data(Digest.parse(digest))
    if isinstance(driver, FilesystemDriver):
        (driver.root / key).write_bytes(b"flipped bits")
    else:
        await driver.put(key, b"flipped bits")
    await driver.close()


def load_config_from(path: Path) -> Config:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CONFIG_ENV, str(path))
        return load_config()


def test_du_and_check_after_docker_pushes(
    dockerd: DockerDaemon, registry: RegistryProcess, local_tags: list[str], tmp_path: Path
) -> None:
    first, mounted = f"{registry.host}/team/app:1", f"{registry.host}/other/app:1"
    second = f"{registry.host}/team/app:2"
    local_tags.extend([first, mounted, second])
    dockerd.build_image(first, tmp_path / "one")
    dockerd.build_image(second, tmp_path / "two")
    dockerd.run("push", first)
    dockerd.run("tag", first, mounted)
    dockerd.run("push", mounted)  # the same image: every blob shared with team/app
    dockerd.run("push", second)

    one = blob_sizes(registry, "team/app", "1")
    two = blob_sizes(registry, "team/app", "2")
    team = {**one, **two}
    du = dockyard(registry, "du", "--json")
    assert du.returncode == 0, du.stderr
    report = json.loads(du.stdout)
    rows = {row["name"]: row for row in report["repositories"]}
    assert set(rows) == {"team/app", "other/app"}
    assert (rows["team/app"]["tags"], rows["other/app"]["tags"]) == (2, 1)
    assert rows["team/app"]["bytes"] == sum(team.values())
    assert rows["other/app"]["bytes"] == sum(one.values())
    assert rows["other/app"]["unique_bytes"] == 0
    only_two = {digest: size for digest, size in two.items() if digest not in one}
    assert rows["team/app"]["unique_bytes"] == sum(only_two.values())
    assert report["total_bytes"] == sum(team.values())
    assert all(row["last_push"] for row in rows.values())

    text = dockyard(registry, "du", "other/app")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[1].split()[:2] == ["other/app", "1"]
    assert lines[-1].startswith("total:") and f"({sum(one.values())} bytes)" in lines[-1]

    assert dockyard(registry, "check").returncode == 0
    layer = json.loads(
        httpx.get(f"{registry.url}/v2/team/app/manifests/2", headers={"Accept": MANIFEST}).content
    )["layers"][-1]["digest"]
    asyncio.run(corrupt(registry, layer))
    found = dockyard(registry, "check", "--json")
    assert found.returncode == 1, found.stderr
    problems = json.loads(found.stdout)["problems"]
    assert [(p["kind"], p["subject"]) for p in problems] == [("corrupt-blob", layer)]

    repaired = dockyard(registry, "check", "--repair")
    assert repaired.returncode == 1, repaired.stderr
    assert "corrupt-blob" in repaired.stdout and "[repaired]" in repaired.stdout
    assert httpx.get(f"{registry.url}/v2/team/app/blobs/{layer}").status_code == 404
    lacking = dockyard(registry, "check", "--json")  # the image that needs it is now broken
    assert lacking.returncode == 1
    problems = json.loads(lacking.stdout)["problems"]
    assert [(p["kind"], p["detail"]) for p in problems] == [
        ("missing-reference", f"references blob {layer}, which the repository lacks")
    ]
    pushed = dockerd.run("push", second).stdout  # ... until it is pushed again
    assert pushed.count(": Pushed") == 1, pushed
    again = dockyard(registry, "check")
    assert again.returncode == 0, again.stdout
    assert "no problems" in again.stdout
    assert httpx.get(f"{registry.url}/v2/team/app/blobs/{layer}").status_code == 200
