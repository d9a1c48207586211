"""The S3 driver through running `dockyard serve` processes and real clients:
stateless replicas sharing a bucket, SeaweedFS stopped mid-upload, and docker pulling
through presigned redirects. (The 1 GiB round trip in flat memory runs on S3 too:
tests/e2e/test_large_blob.py, through the `registry` fixture's STORAGE.)"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.seaweedfs import SeaweedFS, start_seaweedfs, unique_prefix
from tests.support.server import RegistryProcess

pytestmark = pytest.mark.e2e

MiB = 1 << 20


def pattern(size: int, seed: int = 0) -> Iterator[bytes]:
    """`size` bytes of varied content, produced 1 MiB at a time."""
    block = hashlib.sha256(str(seed).encode()).digest() * (MiB // 32)
    for start in range(0, size, MiB):
        yield bytes(block[: min(MiB, size - start)])
        block = block[1:] + block[:1]


def sha256_of(chunks: Iterator[bytes]) -> str:
    hasher = hashlib.sha256()
    for chunk in chunks:
        hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()


def patch(client: httpx.Client, location: str, offset: int, data: bytes) -> httpx.Response:
    return client.patch(
        location,
        content=data,
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{offset}-{offset + len(data) - 1}",
        },
    )


def absolute(base: str, location: str) -> str:
    return location if location.startswith("http") else base + location


@pytest.fixture
def s3_storage(seaweedfs: SeaweedFS, s3_bucket: str) -> dict[str, Any]:
    return seaweedfs.storage_config(s3_bucket, unique_prefix())


def test_one_chunked_upload_alternating_between_two_processes(
    tmp_path: Path, s3_storage: dict[str, Any]
) -> None:
    data = b"".join(pattern(23 * MiB, seed=1))
    digest = sha256_of(iter([data]))
    # Chunk sizes below, across and above the part size, so parts and tails mix.
    cuts = [0, 6 * MiB, 6 * MiB + 100, 9 * MiB, 21 * MiB, len(data)]
    config = {"storage": s3_storage}
    with (
        RegistryProcess(tmp_path / "a", config) as first,
        RegistryProcess(tmp_path / "b", config) as second,
        httpx.Client(timeout=60) as client,
    ):
        servers = [first, second]
        started = client.post(f"{first.url}/v2/team/app/blobs/uploads/")
        assert started.status_code == 202
        location = started.headers["Location"]
        for number, (start, end) in enumerate(itertools.pairwise(cuts)):
            server = servers[(number + 1) % 2]
            answer = patch(client, absolute(server.url, location), start, data[start:end])
            assert answer.status_code == 202, answer.text
            assert answer.headers["Range"] == f"0-{end - 1}"
            status = client.get(absolute(servers[number % 2].url, location))
            assert status.headers["Range"] == f"0-{end - 1}"
        finished = client.put(absolute(first.url, location), params={"digest": digest})
        assert finished.status_code == 201, finished.text
        for server in servers:
            blob = client.get(f"{server.url}/v2/team/app/blobs/{digest}")
            assert blob.status_code == 200
            assert blob.headers["Docker-Content-Digest"] == digest
            assert blob.content == data


@pytest.fixture
def own_seaweedfs(tmp_path: Path) -> Iterator[SeaweedFS]:
    """A SeaweedFS of this test's own, since the test stops it."""
    server = start_seaweedfs(tmp_path / "seaweedfs")
    yield server
    server.stop()


def test_seaweedfs_stopped_mid_upload_then_retry_succeeds(
    tmp_path: Path, own_seaweedfs: SeaweedFS
) -> None:
    bucket = own_seaweedfs.create_bucket("faults")
    storage = own_seaweedfs.storage_config(bucket, connect_timeout=1, max_attempts=2)
    data = b"".join(pattern(14 * MiB, seed=2))
    digest = sha256_of(iter([data]))
    blob_url = f"/v2/team/app/blobs/{digest}"
    with (
        RegistryProcess(tmp_path / "registry", {"storage": storage}) as registry,
        httpx.Client(base_url=registry.url, timeout=60) as client,
    ):
        location = client.post("/v2/team/app/blobs/uploads/").headers["Location"]
        assert patch(client, location, 0, data[: 11 * MiB]).status_code == 202

        own_seaweedfs.stop()
        failed = patch(client, location, 11 * MiB, data[11 * MiB :])
        assert failed.status_code == 503
        assert failed.json()["errors"][0]["code"] == "UNAVAILABLE"
        assert client.put(location, params={"digest": digest}).status_code == 503
        assert client.get(blob_url).status_code == 503

        own_seaweedfs.start()
        assert client.head(blob_url).status_code == 404  # nothing half-written is served
        offset = int(client.get(location).headers["Range"].split("-")[1]) + 1
        assert offset == 11 * MiB
        assert patch(client, location, offset, data[offset:]).status_code == 202
        assert client.put(location, params={"digest": digest}).status_code == 201
        assert client.get(blob_url).content == data
    assert own_seaweedfs.secret_key not in registry.log()


def test_docker_pull_follows_presigned_redirects(
    dockerd: Any, tmp_path: Path, seaweedfs: SeaweedFS, s3_bucket: str
) -> None:
    storage = seaweedfs.storage_config(s3_bucket, unique_prefix(), redirect=True)
    with RegistryProcess(tmp_path / "registry", {"storage": storage}) as registry:
        image = f"{registry.host}/team/redirected:1"
        dockerd.build_image(image, tmp_path / "ctx")
        dockerd.run("push", image)
        dockerd.run("rmi", image)
        dockerd.run("pull", image)
        assert "layer-0" in dockerd.run("run", "--rm", "--network", "none", image).stdout
        blob_gets = re.findall(
            r'"GET /v2/team/redirected/blobs/sha256(?::|%3A)\w+ HTTP/1.1" (\d+)', registry.log()
        )
    assert blob_gets, "docker fetched no blob"
    assert set(blob_gets) == {"307"}  # every blob came from S3, none through the registry
