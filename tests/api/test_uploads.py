"""Blob uploads: POST (end-4a/b/c), PATCH (end-5), PUT (end-6), status (end-13),
cancel (end-14) and cross-repository mount (end-11)."""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest

from tests.api.helpers import digest_of, error_code, push_blob, raw_request

DATA = b"0123456789abcdefghij"
DIGEST = digest_of(DATA)


async def start(client: httpx.AsyncClient, name: str = "team/app", query: str = "") -> str:
    response = await client.post(f"/v2/{name}/blobs/uploads/{query}")
    assert response.status_code == 202, response.text
    assert response.headers["range"] == "0-0"
    assert response.headers["docker-upload-uuid"] in response.headers["location"]
    return response.headers["location"]


async def assert_blob(client: httpx.AsyncClient, name: str, digest: str, data: bytes) -> None:
    response = await client.get(f"/v2/{name}/blobs/{digest}")
    assert response.status_code == 200
    assert response.content == data


async def test_post_then_put_monolithic(client: httpx.AsyncClient) -> None:
    location = await start(client)
    response = await client.put(f"{location}?digest={DIGEST}", content=DATA)
    assert response.status_code == 201
    assert response.headers["location"] == f"/v2/team/app/blobs/{DIGEST}"
    assert response.headers["docker-content-digest"] == DIGEST
    await assert_blob(client, "team/app", DIGEST, DATA)


async def test_single_post_with_digest(client: httpx.AsyncClient) -> None:
    response = await client.post(f"/v2/team/app/blobs/uploads/?digest={DIGEST}", content=DATA)
    assert response.status_code == 201
    assert response.headers["docker-content-digest"] == DIGEST
    await assert_blob(client, "team/app", DIGEST, DATA)


async def test_chunked_with_content_range(client: httpx.AsyncClient) -> None:
    location = await start(client)
    response = await client.patch(location, content=DATA[:8], headers={"Content-Range": "0-7"})
    assert response.status_code == 202
    assert response.headers["range"] == "0-7"
    location = response.headers["location"]
    response = await client.patch(location, content=DATA[8:15], headers={"Content-Range": "8-14"})
    assert response.headers["range"] == "0-14"
    response = await client.put(
        f"{location}?digest={DIGEST}", content=DATA[15:], headers={"Content-Range": "15-19"}
    )
    assert response.status_code == 201, response.text
    await assert_blob(client, "team/app", DIGEST, DATA)


async def test_streamed_patch_without_content_range(client: httpx.AsyncClient) -> None:
    location = await start(client)

    async def body():  # chunked transfer encoding, as docker sends layers
        for i in range(0, len(DATA), 3):
            yield DATA[i : i + 3]

    response = await client.patch(location, content=body())
    assert response.status_code == 202
    assert response.headers["range"] == f"0-{len(DATA) - 1}"
    response = await client.put(f"{location}?digest={DIGEST}")
    assert response.status_code == 201
    await assert_blob(client, "team/app", DIGEST, DATA)


async def test_status_reports_offset(client: httpx.AsyncClient) -> None:
    location = await start(client)
    response = await client.get(location)
    assert response.status_code == 204
    assert response.headers["range"] == "0-0"
    await client.patch(location, content=DATA[:5], headers={"Content-Range": "0-4"})
    response = await client.get(location)
    assert response.status_code == 204
    assert response.headers["range"] == "0-4"
    assert response.headers["location"] == location


@pytest.mark.parametrize("content_range", ["6-9", "0-4", "3-7"], ids=["gap", "retry", "overlap"])
async def test_out_of_order_chunk_is_416(client: httpx.AsyncClient, content_range: str) -> None:
    location = await start(client)
    await client.patch(location, content=DATA[:5], headers={"Content-Range": "0-4"})
    start_, end = (int(x) for x in content_range.split("-"))
    response = await client.patch(
        location, content=DATA[start_ : end + 1], headers={"Content-Range": content_range}
    )
    assert response.status_code == 416
    assert error_code(response) == "BLOB_UPLOAD_INVALID"
    assert response.headers["range"] == "0-4"
    # The session is intact: the right next chunk still works.
    response = await client.patch(location, content=DATA[5:], headers={"Content-Range": "5-19"})
    assert response.status_code == 202
    assert (await client.put(f"{location}?digest={DIGEST}")).status_code == 201


async def test_out_of_order_final_chunk_is_416(client: httpx.AsyncClient) -> None:
    location = await start(client)
    await client.patch(location, content=DATA[:5], headers={"Content-Range": "0-4"})
    response = await client.put(
        f"{location}?digest={DIGEST}", content=DATA[10:], headers={"Content-Range": "10-19"}
    )
    assert response.status_code == 416


@pytest.mark.parametrize(
    ("content_range", "status", "code"),
    [("9" * 5000 + "-" + "9" * 5001, 416, "BLOB_UPLOAD_INVALID"),
     ("0-" + "9" * 5000, 400, "SIZE_INVALID")],
    ids=["start", "end"],
)  # fmt: skip
async def test_content_range_with_huge_numbers(
    client: httpx.AsyncClient, content_range: str, status: int, code: str
) -> None:
    location = await start(client)
    response = await client.patch(
        location, content=b"abc", headers={"Content-Range": content_range}
    )
    assert response.status_code == status
    assert error_code(response) == code
    assert (await client.get(location)).headers["range"] == "0-0"


