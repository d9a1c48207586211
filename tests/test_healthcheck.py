"""`dockyard healthcheck`, the container's HEALTHCHECK: 0 while the registry is ready."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.server import ROOT, RegistryProcess, free_port


def run_healthcheck(config: Path, port: int) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "registry", "healthcheck", "--config", str(config)]
    command += ["--port", str(port), "--timeout", "4"]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)


def healthcheck(config: Path, port: int) -> int:
    return run_healthcheck(config, port).returncode


def test_healthy_while_serving_then_not(tmp_path: Path) -> None:
    with RegistryProcess(tmp_path / "open") as registry:
        assert healthcheck(registry.config_path, registry.port) == 0
    assert healthcheck(registry.config_path, registry.port) == 1


def test_nothing_listening(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("")
    assert healthcheck(config, free_port()) == 1


def test_not_ready_when_storage_is_unreachable_says_why(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: every S3 call is refused
    storage = {
        "driver": "s3",
        "s3": {"bucket": "b", "endpoint_url": dead, "access_key": "k", "secret_key": "s",
               "region": "us-east-1", "addressing": "path", "max_attempts": 1},
    }  # fmt: skip
    config = {"storage": storage, "health": {"timeout": 3}}
    with RegistryProcess(tmp_path / "s3", config) as registry:
        result = run_healthcheck(registry.config_path, registry.port)
    assert result.returncode == 1
    assert "not ready: storage failed" in result.stderr, result.stderr
