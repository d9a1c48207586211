"""A 1 GiB blob pushed (monolithic and chunked) and pulled through a running server,
with the server's resident memory sampled throughout."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.support.server import RegistryProcess

# One worker: the limit is on what serving the blob costs, not on how many interpreters run.
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.registry_workers(1)]

BLOB_SIZE = 1 << 30
BLOCK = 4 << 20
CHUNK = 32 << 20
RSS_LIMIT = 150 * 10**6
TIMEOUT = httpx.Timeout(300.0)
_RANDOM_BLOCK = os.urandom(BLOCK)


def generated(seed: int, start: int = 0, end: int = BLOB_SIZE) -> Iterator[bytes]:
    """Bytes `start`..`end` of a deterministic 1 GiB stream, made block by block.

    Each 4 MiB block is one shared random block stamped with the seed and its number,
    so the content is unique per seed and never held whole in memory.
    """
    assert start % BLOCK == 0 and end % BLOCK == 0
    for number in range(start // BLOCK, end // BLOCK):
        yield seed.to_bytes(8, "big") + number.to_bytes(8, "big") + _RANDOM_BLOCK[16:]


def digest_of(chunks: Iterator[bytes]) -> str:
    hasher = hashlib.sha256()
    for chunk in chunks:
        hasher.update(chunk)
    return f"sha256:{hasher.hexdigest()}"


@dataclass
class Rss:
    idle: int
    peak: int


@contextlib.contextmanager
def sampled_rss(registry: RegistryProcess) -> Iterator[Rss]:
    """The server's resident memory, sampled every 50 ms in a background thread."""
    rss = Rss(idle=registry.rss_bytes(), peak=0)
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            rss.peak = max(rss.peak, registry.rss_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield rss
    finally:
        stop.set()
        sampler.join()
        rss.peak = max(rss.peak, rss.idle)


def start_upload(client: httpx.Client, name: str) -> str:
    response = client.post(f"/v2/{name}/blobs/uploads/")
    assert response.status_code == 202, response.text
    return response.headers["location"]


def push_monolithic(client: httpx.Client, name: str, seed: int, digest: str) -> None:
    location = start_upload(client, name)
    response = client.put(
        location,
        params={"digest": digest},
        content=generated(seed),
        headers={"Content-Length": str(BLOB_SIZE), "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 201, response.text


def push_chunked(client: httpx.Client, name: str, seed: int, digest: str) -> None:
    location = start_upload(client, name)
    for start in range(0, BLOB_SIZE, CHUNK):
        end = start + CHUNK
        response = client.patch(
            location,
            content=generated(seed, start, end),
            headers={
                "Content-Range": f"{start}-{end - 1}",
                "Content-Length": str(CHUNK),
                "Content-Type": "application/octet-stream",
            },
        )
        assert response.status_code == 202, response.text
        assert response.headers["range"] == f"0-{end - 1}"
        location = response.headers["location"]
    status = client.get(location)
    assert (status.status_code, status.headers["range"]) == (204, f"0-{BLOB_SIZE - 1}")
    response = client.put(location, params={"digest": digest})
    assert response.status_code == 201, response.text


def pulled_digest(client: httpx.Client, name: str, digest: str) -> str:
    with client.stream("GET", f"/v2/{name}/blobs/{digest}") as response:
        assert response.status_code == 200
        assert response.headers["content-length"] == str(BLOB_SIZE)
        assert response.headers["docker-content-digest"] == digest
        received = 0
        hasher = hashlib.sha256()
        for chunk in response.iter_bytes():
            received += len(chunk)
            hasher.update(chunk)
    assert received == BLOB_SIZE
    return f"sha256:{hasher.hexdigest()}"


@pytest.mark.parametrize("push", [push_monolithic, push_chunked], ids=["monolithic", "chunked"])
def test_1gib_blob_round_trip_in_flat_memory(registry: RegistryProcess, push) -> None:
    seed = 1 if push is push_monolithic else 2
    digest = digest_of(generated(seed))
    name = "big/blob"
    with (
        httpx.Client(base_url=registry.url, timeout=TIMEOUT) as client,
        sampled_rss(registry) as rss,
    ):
        push(client, name, seed, digest)
        head = client.head(f"/v2/{name}/blobs/{digest}")
        assert head.headers["content-length"] == str(BLOB_SIZE)
        assert pulled_digest(client, name, digest) == digest
    print(f"server RSS {rss.idle / 1e6:.1f} MB idle, peak {rss.peak / 1e6:.1f} MB")
    assert rss.peak < RSS_LIMIT, f"server RSS peaked at {rss.peak / 1e6:.1f} MB"