async def test_malformed_content_range(client: httpx.AsyncClient) -> None:
    location = await start(client)
    response = await client.patch(location, content=b"abc", headers={"Content-Range": "zero-2"})
    assert response.status_code == 400
    assert error_code(response) == "BLOB_UPLOAD_INVALID"


async def test_content_range_disagrees_with_length(client: httpx.AsyncClient) -> None:
    location = await start(client)
    response = await client.patch(location, content=b"abc", headers={"Content-Range": "0-9"})
    assert response.status_code == 400
    assert error_code(response) == "SIZE_INVALID"


async def test_digest_mismatch_stores_nothing(client: httpx.AsyncClient) -> None:
    wrong = digest_of(b"something else")
    location = await start(client)
    response = await client.put(f"{location}?digest={wrong}", content=DATA)
    assert response.status_code == 400
    assert error_code(response) == "DIGEST_INVALID"
    assert (await client.head(f"/v2/team/app/blobs/{wrong}")).status_code == 404
    assert (await client.head(f"/v2/team/app/blobs/{DIGEST}")).status_code == 404
    assert (await client.get(location)).status_code == 404  # session is gone


async def test_single_post_digest_mismatch(client: httpx.AsyncClient) -> None:
    wrong = digest_of(b"other")
    response = await client.post(f"/v2/team/app/blobs/uploads/?digest={wrong}", content=DATA)
    assert response.status_code == 400
    assert error_code(response) == "DIGEST_INVALID"
    assert (await client.head(f"/v2/team/app/blobs/{wrong}")).status_code == 404


@pytest.mark.parametrize(
    "digest", ["sha256:abc", "md5:" + "0" * 32, "nonsense", "sha256:" + "G" * 64, ""]
)
async def test_invalid_digest_parameter(client: httpx.AsyncClient, digest: str) -> None:
    location = await start(client)
    response = await client.put(f"{location}?digest={digest}", content=DATA)
    assert response.status_code == 400
    assert error_code(response) == "DIGEST_INVALID"


async def test_put_without_digest(client: httpx.AsyncClient) -> None:
    location = await start(client)
    response = await client.put(location, content=DATA)
    assert response.status_code == 400
    assert error_code(response) == "DIGEST_INVALID"


async def test_sha512_upload(client: httpx.AsyncClient) -> None:
    digest = digest_of(DATA, "sha512")
    location = await start(client, query="?digest-algorithm=sha512")
    await client.patch(location, content=DATA, headers={"Content-Range": "0-19"})
    response = await client.put(f"{location}?digest={digest}")
    assert response.status_code == 201
    assert response.headers["docker-content-digest"] == digest
    await assert_blob(client, "team/app", digest, DATA)


async def test_sha512_single_post(client: httpx.AsyncClient) -> None:
    digest = digest_of(DATA, "sha512")
    response = await client.post(f"/v2/team/app/blobs/uploads/?digest={digest}", content=DATA)
    assert response.status_code == 201
    await assert_blob(client, "team/app", digest, DATA)


async def test_unsupported_digest_algorithm(client: httpx.AsyncClient) -> None:
    response = await client.post("/v2/team/app/blobs/uploads/?digest-algorithm=md5")
    assert response.status_code == 400
    assert error_code(response) == "DIGEST_INVALID"


async def test_digest_algorithm_differs_from_session(client: httpx.AsyncClient) -> None:
    location = await start(client, query="?digest-algorithm=sha512")
    response = await client.put(f"{location}?digest={DIGEST}", content=DATA)
    assert response.status_code == 201  # verified with the algorithm of the digest given
    await assert_blob(client, "team/app", DIGEST, DATA)


async def test_cancel_upload(client: httpx.AsyncClient) -> None:
    location = await start(client)
    await client.patch(location, content=DATA)
    response = await client.delete(location)
    assert response.status_code == 204
    for method in ("GET", "PATCH", "PUT", "DELETE"):
        response = await client.request(method, f"{location}?digest={DIGEST}", content=b"x")
        assert response.status_code == 404, method
        assert error_code(response) == "BLOB_UPLOAD_UNKNOWN"


@pytest.mark.parametrize("upload_id", ["0" * 32, "not-a-uuid", "A" * 32])
async def test_unknown_or_malformed_session(client: httpx.AsyncClient, upload_id: str) -> None:
    response = await client.get(f"/v2/team/app/blobs/uploads/{upload_id}")
    assert response.status_code == 404
    assert error_code(response) == "BLOB_UPLOAD_UNKNOWN"


async def test_session_belongs_to_its_repository(client: httpx.AsyncClient) -> None:
    location = await start(client, "team/app")
    other = location.replace("/team/app/", "/team/other/")
    assert (await client.get(other)).status_code == 404


