"""Run `dockyard serve` as a subprocess on a free loopback port, for real-client tests."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import psutil
import yaml

from tests.support.processes import kill_process_group, stop_process

ROOT = Path(__file__).resolve().parents[2]


def wait_until_serving(
    process: subprocess.Popen[bytes],
    url: str,
    timeout: float,
    log: Callable[[], str],
    verify: Any = False,
) -> None:
    """Poll `url`/v2/ until it answers (any status); raise with the log if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited early:\n{log()}")
        try:
            httpx.get(f"{url}/v2/", timeout=1.0, verify=verify)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s:\n{log()}")


# Below Linux's ephemeral range (32768-60999 by default): a port from that range can be
# taken as the source port of any outgoing connection, and a server restarted on its
# port (tests that stop and start one) then fails to bind with "Address already in use".
_PORTS = range(20000, 32768)


def free_port() -> int:
    """A loopback port free now, outside the ephemeral range."""
    for _ in range(1000):
        port = random.choice(_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port in {_PORTS}")


class RegistryProcess:
    """A running registry: `host` is `127.0.0.1:PORT`, `url` its base URL."""

    def __init__(
        self,
        workdir: Path,
        config: dict[str, Any] | None = None,
        workers: int = 1,
        env: dict[str, str] | None = None,
        scheme: str = "http",
        client_tls: ssl.SSLContext | None = None,
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"{scheme}://{self.host}"
        workdir.mkdir(parents=True, exist_ok=True)
        settings: dict[str, Any] = {"storage": {"filesystem": {"root": str(workdir / "data")}}}
        _merge(settings, config or {})
        self.config_path = workdir / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(settings))
        self.log_path = workdir / "server.log"
        self.workers = workers
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_")},
            "PYTHONPATH": str(ROOT),
            **(env or {}),
        }
        self.client_tls = client_tls  # for the readiness probe of a registry asking for mTLS
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> RegistryProcess:
        command = [
            sys.executable, "-m", "registry", "serve",
            "--config", str(self.config_path),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", str(self.workers),
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,  # a process group of its own, for `kill`
            )
        try:
            wait_until_serving(self.process, self.url, timeout, self.log, self.client_tls or False)
        except RuntimeError:
            self.stop()
            raise
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def rss_bytes(self) -> int:
        """Resident memory of the server and all its worker processes now."""
        assert self.process is not None
        parent = psutil.Process(self.process.pid)
        processes = [parent, *parent.children(recursive=True)]
        total = 0
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += process.memory_info().rss
        return total

    def stop(self) -> None:
        stop_process(self.process, timeout=15)

    def kill(self) -> None:
        """kill -9 the server and all its workers at once (a crash); `start` restarts it."""
        if self.process is not None:
            kill_process_group(self.process)

    def __enter__(self) -> RegistryProcess:
        # `with RegistryProcess(...).start()` must not start a second, unstopped server.
        running = self.process is not None and self.process.poll() is None
        return self if running else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _merge(target: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value
