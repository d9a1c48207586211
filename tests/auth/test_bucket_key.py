"""Token mode on S3 with no configured key: the key is generated once, in the bucket,
and every replica sharing the bucket signs and verifies with it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from registry.app import create_app
from registry.auth.keys import load_or_create_stored_signing_key
from registry.auth.setup import SIGNING_KEY_NAME
from registry.config import Config
from storage.driver import StorageDriver
from storage.s3 import S3Driver
from tests.support.auth import basic, bearer
from tests.support.drivers import make_driver


@pytest.fixture(params=["memory", "filesystem", "s3"])
async def driver(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StorageDriver]:
    driver = make_driver(request.param, request, tmp_path)
    yield driver
    await driver.close()


async def test_racing_processes_end_with_one_key(driver: StorageDriver) -> None:
    keys = await asyncio.gather(
        *(load_or_create_stored_signing_key(driver, SIGNING_KEY_NAME) for _ in range(8))
    )
    assert len({key.kid for key in keys}) == 1
    again = await load_or_create_stored_signing_key(driver, SIGNING_KEY_NAME)
    assert again.kid == keys[0].kid


async def test_a_half_written_key_is_replaced(driver: StorageDriver) -> None:
    await driver.put(SIGNING_KEY_NAME, b"")  # a PutObject cut off after its headers
    key = await load_or_create_stored_signing_key(driver, SIGNING_KEY_NAME)
    assert await driver.get(SIGNING_KEY_NAME) != b""
    assert (await load_or_create_stored_signing_key(driver, SIGNING_KEY_NAME)).kid == key.kid


@contextlib.asynccontextmanager
async def replica(config: Config, driver: StorageDriver) -> AsyncIterator[httpx.AsyncClient]:
    """A started app (its lifespan run, as uvicorn does) and a client on it; the app
    closes `driver` when it stops."""
    app = create_app(config, driver)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as c:
            yield c


async def test_replicas_on_one_bucket_accept_each_others_tokens(
    request: pytest.FixtureRequest, tmp_path: Path, users_file: Path
) -> None:
    first = make_driver("s3", request, tmp_path)
    assert isinstance(first, S3Driver)
    second = S3Driver(first.settings)
    storage = {"driver": "s3", "s3": {"bucket": first.settings.bucket}}
    auth = {"mode": "token", "htpasswd": str(users_file), "user_namespaces": True}
    config = Config(storage=storage, auth=auth, gc={"enabled": False})
    assert config.auth.token.signing_key is None  # no key to hand out to the replicas
    async with replica(config, first) as one, replica(config, second) as other:
        answer = await one.get(
            "/auth/token",
            params={"service": "dockyard", "scope": "repository:alice/app:pull,push"},
            headers=basic("alice", "alice-pw"),
        )
        token = answer.json()["token"]
        listed = await other.get("/v2/alice/app/tags/list", headers=bearer(token))
        assert listed.status_code == 404  # authorized: the repository does not exist
        assert listed.json()["errors"][0]["code"] == "NAME_UNKNOWN"
        unauthorized = await other.get("/v2/alice/app/tags/list", headers=bearer(token + "x"))
        assert unauthorized.status_code == 401
        assert await first.exists(SIGNING_KEY_NAME)
