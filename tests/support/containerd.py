"""Start a private containerd (its own root, state and socket) for `ctr` tests; stopped
by the PID we started."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from tests.support.processes import stop_process


class ContainerdUnavailableError(Exception):
    """Why a containerd could not be started here."""


class Containerd:
    def __init__(self, workdir: Path) -> None:
        """`workdir` must be short: the socket's path must fit in 108 bytes."""
        self.workdir = workdir
        self.socket = workdir / "containerd.sock"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Containerd:
        binary = shutil.which("containerd")
        if binary is None or shutil.which("ctr") is None:
            raise ContainerdUnavailableError("containerd or ctr is not installed (containerd)")
        config = self.workdir / "config.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{self.workdir / "root"}"\n'
            f'state = "{self.workdir / "state"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{self.socket}"\n'
            f'[ttrpc]\n  address = "{self.socket}.ttrpc"\n'
        )
        log = open(self.workdir / "containerd.log", "ab")  # noqa: SIM115 - open while it runs
        self.process = subprocess.Popen(
            [binary, "--config", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ContainerdUnavailableError(f"containerd exited:\n{self.log()[-2000:]}")
            if self.socket.exists() and self.ctr("version", check=False).returncode == 0:
                return self
            time.sleep(0.2)
        self.stop()
        raise ContainerdUnavailableError(f"containerd did not start within {timeout}s")

    def log(self) -> str:
        path = self.workdir / "containerd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["ctr", "--address", str(self.socket), *args],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def stop(self) -> None:
        stop_process(self.process, timeout=15)
