"""Fixtures for the in-process API tests: the app over each storage driver, and a client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from registry.app import create_app
from registry.config import Config
from storage.driver import StorageDriver
from storage.filesystem import FilesystemDriver
from storage.memory import MemoryDriver

DRIVERS = ["memory", "filesystem"]


@pytest.fixture(params=DRIVERS)
async def driver(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StorageDriver]:
    if request.param == "memory":
        made: StorageDriver = MemoryDriver()
    else:
        made = FilesystemDriver(tmp_path / "data")
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
