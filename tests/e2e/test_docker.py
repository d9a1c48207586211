"""docker push/pull/run against a running registry, through a private dockerd."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.dockerd import DockerDaemon
from tests.support.server import RegistryProcess

pytestmark = pytest.mark.e2e

MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


@pytest.fixture
def local_tags(dockerd: DockerDaemon) -> Iterator[list[str]]:
    """Image references the test creates in the shared daemon, removed afterwards."""
    tags: list[str] = []
    yield tags
    dockerd.run("rmi", "--force", *tags, check=False)


def layer_count(dockerd: DockerDaemon, image: str) -> int:
    inspected = json.loads(dockerd.run("image", "inspect", image).stdout)
    return len(inspected[0]["RootFS"]["Layers"])


def pushed_digest(output: str) -> str:
    match = re.search(r"digest: (sha256:[0-9a-f]{64}) size: \d+", output)
    assert match, f"no digest in docker push output:\n{output}"
    return match[1]


def assert_gone(dockerd: DockerDaemon, image: str) -> None:
    assert dockerd.run("image", "inspect", image, check=False).returncode != 0


def test_push_again_mount_and_pull_by_tag_and_digest(
    dockerd: DockerDaemon, registry: RegistryProcess, local_tags: list[str], tmp_path: Path
) -> None:
    first = f"{registry.host}/team/app:1"
    second = f"{registry.host}/other/app:1"
    local_tags.extend([first, second])
    dockerd.build_image(first, tmp_path / "context")
    layers = layer_count(dockerd, first)
    assert layers == 4  # busybox, its symlinks, two RUN layers

    pushed = dockerd.run("push", first).stdout
    assert pushed.count(": Pushed") == layers, pushed
    digest = pushed_digest(pushed)

    again = dockerd.run("push", first).stdout
    assert again.count(": Layer already exists") == layers, again
    assert ": Pushed" not in again, again
    assert pushed_digest(again) == digest

    dockerd.run("tag", first, second)
    mounted = dockerd.run("push", second).stdout
    assert mounted.count(": Mounted from team/app") == layers, mounted
    assert pushed_digest(mounted) == digest

    dockerd.run("rmi", first, second)
    assert_gone(dockerd, first)
    pulled = dockerd.run("pull", first).stdout
    assert pulled.count(": Pull complete") == layers, pulled
    assert f"Digest: {digest}" in pulled
    ran = dockerd.run("run", "--rm", "--network", "none", first).stdout
    assert ran.split() == [f"layer-0-{first}", f"layer-1-{first}"]

    by_digest = f"{registry.host}/other/app@{digest}"
    local_tags.append(by_digest)
    dockerd.run("rmi", first)
    assert_gone(dockerd, first)
    pulled = dockerd.run("pull", by_digest).stdout
    assert pulled.count(": Pull complete") == layers, pulled
    ran = dockerd.run("run", "--rm", "--network", "none", by_digest).stdout
    assert ran.split() == [f"layer-0-{first}", f"layer-1-{first}"]


def test_manifest_list_push_and_pull(
    dockerd: DockerDaemon, registry: RegistryProcess, local_tags: list[str], tmp_path: Path
) -> None:
    image = f"{registry.host}/team/multi:amd64"
    listed = f"{registry.host}/team/multi:1"
    local_tags.extend([image, listed])
    dockerd.build_image(image, tmp_path / "context")
    image_digest = pushed_digest(dockerd.run("push", image).stdout)
    dockerd.run("manifest", "create", "--insecure", listed, image)
    dockerd.run("manifest", "annotate", "--os", "linux", "--arch", "amd64", listed, image)
    list_digest = dockerd.run("manifest", "push", "--insecure", "--purge", listed).stdout.strip()

    response = httpx.get(
        f"{registry.url}/v2/team/multi/manifests/1", headers={"Accept": MANIFEST_LIST}
    )
    assert response.headers["content-type"] == MANIFEST_LIST
    assert response.headers["docker-content-digest"] == list_digest
    [entry] = response.json()["manifests"]
    assert (entry["digest"], entry["platform"]["architecture"]) == (image_digest, "amd64")

    dockerd.run("rmi", image)
    assert_gone(dockerd, image)
    pulled = dockerd.run("pull", listed).stdout
    assert pulled.count(": Pull complete") == layer_count(dockerd, listed), pulled
    assert f"Digest: {list_digest}" in pulled
    ran = dockerd.run("run", "--rm", "--network", "none", listed).stdout
    assert ran.split() == [f"layer-0-{image}", f"layer-1-{image}"]
