"""Metrics and readiness of real servers under real clients: a docker push and pull
counted over two workers, and `/readyz` following SeaweedFS down and up again."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from tests.support.dockerd import DockerDaemon
from tests.support.metrics import (
    Samples,
    parse,
    published_requests,
    scrape,
    total,
    wait_until,
)
from tests.support.seaweedfs import start_seaweedfs
from tests.support.server import RegistryProcess

pytestmark = pytest.mark.e2e

ACCESS_LINE = re.compile(r'^\S+ \S+ "(\w+) (\S+) HTTP/[\d.]+" (\d+|-) ', re.MULTILINE)


REQUESTS = "registry_http_requests_total"


def served(samples: Samples) -> float:
    """Requests counted, but for the scrapes."""
    return total(samples, REQUESTS) - total(samples, REQUESTS, route="/metrics")


def test_push_and_pull_counted_across_two_workers(dockerd: DockerDaemon, tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    with RegistryProcess(tmp_path / "registry", workers=2, env={"TMPDIR": str(temp)}) as registry:
        image = f"{registry.host}/team/counted:1"
        dockerd.build_image(image, tmp_path / "context")
        try:
            dockerd.run("push", image)
            dockerd.run("rmi", image)
            dockerd.run("pull", image)
        finally:
            dockerd.run("rmi", "--force", image, check=False)
        logged = [m for m in ACCESS_LINE.finditer(registry.log()) if m[2] != "/metrics"]
        pushed = sum(1 for m in logged if m[1] == "PUT" and "/manifests/" in m[2])
        assert pushed == 1 and any(m[1] == "GET" and "/blobs/sha256:" in m[2] for m in logged)
        url = f"{registry.url}/metrics"
        blob_gets = sum(1 for m in logged if m[1] == "GET" and "/blobs/sha256:" in m[2])
        # Each worker publishes within a second; then any worker answers for both.
        wait_until(lambda: published_requests(temp) >= len(logged))
        assert published_requests(temp) == len(logged)
        for _ in range(6):  # on fresh connections: any worker may answer each scrape
            samples = parse(scrape(url).text)
            assert served(samples) == len(logged)
            manifests = "/v2/{name}/manifests/{reference}"
            assert total(samples, REQUESTS, method="PUT", route=manifests, code="201") == 1
            blobs = "/v2/{name}/blobs/{digest}"
            assert total(samples, REQUESTS, method="GET", route=blobs) == blob_gets


def ready(url: str) -> httpx.Response:
    with httpx.Client(timeout=30) as client:
        return client.get(f"{url}/readyz")


def wait_for(url: str, status: int, timeout: float) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = ready(url)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.5)


def test_readiness_follows_seaweedfs_down_and_up(tmp_path: Path) -> None:
    seaweedfs = start_seaweedfs(tmp_path / "seaweedfs")
    try:
        bucket = seaweedfs.create_bucket("readiness")
        storage = seaweedfs.storage_config(bucket, max_attempts=1, connect_timeout=1.0)
        config = {"storage": storage, "health": {"timeout": 3.0}}
        with RegistryProcess(tmp_path / "registry", config, workers=2) as registry:
            assert ready(registry.url).status_code == 200
            seaweedfs.stop()
            down = ready(registry.url)
            assert down.status_code == 503
            assert down.json()["reason"].startswith("storage ")
            assert (registry_alive := httpx.get(f"{registry.url}/healthz")).status_code == 200
            assert registry_alive.json() == {"status": "alive"}
            seaweedfs.start()
            back = wait_for(registry.url, 200, timeout=60)
            assert back.status_code == 200, back.text
    finally:
        seaweedfs.stop()
