"""A registry whose filesystem fills up: clear 507 errors, no resets, no tracebacks, nothing
half-written served, and pushes work again once space is freed, without a restart."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.raw_http import request_then_read
from tests.support.required import unavailable
from tests.support.server import RegistryProcess

pytestmark = pytest.mark.e2e

DISK = 16 << 20
BLOB = 3 << 20
LEFT = 1 << 20  # free space the filler leaves: a blob fails part way
LARGE = 32 << 20  # more than the socket buffers hold
NAME = "team/app"
INDEX = "application/vnd.oci.image.index.v1+json"
TYPE = {"Content-Type": INDEX}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        unavailable(f"cannot mount a tmpfs (root needed): {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.fixture
def registry(small_disk: Path, tmp_path: Path) -> Iterator[RegistryProcess]:
    config = {"storage": {"filesystem": {"root": str(small_disk / "data")}}}
    with RegistryProcess(tmp_path / "registry", config, workers=2) as server:
        yield server


def _digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _assert_full(response: httpx.Response) -> None:
    assert response.status_code == 507, response.text
    assert response.headers["content-type"] == "application/json"
    [error] = response.json()["errors"]
    assert error["code"] == "UNAVAILABLE"
    assert "storage is full" in error["message"]


def _push_monolithic(client: httpx.Client, data: bytes) -> httpx.Response:
    return client.post(f"/v2/{NAME}/blobs/uploads/?digest={_digest(data)}", content=data)


def _half_written(root: Path) -> list[Path]:
    return list(root.rglob(".tmp-*"))


def _fill(disk: Path) -> Path:
    """A file that leaves `LEFT` bytes free on `disk`."""
    stats = os.statvfs(disk)
    filler = disk / "filler"
    filler.write_bytes(b"\0" * (stats.f_bavail * stats.f_frsize - LEFT))
    return filler


def _offset(client: httpx.Client, session: str) -> int:
    """Bytes the session holds ("0-0" means none: ask for more than one byte)."""
    status = client.get(session)
    assert status.status_code == 204
    last = int(status.headers["range"].removeprefix("0-"))
    return last + 1 if last else 0


def test_full_disk(registry: RegistryProcess, small_disk: Path) -> None:
    blobs = [os.urandom(BLOB) for _ in range(3)]
    manifest = b'{"schemaVersion": 2, "mediaType": "%s", "manifests": []}' % INDEX.encode()
    with httpx.Client(base_url=registry.url, timeout=60) as client:
        assert _push_monolithic(client, blobs[0]).status_code == 201
        sessions = [client.post(f"/v2/{NAME}/blobs/uploads/") for _ in range(2)]
        patched, finished = (response.headers["location"] for response in sessions)
        filler = _fill(small_disk)

        # Every way of sending a blob fails cleanly: a monolithic POST, a streamed
        # PATCH, the PUT that ends a session with a body. (A connection reset or a
        # broken pipe would raise httpx.TransportError.)
        _assert_full(_push_monolithic(client, blobs[1]))
        # A client that closes after each request, and reads only once it has sent all:
        # the server reads the rest of the body before it closes, else a reset.
        status, body = request_then_read(
            registry.port,
            "POST",
            f"/v2/{NAME}/blobs/uploads/?digest={_digest(bytes(LARGE))}",
            LARGE,
            {"Connection": "close"},
        )
        assert status == 507
        assert json.loads(body)["errors"][0]["code"] == "UNAVAILABLE"
        _assert_full(client.patch(patched, content=blobs[2]))
        _assert_full(client.put(f"{finished}?digest={_digest(blobs[2])}", content=blobs[2]))
        # Small writes too, once the disk is full to the last page: a session, a manifest.
        _assert_full(client.post(f"/v2/{NAME}/blobs/uploads/"))
        _assert_full(client.put(f"/v2/{NAME}/manifests/v1", content=manifest, headers=TYPE))
        failures = 6

        # Nothing half-written is served, nothing half-written lies around.
        for data in blobs[1:]:
            assert client.head(f"/v2/{NAME}/blobs/{_digest(data)}").status_code == 404
        assert client.get(f"/v2/{NAME}/manifests/v1").status_code == 404
        assert _half_written(small_disk / "data") == []
        # A session keeps what reached the disk (a prefix of what was sent) and can go on.
        offset = _offset(client, patched)
        assert 0 < offset < BLOB  # the failed monolithic push left the space to the PATCH

        # Space returns: everything works again, without a restart.
        filler.unlink()
        assert _push_monolithic(client, blobs[1]).status_code == 201
        headers = {"Content-Range": f"{offset}-{BLOB - 1}"}
        resumed = client.patch(patched, content=blobs[2][offset:], headers=headers)
        assert resumed.status_code == 202, resumed.text
        assert client.put(f"{patched}?digest={_digest(blobs[2])}").status_code == 201
        assert client.delete(finished).status_code == 204
        response = client.put(f"/v2/{NAME}/manifests/v1", content=manifest, headers=TYPE)
        assert response.status_code == 201
        for data in blobs:
            assert client.get(f"/v2/{NAME}/blobs/{_digest(data)}").content == data

    log = registry.log()
    assert "Traceback" not in log and "Errno" not in log, log
    assert log.count("storage full") == failures, log
