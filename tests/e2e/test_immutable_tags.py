"""docker push over an immutable tag fails and shows the registry's reason."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.dockerd import DockerDaemon
from tests.support.server import RegistryProcess

pytestmark = pytest.mark.e2e

RULE = "immutable_tags[0] (repositories: team/**; tags: v*)"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryProcess]:
    config = {
        "storage": {"driver": "filesystem"},
        "immutable_tags": [{"repositories": ["team/**"], "tags": ["v*"]}],
    }
    with RegistryProcess(tmp_path / "registry", config, 2) as server:
        yield server


@pytest.fixture
def local_tags(dockerd: DockerDaemon) -> Iterator[list[str]]:
    tags: list[str] = []
    yield tags
    dockerd.run("rmi", "--force", *tags, check=False)


def test_docker_push_over_an_immutable_tag_fails_with_the_rule(
    dockerd: DockerDaemon, registry: RegistryProcess, local_tags: list[str], tmp_path: Path
) -> None:
    release = f"{registry.host}/team/app:v1"
    first, second = "dockyard-e2e/immutable:first", "dockyard-e2e/immutable:second"
    local_tags.extend([release, first, second])
    dockerd.build_image(first, tmp_path / "first")
    dockerd.build_image(second, tmp_path / "second")

    dockerd.run("tag", first, release)
    dockerd.run("push", release)

    dockerd.run("tag", second, release)
    refused = dockerd.run("push", release, check=False)
    assert refused.returncode != 0
    output = refused.stdout + refused.stderr
    assert "denied" in output, output
    assert f"tag v1 of team/app is immutable by {RULE}" in output, output

    dockerd.run("tag", first, release)  # the same image again: docker retries do this
    dockerd.run("push", release)

    dockerd.run("rmi", release)
    pulled = dockerd.run("pull", release).stdout
    first_id = dockerd.run("image", "inspect", "--format", "{{.Id}}", first).stdout
    assert dockerd.run("image", "inspect", "--format", "{{.Id}}", release).stdout == first_id
    assert "Digest: sha256:" in pulled
