"""Docker images of random (incompressible) layers, built offline from scratch."""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.support.dockerd import DockerDaemon

_WRITE = 8 << 20


def _random_file(path: Path, size: int) -> None:
    with open(path, "wb") as file:
        for start in range(0, size, _WRITE):
            file.write(os.urandom(min(_WRITE, size - start)))


def build_random_image(
    dockerd: DockerDaemon, tag: str, context: Path, layers: int, layer_bytes: int
) -> None:
    """`FROM scratch` and one `COPY` layer of `layer_bytes` random bytes per layer."""
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    lines = ["FROM scratch"]
    for layer in range(layers):
        _random_file(context / f"layer{layer}.bin", layer_bytes)
        lines.append(f"COPY layer{layer}.bin /layer{layer}.bin")
    (context / "Dockerfile").write_text("\n".join(lines) + "\n")
    dockerd.run("build", "--network", "none", "-q", "-t", tag, str(context))
    shutil.rmtree(context)


def build_many(
    dockerd: DockerDaemon, tags: list[str], workdir: Path, layers: int, layer_bytes: int
) -> None:
    with ThreadPoolExecutor(4) as pool:
        done = [
            pool.submit(build_random_image, dockerd, tag, workdir / f"ctx{i}", layers, layer_bytes)
            for i, tag in enumerate(tags)
        ]
        for future in done:
            future.result()


def run_all(dockerd: DockerDaemon, commands: list[list[str]]) -> None:
    """Run docker commands all at once; raises if any fails."""
    with ThreadPoolExecutor(len(commands)) as pool:
        for future in [pool.submit(dockerd.run, *command) for command in commands]:
            future.result()


def remove_images(dockerd: DockerDaemon, tags: list[str]) -> None:
    dockerd.run("image", "rm", "-f", *tags, check=False)
