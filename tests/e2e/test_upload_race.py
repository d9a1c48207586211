"""Issue 9's reproduction on real servers: two `dockyard serve` processes on one storage,
a chunked PATCH held open mid-body on one while the other is asked to finish the upload.
Whatever they do, the bytes served under a digest must hash to it."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from pathlib import Path
from typing import Any

import botocore.exceptions
import httpx
import pytest

from tests.support.seaweedfs import SeaweedFS
from tests.support.server import RegistryProcess

pytestmark = pytest.mark.e2e


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def send_held_patch(server: RegistryProcess, location: str, first_chunk: bytes) -> socket.socket:
    """Open a chunked PATCH and send one chunk of it, leaving the body unfinished."""
    held = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    head = (
        f"PATCH {location} HTTP/1.1\r\nHost: {server.host}\r\n"
        "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    held.sendall(head.encode() + f"{len(first_chunk):x}\r\n".encode() + first_chunk + b"\r\n")
    return held


def finish_held_patch(held: socket.socket) -> int:
    """Send the last chunk; the status of the PATCH."""
    held.sendall(b"0\r\n\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer:
        piece = held.recv(65536)
        if not piece:
            break
        answer += piece
    held.close()
    return int(answer.split(b" ", 2)[1])


def writer_is_owned(
    storage: dict[str, Any], root: Path, seaweedfs: SeaweedFS | None, upload: str
) -> bool:
    """Whether a process owns the session's data now, seen without taking it: an flock
    listed in /proc/locks on the filesystem, a non-empty lease object on S3."""
    if seaweedfs is None:
        data = root / "uploads" / upload / "data"
        try:
            inode = f":{os.stat(data).st_ino} "
        except FileNotFoundError:
            return False
        locks = Path("/proc/locks").read_text()
        return any("FLOCK" in line and inode in line for line in locks.splitlines())
    s3 = storage["s3"]
    key = f"{s3['prefix']}/_writers/uploads/{upload}/data/lease"
    try:
        lease = seaweedfs.client().get_object(Bucket=s3["bucket"], Key=key)["Body"].read()
    except botocore.exceptions.ClientError:  # no lease object: nobody owns it
        return False
    return bool(lease)


def test_a_put_racing_a_held_patch_never_stores_other_bytes(
    request: pytest.FixtureRequest, tmp_path: Path, storage_config: dict[str, Any]
) -> None:
    root = tmp_path / "shared"
    storage = {**storage_config, "filesystem": {"root": str(root)}}
    seaweedfs = request.getfixturevalue("seaweedfs") if storage["driver"] == "s3" else None
    content, garbage = os.urandom(100_000), b"garbage!" * 128
    digest = sha256(content)
    with (
        RegistryProcess(tmp_path / "a", {"storage": storage}) as first,
        RegistryProcess(tmp_path / "b", {"storage": storage}) as second,
        httpx.Client(base_url=first.url, timeout=60) as on_first,
        httpx.Client(base_url=second.url, timeout=60) as on_second,
    ):
        location = on_first.post("/v2/e2e/race/blobs/uploads/").headers["Location"]
        upload = location.rsplit("/", 1)[1]
        assert on_first.patch(location, content=content).status_code == 202

        held = send_held_patch(first, location, garbage)
        for _ in range(200):  # until the first server owns the session (bounded)
            if writer_is_owned(storage, root, seaweedfs, upload):
                break
            time.sleep(0.05)
        racing = on_second.put(location, params={"digest": digest})
        held_status = finish_held_patch(held)

        for client in (on_first, on_second):  # nothing was stored but the hashed bytes
            assert_served_bytes_hash_to(client, "e2e/race", digest)
        assert racing.status_code == 416, racing.text
        assert racing.json()["errors"][0]["code"] == "BLOB_UPLOAD_INVALID"
        assert held_status == 202
        late = on_second.put(location, params={"digest": digest})
        assert late.json()["errors"][0]["code"] == "DIGEST_INVALID"  # holds content+garbage

        # Another repository pushes the same content: it is stored (or kept) exactly.
        pushed = on_second.post(
            "/v2/e2e/other/blobs/uploads/", params={"digest": digest}, content=content
        )
        assert pushed.status_code == 201, pushed.text
        for client in (on_first, on_second):
            assert_served_bytes_hash_to(client, "e2e/race", digest)
            assert client.get(f"/v2/e2e/other/blobs/{digest}").content == content


def assert_served_bytes_hash_to(client: httpx.Client, name: str, digest: str) -> None:
    served = client.get(f"/v2/{name}/blobs/{digest}")
    assert served.status_code in (200, 404)
    if served.status_code == 200:
        assert sha256(served.content) == digest


def test_a_killed_writer_frees_its_upload(tmp_path: Path) -> None:
    """kill -9 of the server writing to an upload frees it at once on the filesystem (the
    kernel drops the flock); S3 leases free themselves after `LEASE_SECONDS`."""
    root = tmp_path / "shared"
    storage = {"driver": "filesystem", "filesystem": {"root": str(root)}}
    content = os.urandom(50_000)
    with (
        RegistryProcess(tmp_path / "a", {"storage": storage}) as first,
        RegistryProcess(tmp_path / "b", {"storage": storage}) as second,
        httpx.Client(base_url=first.url, timeout=60) as on_first,
        httpx.Client(base_url=second.url, timeout=60) as on_second,
    ):
        location = on_first.post("/v2/e2e/killed/blobs/uploads/").headers["Location"]
        upload = location.rsplit("/", 1)[1]
        assert on_first.patch(location, content=content).status_code == 202
        held = send_held_patch(first, location, b"never finished")
        for _ in range(200):
            if writer_is_owned(storage, root, None, upload):
                break
            time.sleep(0.05)
        assert on_second.put(location, params={"digest": sha256(content)}).status_code == 416
        assert first.process is not None
        first.process.kill()
        first.process.wait(timeout=10)
        held.close()
        finished = on_second.put(location, params={"digest": sha256(content)})
        assert finished.status_code == 201, finished.text
        assert on_second.get(f"/v2/e2e/killed/blobs/{sha256(content)}").content == content
