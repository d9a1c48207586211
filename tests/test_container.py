"""The container image as documented: its build context, its paths, the README's commands.

Images cannot be built here (no base image offline), so the Dockerfile is read the way
docker reads it: dockerfile-parse for the instructions, docker-py's .dockerignore matcher
for the build context.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import tomllib
from pathlib import Path, PurePosixPath

import pytest
from docker.utils.build import exclude_paths
from dockerfile_parse import DockerfileParser

from registry.auth.setup import signing_key_path
from registry.cli import build_parser
from registry.config import CONFIG_ENV, load_config
from tests.support.server import ROOT

DOCKERFILE = DockerfileParser(str(ROOT / "Dockerfile"))


def _instructions(name: str) -> list[str]:
    return [entry["value"] for entry in DOCKERFILE.structure if entry["instruction"] == name]


def _copies() -> dict[str, str]:
    """COPY destination (absolute, in the image) -> source in the build context."""
    copies = {}
    workdir = "/"
    for entry in DOCKERFILE.structure:
        if entry["instruction"] == "WORKDIR":
            workdir = entry["value"]
        elif entry["instruction"] == "COPY":
            *sources, destination = entry["value"].split()
            for source in sources:
                target = PurePosixPath(workdir, destination)
                copies[str(target / source if destination.endswith("/") else target)] = source
    return copies


WORKDIR = PurePosixPath(_instructions("WORKDIR")[-1])
VOLUME = PurePosixPath(json.loads(_instructions("VOLUME")[-1])[0])
IMAGE_CONFIG = DOCKERFILE.envs[CONFIG_ENV]


def _context(root: Path) -> set[str]:
    """The files docker sends to the daemon for `docker build root`."""
    lines = (root / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return set(exclude_paths(str(root), patterns, "Dockerfile"))


def test_build_context_holds_the_sources_and_nothing_else(tmp_path: Path) -> None:
    sources = ["pyproject.toml", "README.md", "config.example.yaml", "oci/a.py"]
    sources += ["registry/cli.py", "storage/driver.py", "Dockerfile", ".dockerignore"]
    lying_around = [".venv/lib/python3.11/site-packages/x.py", "venv/bin/python", "data/x"]
    lying_around += ["htpasswd", "key.pem", "registry/__pycache__/cli.pyc", ".git/HEAD"]
    lying_around += ["dockyard.egg-info/PKG-INFO", "bench/work/blob", "tests/test_x.py"]
    for name in [*sources, *lying_around]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    (tmp_path / ".dockerignore").write_text((ROOT / ".dockerignore").read_text())
    files = {name for name in _context(tmp_path) if (tmp_path / name).is_file()}
    assert files == set(sources)


def test_build_context_holds_everything_the_dockerfile_copies() -> None:
    context = _context(ROOT)
    for source in _copies().values():
        assert source in context


def test_the_image_holds_every_package() -> None:
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {pattern.rstrip("*") for pattern in find["packages"]["find"]["include"]}
    assert packages <= set(_copies().values())


def test_the_image_keeps_data_users_and_key_in_the_volume(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable in [v for v in os.environ if v.startswith("DOCKYARD_")]:
        monkeypatch.delenv(variable)
    for variable, value in DOCKERFILE.envs.items():
        if variable.startswith("DOCKYARD_") and variable != CONFIG_ENV:
            monkeypatch.setenv(variable, value)
    config = load_config(ROOT / _copies()[IMAGE_CONFIG])
    paths = {
        "storage": config.storage.filesystem.root,
        "users": config.auth.htpasswd,
        "signing key": signing_key_path(config),
    }
    for what, path in paths.items():
        in_container = WORKDIR / path  # relative paths resolve in the working directory
        assert in_container.is_relative_to(VOLUME), f"{what} at {in_container}"


def _readme_commands(program: str) -> list[list[str]]:
    """`program`'s arguments in the README's section on containers, continued lines joined."""
    text = (ROOT / "README.md").read_text().split("## Running in a container")[1]
    text = text.split("\n## ")[0]
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("|"):
                words = shlex.split(part, comments=True)
                if words[:2] == program.split():
                    commands.append(words[2:])
    return commands


FLAGS = {"-d", "-i", "-t", "-it", "--rm"}
OPTIONS = {"-p", "-v", "-e", "--name"}


def test_readme_docker_run_commands_work() -> None:
    [build] = _readme_commands("docker build")
    image = build[build.index("-t") + 1]
    runs = _readme_commands("docker run")
    assert runs
    mounted = set()
    for words in runs:
        options: list[tuple[str, str]] = []
        while words[0].startswith("-"):
            assert words[0] in FLAGS | OPTIONS, f"the test does not know {words[0]}"
            if words[0] in OPTIONS:
                options.append((words[0], words[1]))
            words = words[1 + (words[0] in OPTIONS) :]
        assert words[0] == image
        build_parser().parse_args(words[1:] or json.loads(_instructions("CMD")[-1]))
        for option, value in options:
            if option == "-v":
                source, target = value.split(":")[:2]
                mounted.add(target)
                if "/" not in source:  # a named volume: the image's
                    assert PurePosixPath(target) == VOLUME
            if option == "-e":
                variable, setting = value.split("=", 1)
                with pytest.MonkeyPatch.context() as env:
                    env.setenv(variable, setting)
                    load_config()  # a known key, a valid value
    assert {str(VOLUME), IMAGE_CONFIG} <= mounted
