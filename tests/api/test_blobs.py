"""Blob GET/HEAD with ranges (end-2) and DELETE (end-10)."""

from __future__ import annotations

import httpx
import pytest

from registry.app import create_app
from registry.config import Config
from storage.memory import MemoryDriver
from tests.api.helpers import digest_of, error_code, push_blob

DATA = bytes(range(256)) * 4  # 1024 bytes


async def test_get_and_head_headers(client: httpx.AsyncClient) -> None:
    digest = await push_blob(client, "team/app", DATA)
    for method in ("GET", "HEAD"):
        response = await client.request(method, f"/v2/team/app/blobs/{digest}")
        assert response.status_code == 200
        assert response.headers["content-length"] == "1024"
        assert response.headers["docker-content-digest"] == digest
        assert response.headers["etag"] == f'"{digest}"'
        assert response.headers["accept-ranges"] == "bytes"
        assert response.content == (DATA if method == "GET" else b"")


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [("bytes=0-9", 0, 9), ("bytes=1000-", 1000, 1023), ("bytes=-24", 1000, 1023),
     ("bytes=1020-5000", 1020, 1023), ("bytes=0-0", 0, 0),
     ("bytes=0-" + "9" * 5000, 0, 1023), ("bytes=-" + "9" * 5000, 0, 1023),
     ("bytes=" + "0" * 5000 + "1-2", 1, 2)],
)  # fmt: skip
async def test_range(client: httpx.AsyncClient, header: str, start: int, end: int) -> None:
    digest = await push_blob(client, "team/app", DATA)
    response = await client.get(f"/v2/team/app/blobs/{digest}", headers={"Range": header})
    assert response.status_code == 206
    assert response.content == DATA[start : end + 1]
    assert response.headers["content-range"] == f"bytes {start}-{end}/1024"
    assert response.headers["content-length"] == str(end - start + 1)


@pytest.mark.parametrize(
    "header",
    ["bytes=1024-", "bytes=2000-3000", "bytes=-0", "bytes=9-3", "bytes=500-0",
     "bytes=" + "9" * 5000 + "-", "bytes=" + "9" * 5000 + "-" + "9" * 5001],
)  # fmt: skip
async def test_unsatisfiable_range(client: httpx.AsyncClient, header: str) -> None:
    digest = await push_blob(client, "team/app", DATA)
    response = await client.get(f"/v2/team/app/blobs/{digest}", headers={"Range": header})
    assert response.status_code == 416
    assert response.headers["content-range"] == "bytes */1024"
    assert error_code(response) == "SIZE_INVALID"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-1"])
async def test_ignored_range_sends_everything(client: httpx.AsyncClient, header: str) -> None:
    digest = await push_blob(client, "team/app", DATA)
    response = await client.get(f"/v2/team/app/blobs/{digest}", headers={"Range": header})
    assert response.status_code == 200
    assert response.content == DATA


async def test_if_none_match(client: httpx.AsyncClient) -> None:
    digest = await push_blob(client, "team/app", DATA)
    response = await client.get(
        f"/v2/team/app/blobs/{digest}", headers={"If-None-Match": f'"{digest}"'}
    )
    assert response.status_code == 304
    assert response.content == b""


async def test_unknown_blob(client: httpx.AsyncClient) -> None:
    digest = digest_of(b"never pushed")
    for method in ("GET", "HEAD"):
        response = await client.request(method, f"/v2/team/app/blobs/{digest}")
        assert response.status_code == 404
    assert error_code(await client.get(f"/v2/team/app/blobs/{digest}")) == "BLOB_UNKNOWN"


async def test_repository_serves_only_its_own_blobs(client: httpx.AsyncClient) -> None:
    digest = await push_blob(client, "team/app", DATA)
    response = await client.get(f"/v2/team/other/blobs/{digest}")
    assert response.status_code == 404
    assert error_code(response) == "BLOB_UNKNOWN"


@pytest.mark.parametrize("digest", ["sha256:short", "sha256", "sha1:" + "a" * 40])
async def test_invalid_digest(client: httpx.AsyncClient, digest: str) -> None:
    response = await client.get(f"/v2/team/app/blobs/{digest}")
    assert response.status_code == 400
    assert error_code(response) == "DIGEST_INVALID"


async def test_delete_blob(client: httpx.AsyncClient) -> None:
    digest = await push_blob(client, "team/app", DATA)
    await push_blob(client, "team/other", DATA)
    response = await client.delete(f"/v2/team/app/blobs/{digest}")
    assert response.status_code == 202
    assert (await client.get(f"/v2/team/app/blobs/{digest}")).status_code == 404
    # Other repositories keep their link to the shared content.
    assert (await client.get(f"/v2/team/other/blobs/{digest}")).content == DATA
    response = await client.delete(f"/v2/team/app/blobs/{digest}")
    assert response.status_code == 404
    assert error_code(response) == "BLOB_UNKNOWN"


async def test_delete_disabled(app, client: httpx.AsyncClient) -> None:
    digest = await push_blob(client, "team/app", DATA)
    app.state.config.storage.delete.enabled = False
    response = await client.delete(f"/v2/team/app/blobs/{digest}")
    assert response.status_code == 405
    assert error_code(response) == "UNSUPPORTED"
    assert (await client.get(f"/v2/team/app/blobs/{digest}")).status_code == 200


async def test_large_blob_streams_in_chunks(client: httpx.AsyncClient) -> None:
    data = bytes(range(256)) * 12_000  # ~3 MiB: more than one read chunk
    digest = await push_blob(client, "team/app", data)
    async with client.stream("GET", f"/v2/team/app/blobs/{digest}") as response:
        received = b"".join([chunk async for chunk in response.aiter_raw()])
    assert received == data


class RedirectingDriver(MemoryDriver):
    """Stands in for a driver with presigned URLs (S3 with `redirect: true`)."""

    async def redirect_url(self, key: str) -> str | None:
        return f"http://storage.test/{key}?signed"


@pytest.mark.parametrize("headers", [{}, {"Range": "bytes=10-19"}], ids=["whole", "range"])
async def test_get_redirects_to_storage(headers: dict[str, str]) -> None:
    app = create_app(Config(), RedirectingDriver())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as c:
        digest = await push_blob(c, "team/app", DATA)
        response = await c.get(f"/v2/team/app/blobs/{digest}", headers=headers)
        assert response.status_code == 307
        assert response.headers["location"].startswith("http://storage.test/blobs/sha256/")
        assert response.headers["docker-content-digest"] == digest
        head = await c.head(f"/v2/team/app/blobs/{digest}")  # HEAD is answered here
        assert (head.status_code, head.headers["content-length"]) == (200, "1024")
        other = await c.get(f"/v2/team/other/blobs/{digest}")  # links still checked first
        assert other.status_code == 404
