"""`dockyard healthcheck`, the container's HEALTHCHECK: 0 while the registry serves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.server import ROOT, RegistryProcess, free_port


def healthcheck(config: Path, port: int) -> int:
    command = [sys.executable, "-m", "registry", "healthcheck", "--config", str(config)]
    command += ["--port", str(port), "--timeout", "2"]
    return subprocess.run(command, cwd=ROOT, capture_output=True, timeout=60).returncode


def test_healthy_while_serving_then_not(tmp_path: Path) -> None:
    with RegistryProcess(tmp_path / "open") as registry:
        assert healthcheck(registry.config_path, registry.port) == 0
    assert healthcheck(registry.config_path, registry.port) == 1


def test_nothing_listening(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("")
    assert healthcheck(config, free_port()) == 1
