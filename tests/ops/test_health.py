"""`/healthz` and `/readyz` in process: liveness never touches storage, readiness does."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator

import httpx
import pytest

from registry.app import create_app
from registry.config import Config
from registry.health import Readiness
from storage.driver import StorageUnavailableError
from storage.memory import MemoryDriver


class BrokenDriver(MemoryDriver):
    """Storage that fails every call (`hang`: never answers)."""

    def __init__(self, hang: bool = False) -> None:
        super().__init__()
        self.hang = hang
        self.calls = 0

    async def put(self, key: str, data: bytes) -> None:
        self.calls += 1
        if self.hang:
            await asyncio.Event().wait()
        raise StorageUnavailableError("backend unreachable")

    async def get(self, key: str) -> bytes:
        self.calls += 1
        raise StorageUnavailableError("backend unreachable")


def client_for(driver: MemoryDriver, **settings: object) -> httpx.AsyncClient:
    app = create_app(Config(**settings), driver)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r.test")


async def test_alive_without_touching_storage() -> None:
    driver = BrokenDriver()
    async with client_for(driver) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "alive"}
    assert driver.calls == 0


async def test_ready_after_a_small_write_and_read() -> None:
    driver = MemoryDriver()
    async with client_for(driver) as client:
        response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}
    assert driver.objects  # the probe object was written


async def test_not_ready_when_storage_fails_with_the_reason() -> None:
    async with client_for(BrokenDriver()) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert "backend unreachable" in body["reason"]


async def test_not_ready_when_storage_does_not_answer_in_time() -> None:
    async with client_for(BrokenDriver(hang=True), health={"timeout": 0.2}) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["reason"] == "storage did not answer within 0.2s"


async def test_not_ready_while_shutting_down() -> None:
    app = create_app(Config(), MemoryDriver())
    app.state.readiness.stopping = True
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://r.test"
    ) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["reason"] == "shutting down"


@pytest.fixture
def quiet_sigterm() -> Iterator[list[int]]:
    """A SIGTERM handler that only records, standing in for uvicorn's; both signals'
    handlers are restored after."""
    received: list[int] = []
    interrupt = signal.getsignal(signal.SIGINT)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    yield received
    signal.signal(signal.SIGTERM, previous)
    signal.signal(signal.SIGINT, interrupt)


def test_sigterm_marks_stopping_then_runs_the_servers_handler(quiet_sigterm: list[int]) -> None:
    readiness = Readiness(MemoryDriver(), timeout=1.0)
    readiness.stop_on_signals()
    assert not readiness.stopping
    os.kill(os.getpid(), signal.SIGTERM)
    assert readiness.stopping
    assert quiet_sigterm == [signal.SIGTERM]
