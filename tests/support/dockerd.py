"""Start a private dockerd (vfs storage, no iptables, no bridge) for real-client tests.

Each daemon has its own data root, exec root, socket and client config directory,
so several can run on one machine; it is stopped by the PID we started.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

BUSYBOX = Path("/bin/busybox")


class DockerUnavailableError(Exception):
    """Why a daemon could not be started here."""


def docker_client() -> str | None:
    # Prefer Debian's client, which matches Debian's daemon.
    for candidate in ("/usr/bin/docker", shutil.which("docker")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


class DockerDaemon:
    def __init__(self, workdir: Path, registry_mirrors: Sequence[str] = ()) -> None:
        """`registry_mirrors`: URLs dockerd pulls Docker Hub images through."""
        self.workdir = workdir
        self.registry_mirrors = list(registry_mirrors)
        self.socket = workdir / "docker.sock"
        self.client_config = workdir / "client"
        self.process: subprocess.Popen[bytes] | None = None
        self.client = docker_client() or "docker"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DOCKER_HOST": f"unix://{self.socket}",
            "DOCKER_CONFIG": str(self.client_config),
            "DOCKER_BUILDKIT": "0",
        }

    def start(self, timeout: float = 60.0) -> DockerDaemon:
        if os.geteuid() != 0:
            raise DockerUnavailableError("dockerd needs root and the tests do not run as root")
        dockerd = shutil.which("dockerd")
        if dockerd is None or docker_client() is None:
            raise DockerUnavailableError("dockerd or the docker CLI is not installed (docker.io)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.client_config.mkdir(exist_ok=True)
        namespace = f"dockyard-test-{uuid.uuid4().hex[:12]}"
        command = [
            dockerd,
            "--storage-driver=vfs", "--iptables=false", "--ip-masq=false", "--bridge=none",
            f"--data-root={self.workdir / 'root'}", f"--exec-root={self.workdir / 'exec'}",
            f"--pidfile={self.workdir / 'docker.pid'}", f"--host=unix://{self.socket}",
            # dockerd uses a system containerd when one runs (as after installing docker.io):
            # keep out of the system daemon's namespace there.
            f"--containerd-namespace={namespace}",
            f"--containerd-plugins-namespace={namespace}-plugins",
            *(f"--registry-mirror={mirror}" for mirror in self.registry_mirrors),
        ]  # fmt: skip
        log = open(self.workdir / "dockerd.log", "ab")  # noqa: SIM115 - kept open while it runs
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._release_mounts()
                raise DockerUnavailableError(f"dockerd exited:\n{self.log()[-2000:]}")
            if self.socket.exists() and self.run("version", check=False).returncode == 0:
                return self
            time.sleep(0.3)
        self.stop()
        raise DockerUnavailableError(f"dockerd did not start within {timeout}s")

    def log(self) -> str:
        path = self.workdir / "dockerd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def run(
        self, *args: str, check: bool = True, input: bytes | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against this daemon; raises with its output on failure."""
        result = subprocess.run(
            [self.client, *args],
            env=self.env,
            input=input.decode() if input is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def build_image(self, tag: str, context: Path, extra_layers: int = 2) -> None:
        """Build an image `FROM scratch` with busybox-static and `extra_layers` small layers."""
        context.mkdir(parents=True, exist_ok=True)
        shutil.copy(BUSYBOX, context / "busybox")
        lines = [
            "FROM scratch",
            "COPY busybox /bin/busybox",
            'RUN ["/bin/busybox", "--install", "-s", "/bin"]',
        ]
        for layer in range(extra_layers):
            lines.append(f"RUN echo layer-{layer}-{tag} > /layer{layer}.txt")
        lines.append('CMD ["/bin/sh", "-c", "cat /layer*.txt"]')
        (context / "Dockerfile").write_text("\n".join(lines) + "\n")
        self.run("build", "--network", "none", "-t", tag, str(context))

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._release_mounts()

    def _release_mounts(self) -> None:
        """Unmount what dockerd left mounted below our directory (it bind-mounts its data
        root and unmounts it only on a clean shutdown), so the directory can be removed."""
        with open("/proc/self/mounts") as mounts:
            points = [Path(line.split()[1]) for line in mounts]
        for point in sorted(points, reverse=True):
            if point.is_relative_to(self.workdir):
                subprocess.run(["/bin/umount", str(point)], capture_output=True, check=False)
