"""One writer per upload session across processes, commits of exactly the hashed bytes,
and the purge of sessions nobody finishes (issue 9, parts 2 and 4)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from oci.references import Digest
from storage import paths
from storage.driver import StorageDriver
from storage.store import Store
from tests.api.helpers import digest_of
from tests.api.test_concurrency import client_for
from tests.support.drivers import twin


class HeldBody:
    """A request body that sends `first`, then holds until `release()`, then `rest`."""

    def __init__(self, first: bytes, rest: bytes = b"") -> None:
        self.first, self.rest = first, rest
        self.reading = asyncio.Event()  # the app read `first` and waits for more
        self.released = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.first
        self.reading.set()
        await self.released.wait()
        if self.rest:
            yield self.rest


async def hold_patch(
    client: httpx.AsyncClient, location: str, body: HeldBody
) -> asyncio.Task[httpx.Response]:
    """Start a PATCH and return once the app has read the first piece of its body."""
    patch = asyncio.create_task(client.patch(location, content=body))
    waiting = asyncio.create_task(body.reading.wait())
    await asyncio.wait([patch, waiting], return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    assert not patch.done(), patch.result().text
    return patch


async def served_bytes_hash_to(client: httpx.AsyncClient, name: str, digest: str) -> bool:
    """Whether the blob is absent or its bytes hash to its digest."""
    response = await client.get(f"/v2/{name}/blobs/{digest}")
    return response.status_code == 404 or digest_of(response.content) == digest


def assert_busy(response: httpx.Response) -> None:
    assert response.status_code == 416, response.text
    assert response.json()["errors"][0]["code"] == "BLOB_UPLOAD_INVALID"
    assert "another request is writing" in response.json()["errors"][0]["message"]


async def test_a_patch_held_open_owns_the_session_in_every_process(driver: StorageDriver) -> None:
    """The reproduction of issue 9: a PUT landing elsewhere while a PATCH is mid-body."""
    content, garbage = b"X" * 5000, b"garbage" * 100
    digest = digest_of(content)
    async with client_for(driver) as first, client_for(driver) as second:
        location = (await first.post("/v2/team/app/blobs/uploads/")).headers["location"]
        assert (await first.patch(location, content=content)).status_code == 202
        body = HeldBody(garbage)
        patch = await hold_patch(first, location, body)

        assert_busy(await second.put(f"{location}?digest={digest}"))
        assert_busy(await second.patch(location, content=b"more"))
        assert_busy(await second.delete(location))
        assert_busy(await first.put(f"{location}?digest={digest}"))  # same process too

        body.released.set()
        assert (await patch).status_code == 202
        refused = await second.put(f"{location}?digest={digest}")
        assert refused.json()["errors"][0]["code"] == "DIGEST_INVALID"
        for client in (first, second):
            assert await served_bytes_hash_to(client, "team/app", digest)


async def test_a_put_holding_the_session_refuses_a_patch(driver: StorageDriver) -> None:
    content = b"Y" * 3000
    digest = digest_of(content)
    async with client_for(driver) as first, client_for(driver) as second:
        location = (await first.post("/v2/team/app/blobs/uploads/")).headers["location"]
        body = HeldBody(content[:1000], content[1000:])
        put = asyncio.create_task(first.put(f"{location}?digest={digest}", content=body))
        waiting = asyncio.create_task(body.reading.wait())
        await asyncio.wait([put, waiting], return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        assert not put.done(), put.result().text

        assert_busy(await second.patch(location, content=b"late garbage"))
        body.released.set()
        assert (await put).status_code == 201
        # The finished session cannot be written to again, by any process.
        late = await second.patch(location, content=b"late garbage")
        assert late.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
        for client in (first, second):
            assert (await client.get(f"/v2/team/app/blobs/{digest}")).content == content


async def test_a_wrong_blob_already_stored_under_a_digest_is_replaced(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    """What older versions could leave: the bytes of a digest plus what a racing request
    appended. The next upload of the digest repairs it instead of trusting it."""
    content = b"the real layer" * 100
    digest = digest_of(content)
    await driver.put(paths.blob_data(Digest.parse(digest)), content + b"garbage")
    location = (await client.post("/v2/team/app/blobs/uploads/")).headers["location"]
    response = await client.put(f"{location}?digest={digest}", content=content)
    assert response.status_code == 201
    assert (await client.get(f"/v2/team/app/blobs/{digest}")).content == content


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
async def test_zero_length_uploads(driver: StorageDriver, algorithm: str) -> None:
    empty = Digest(algorithm, hashlib.new(algorithm, b"").hexdigest())
    async with client_for(driver) as first, client_for(driver) as second:
        # POST, then PUT with no body.
        location = (await first.post("/v2/team/app/blobs/uploads/")).headers["location"]
        assert (await first.put(f"{location}?digest={empty}")).status_code == 201
        # An empty PATCH, then the PUT in another process.
        location = (await first.post("/v2/team/other/blobs/uploads/")).headers["location"]
        assert (await first.patch(location, content=b"")).status_code == 202
        assert (await second.put(f"{location}?digest={empty}")).status_code == 201
        # A monolithic POST of nothing.
        response = await second.post(f"/v2/team/third/blobs/uploads/?digest={empty}", content=b"")
        assert response.status_code == 201
        for name in ("team/app", "team/other", "team/third"):
            response = await first.get(f"/v2/{name}/blobs/{empty}")
            assert response.status_code == 200
            assert response.content == b""


async def test_a_session_belongs_to_its_repository(client: httpx.AsyncClient) -> None:
    location = (await client.post("/v2/team/app/blobs/uploads/")).headers["location"]
    elsewhere = location.replace("/team/app/", "/team/other/")
    response = await client.patch(elsewhere, content=b"x")
    assert response.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
    assert (await client.patch(location, content=b"x")).status_code == 202


async def test_purge_finds_sessions_of_repositories_without_manifests(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    for name in ("never/pushed", "other"):
        location = (await client.post(f"/v2/{name}/blobs/uploads/")).headers["location"]
        await client.patch(location, content=b"abandoned")
    assert len(await Store(twin(driver)).uploads.purge(time.time() + 60)) == 2
    assert (await client.get(location)).status_code == 404
    assert await driver.list(paths.uploads_dir()) == []


async def test_purge_keeps_a_session_active_since_the_cut(driver: StorageDriver) -> None:
    """Purged by last activity, not by start: the cut falls between the two."""
    async with client_for(driver) as client:
        location = (await client.post("/v2/team/app/blobs/uploads/")).headers["location"]
        await asyncio.sleep(1.1)  # object times of some servers count whole seconds
        cut = time.time()
        await asyncio.sleep(1.1)
        assert (await client.patch(location, content=b"recent")).status_code == 202
        assert await Store(twin(driver)).uploads.purge(cut) == []
        assert (await client.get(location)).headers["range"] == "0-5"


async def test_purge_never_touches_a_session_being_written(driver: StorageDriver) -> None:
    content = b"slow upload"
    async with client_for(driver) as client:
        location = (await client.post("/v2/team/app/blobs/uploads/")).headers["location"]
        body = HeldBody(content[:4], content[4:])
        patch = await hold_patch(client, location, body)
        assert await Store(twin(driver)).uploads.purge(time.time() + 60) == []
        body.released.set()
        assert (await patch).status_code == 202
        digest = digest_of(content)
        assert (await client.put(f"{location}?digest={digest}")).status_code == 201


async def test_a_purge_racing_new_sessions_never_fails_them(driver: StorageDriver) -> None:
    """Sessions being created (folder or info there, data not yet) are left alone: every
    POST succeeds and every session it made stays usable. (A race: it guards, but cannot
    force, the interleaving that made a POST fail with a 500.)"""
    purger = Store(twin(driver)).uploads
    cut = time.time() - 2  # before every session; some servers' times count whole seconds
    async with client_for(driver) as client:

        async def purge() -> None:
            for _ in range(20):
                assert await purger.purge(cut) == []

        posts = [client.post(f"/v2/team/app{i}/blobs/uploads/") for i in range(20)]
        *responses, _ = await asyncio.gather(*posts, purge())
        assert [r.status_code for r in responses] == [202] * 20
        for response in responses:
            patched = await client.patch(response.headers["location"], content=b"x")
            assert patched.status_code == 202
