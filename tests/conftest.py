"""Fixtures for the in-process API tests: the app over each storage driver, and a client.

The S3 driver runs against a real SeaweedFS started once per session (skipped with
the reason when it cannot start, failed when E2E_REQUIRED=1); each test gets a key
prefix of its own in the shared bucket.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from registry.app import create_app
from registry.config import Config
from storage.driver import StorageDriver
from tests.support.drivers import make_driver
from tests.support.seaweedfs import SeaweedFS, start_seaweedfs

DRIVERS = ["memory", "filesystem", "s3"]


@pytest.fixture(autouse=True)
def _cache_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's collectors (and the servers it starts) keep their local cache
    (collector/known_references.py) in a folder of its own, not in the user's home."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_bucket(seaweedfs: SeaweedFS) -> str:
    return seaweedfs.create_bucket("dockyard-tests")


@pytest.fixture(params=DRIVERS)
async def driver(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StorageDriver]:
    made = make_driver(request.param, request, tmp_path)
    yield made
    await made.close()


@pytest.fixture
def config() -> Config:
    return Config()


@pytest.fixture
def app(config: Config, driver: StorageDriver) -> Starlette:
    return create_app(config, driver)


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as made:
        yield made
