from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_docker_push_pull_run(dockerd, registry, tmp_path: Path) -> None:
    image = f"{registry.host}/team/app:1"
    dockerd.build_image(image, tmp_path / "ctx")
    dockerd.run("push", image)
    dockerd.run("rmi", image)
    dockerd.run("pull", image)
    out = dockerd.run("run", "--rm", "--network", "none", image).stdout
    assert "layer-0" in out
