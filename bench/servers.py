"""The two servers under test, and a sampler of their peak memory."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import threading
from pathlib import Path
from typing import Any, Protocol

import psutil
import yaml

from tests.support.processes import stop_process
from tests.support.server import RegistryProcess, free_port, wait_until_serving


class Server(Protocol):
    host: str
    url: str
    process: subprocess.Popen[bytes] | None
    log_path: Path

    def stop(self) -> None: ...


def report_if_died(label: str, server: Server, lines: int = 40) -> None:
    """Print how a server that exited during the run ended: its log goes with the workdir.
    A Go panic's cause is on its first line, above a stack of goroutines: from there."""
    if server.process is None or server.process.poll() is None:
        return
    log = server.log_path.read_text(errors="replace").splitlines()
    panics = [i for i, line in enumerate(log) if line.startswith(("panic:", "fatal error:"))]
    shown = log[panics[0] : panics[0] + lines] if panics else log[-lines:]
    print(f"bench: {label} exited with code {server.process.returncode}; its log:")
    print("\n".join(shown), flush=True)


# Lines of a server's log that say something went wrong: Dockyard's (Python logging's
# level names) and the reference's (logrus fields).
_PROBLEMS = re.compile(r"^(WARNING|ERROR|CRITICAL)\b|level=(warning|error|fatal|panic)\b")


def report_problems(label: str, server: Server, lines: int = 20) -> None:
    """Print the last warnings and errors of a server's log, when a run failed: a 503's
    cause ("storage unavailable: ...") is logged there, and the log goes with the
    workdir."""
    try:
        log = server.log_path.read_text(errors="replace").splitlines()
    except OSError:
        return  # no log to show: the run's own error says enough
    problems = [line for line in log if _PROBLEMS.search(line)][-lines:]
    if problems:
        print(f"bench: the last warnings and errors of {label}'s log:")
        print("\n".join(problems), flush=True)


class ReferenceRegistry:
    """Debian's `docker-registry` (CNCF distribution) with its default settings, but for
    its upload purger. That starts at a random minute of the first hour and walks every
    repository's uploads folder; on S3 it crashed the server in the middle of a run
    (2026-12-04). Dockyard's counterpart, its collector, first runs after `gc.interval`
    (an hour), past the end of a run."""

    def __init__(
        self, workdir: Path, htpasswd: Path | None = None, storage: dict[str, Any] | None = None
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        workdir.mkdir(parents=True, exist_ok=True)
        # Debian's /etc/docker/registry/config.yml, with our root and address.
        settings = {
            "version": 0.1,
            "log": {"fields": {"service": "registry"}},
            "storage": {
                "cache": {"blobdescriptor": "inmemory"},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
                **(storage or {"filesystem": {"rootdirectory": str(workdir / "data")}}),
            },
            "http": {"addr": self.host, "headers": {"X-Content-Type-Options": ["nosniff"]}},
        }
        if htpasswd is not None:
            settings["auth"] = {"htpasswd": {"realm": "basic-realm", "path": str(htpasswd)}}
        self.config_path = workdir / "config.yml"
        self.config_path.write_text(yaml.safe_dump(settings))
        self.log_path = workdir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> ReferenceRegistry:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                ["docker-registry", "serve", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                # distribution 2.8's s3 driver panics at start when AWS_CA_BUNDLE is set
                # ("HTTPClient's transport unsupported type"); the bench's S3 is plain HTTP.
                env={k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"},
            )
        try:
            wait_until_serving(self.process, self.url, timeout, self.log_path.read_text)
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        stop_process(self.process, timeout=15)


def start_dockyard(
    workdir: Path,
    htpasswd: Path | None = None,
    storage: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
) -> RegistryProcess:
    """`dockyard serve` with default settings (one worker per CPU), on loopback; `settings`
    are config sections set otherwise."""
    config: dict[str, Any] = {**(settings or {}), **({"storage": storage} if storage else {})}
    if htpasswd:
        config["auth"] = {"mode": "basic", "htpasswd": str(htpasswd)}
    return RegistryProcess(workdir, config, workers=os.cpu_count() or 1).start()


def version_of(command: list[str]) -> str:
    """First line a `--version` style command prints."""
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = (result.stdout + result.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


class PeakMemory:
    """Samples the resident memory of each server's process tree every `interval` s."""

    def __init__(self, servers: dict[str, Server], interval: float = 0.2) -> None:
        self._servers = servers
        self._interval = interval
        self._stop = threading.Event()
        self.total = dict.fromkeys(servers, 0)
        self.per_process = dict.fromkeys(servers, 0)
        self.processes = dict.fromkeys(servers, 0)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self, label: str, server: Server) -> None:
        assert server.process is not None
        try:
            parent = psutil.Process(server.process.pid)
            processes = [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        sizes = []
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                sizes.append(process.memory_info().rss)
        self.total[label] = max(self.total[label], sum(sizes))
        self.per_process[label] = max(self.per_process[label], max(sizes, default=0))
        self.processes[label] = max(self.processes[label], len(sizes))

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            for label, server in self._servers.items():
                self._sample(label, server)
