"""Pull times: recorded on manifest GET (not HEAD), in the background, at most once per
interval per process, with a bounded number of writes in flight."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from oci.references import Digest
from registry.app import create_app
from registry.config import Config
from storage import paths
from storage.memory import MemoryDriver
from storage.pulls import PullRecorder
from tests.api.helpers import push_image

REPO = "team/app"
DIGEST = Digest.of(b"a manifest")


class HeldPulls(MemoryDriver):
    """A memory driver whose writes of pull markers wait until released."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.pull_writes: list[str] = []

    async def put(self, key: str, data: bytes) -> None:
        if "/_manifests/pulled/" in key:
            self.pull_writes.append(key)
            self.started.set()
            await self.release.wait()
        await super().put(key, data)


def client_for(app: Starlette) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://registry.test")


def recorder(app: Starlette) -> PullRecorder:
    return app.state.store.manifests.pulls


@pytest.fixture
def driver() -> HeldPulls:
    return HeldPulls()


@pytest.fixture
def app(driver: HeldPulls) -> Starlette:
    return create_app(Config(), driver)


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as made:
        yield made


async def test_a_get_answers_before_its_pull_is_written(
    app: Starlette, client: httpx.AsyncClient, driver: HeldPulls
) -> None:
    digest, _ = await push_image(client, REPO, "v1")
    # Were the write awaited by the GET, this would wait for ever: fail instead.
    response = await asyncio.wait_for(client.get(f"/v2/{REPO}/manifests/v1"), timeout=60)
    assert response.status_code == 200
    await asyncio.wait_for(driver.started.wait(), timeout=60)
    marker = paths.pulled_marker(REPO, Digest.parse(digest))
    assert driver.pull_writes == [marker]
    assert marker not in driver.objects  # still in flight
    driver.release.set()
    await recorder(app).close()
    assert marker in driver.objects


async def test_head_records_no_pull(
    app: Starlette, client: httpx.AsyncClient, driver: HeldPulls
) -> None:
    driver.release.set()
    await push_image(client, REPO, "v1")
    assert (await client.head(f"/v2/{REPO}/manifests/v1")).status_code == 200
    await recorder(app).close()
    assert driver.pull_writes == []


async def test_a_process_records_a_manifest_at_most_once_per_interval(
    app: Starlette, client: httpx.AsyncClient, driver: HeldPulls
) -> None:
    driver.release.set()
    digest, _ = await push_image(client, REPO, "v1")
    for reference in ("v1", digest, "v1"):
        assert (await client.get(f"/v2/{REPO}/manifests/{reference}")).status_code == 200
        await recorder(app).close()
    assert len(driver.pull_writes) == 1  # gc.grace is an hour by default


async def test_grace_is_the_interval(driver: HeldPulls) -> None:
    driver.release.set()
    app = create_app(Config.model_validate({"gc": {"grace": "0s"}}), driver)
    async with client_for(app) as client:
        await push_image(client, REPO, "v1")
        for _ in range(3):
            assert (await client.get(f"/v2/{REPO}/manifests/v1")).status_code == 200
            await recorder(app).close()
    assert len(driver.pull_writes) == 3


async def test_each_process_records_its_own_pulls(driver: HeldPulls) -> None:
    driver.release.set()
    first, second = PullRecorder(driver, 3600), PullRecorder(driver, 3600)
    for process in (first, second, first, second):
        process.record(REPO, DIGEST)
        await process.close()
    assert len(driver.pull_writes) == 2


async def test_writes_in_flight_are_bounded_and_excess_pulls_counted(driver: HeldPulls) -> None:
    pulls = PullRecorder(driver, 3600, max_in_flight=2)
    digests = [Digest.of(bytes([n])) for n in range(3)]
    for digest in digests:
        pulls.record(REPO, digest)
    assert pulls.dropped == 1
    driver.release.set()
    await pulls.close()
    assert len(driver.pull_writes) == 2
    pulls.record(REPO, digests[2])  # dropped, so not remembered: recorded now
    await pulls.close()
    assert len(driver.pull_writes) == 3


async def test_a_failed_write_is_counted_and_retried_on_the_next_pull() -> None:
    class Failing(MemoryDriver):
        fail = True

        async def put(self, key: str, data: bytes) -> None:
            if self.fail:
                raise OSError("storage down")
            await super().put(key, data)

    driver = Failing()
    pulls = PullRecorder(driver, 3600)
    pulls.record(REPO, DIGEST)
    await pulls.close()
    assert pulls.failed == 1
    driver.fail = False
    pulls.record(REPO, DIGEST)
    await pulls.close()
    assert await pulls.last_pulled(REPO, DIGEST) is not None