async def test_chunk_min_length_advertised(app, client: httpx.AsyncClient) -> None:
    response = await client.post("/v2/team/app/blobs/uploads/")
    assert response.headers["oci-chunk-min-length"] == str(5 << 20)
    app.state.config.uploads.chunk_min_length = 0
    response = await client.post("/v2/team/app/blobs/uploads/")
    assert "oci-chunk-min-length" not in response.headers


@pytest.mark.parametrize("declared", ["\u00b2", "-1", "1e3", " "])
async def test_malformed_content_length(app, declared: str) -> None:
    """HTTP headers arrive latin-1 decoded: '²' passes str.isdigit() but not int()."""
    status, body = await raw_request(
        app, "POST", "/v2/team/app/blobs/uploads/", f"digest={DIGEST}", DATA,
        {"content-length": declared},
    )  # fmt: skip
    assert status == 400
    assert json.loads(body)["errors"][0]["code"] == "SIZE_INVALID"


@pytest.mark.parametrize("declared", [100, 5])
async def test_body_length_differs_from_content_length(app, declared: int) -> None:
    """A body shorter (client gave up) or longer than announced stores nothing."""
    status, body = await raw_request(
        app,
        "POST",
        "/v2/team/app/blobs/uploads/",
        f"digest={DIGEST}",
        DATA,
        {"content-length": str(declared)},
    )
    assert status == 400
    assert json.loads(body)["errors"][0]["code"] == "SIZE_INVALID"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.head(f"/v2/team/app/blobs/{DIGEST}")).status_code == 404


async def test_mount_from_repository(client: httpx.AsyncClient) -> None:
    await push_blob(client, "team/source", DATA)
    response = await client.post(f"/v2/team/target/blobs/uploads/?mount={DIGEST}&from=team/source")
    assert response.status_code == 201
    assert response.headers["location"] == f"/v2/team/target/blobs/{DIGEST}"
    assert response.headers["docker-content-digest"] == DIGEST
    await assert_blob(client, "team/target", DIGEST, DATA)


async def test_mount_without_from_finds_blob_anywhere(client: httpx.AsyncClient) -> None:
    await push_blob(client, "team/source", DATA)
    response = await client.post(f"/v2/team/target/blobs/uploads/?mount={DIGEST}")
    assert response.status_code == 201
    await assert_blob(client, "team/target", DIGEST, DATA)


async def test_mount_from_repository_without_blob_starts_upload(
    client: httpx.AsyncClient,
) -> None:
    await push_blob(client, "team/elsewhere", DATA)
    response = await client.post(f"/v2/team/target/blobs/uploads/?mount={DIGEST}&from=team/empty")
    assert response.status_code == 202
    assert "location" in response.headers
    assert (await client.head(f"/v2/team/target/blobs/{DIGEST}")).status_code == 404


async def test_mount_unknown_blob_starts_upload(client: httpx.AsyncClient) -> None:
    response = await client.post(f"/v2/team/target/blobs/uploads/?mount={DIGEST}")
    assert response.status_code == 202


async def test_mount_invalid_source_name(client: httpx.AsyncClient) -> None:
    response = await client.post(f"/v2/team/target/blobs/uploads/?mount={DIGEST}&from=../x")
    assert response.status_code == 400
    assert error_code(response) == "NAME_INVALID"


async def test_same_blob_in_two_repositories_is_stored_once(
    client: httpx.AsyncClient, driver
) -> None:
    await push_blob(client, "one/app", DATA)
    await push_blob(client, "two/app", DATA)
    encoded = DIGEST.split(":")[1]
    assert await driver.list(f"blobs/sha256/{encoded[:2]}") == [encoded]
    await assert_blob(client, "two/app", DIGEST, DATA)


async def test_hash_recomputed_when_running_hash_is_lost(app, client: httpx.AsyncClient) -> None:
    """Another process (a fresh store here) finishes an upload this one started."""
    location = await start(client)
    await client.patch(location, content=DATA[:7], headers={"Content-Range": "0-6"})
    app.state.store.uploads._hashers.clear()  # as if the next request landed elsewhere
    await client.patch(location, content=DATA[7:], headers={"Content-Range": "7-19"})
    response = await client.put(f"{location}?digest={DIGEST}")
    assert response.status_code == 201
    await assert_blob(client, "team/app", DIGEST, DATA)


async def test_large_upload_in_many_chunks(client: httpx.AsyncClient) -> None:
    data = bytes(range(256)) * 40_000  # ~10 MiB, several flushes
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    location = await start(client)
    step = 3 << 20
    for offset in range(0, len(data), step):
        chunk = data[offset : offset + step]
        response = await client.patch(
            location,
            content=chunk,
            headers={"Content-Range": f"{offset}-{offset + len(chunk) - 1}"},
        )
        assert response.status_code == 202
        location = response.headers["location"]
    assert (await client.put(f"{location}?digest={digest}")).status_code == 201
    response = await client.head(f"/v2/team/app/blobs/{digest}")
    assert response.headers["content-length"] == str(len(data))
