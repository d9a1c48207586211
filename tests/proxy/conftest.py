"""Fixtures for in-process pull-through tests: an upstream Dockyard (memory storage)
behind a transport that records and can break its requests, and a caching registry
over each storage driver that reaches the upstream through it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from proxy import build_proxy
from registry.app import create_app
from registry.config import Config
from storage.driver import StorageDriver
from storage.memory import MemoryDriver

UPSTREAM_URL = "http://upstream.test"


class UpstreamTransport(httpx.AsyncBaseTransport):
    """An app reached in-process; `requests` records (method, path) of each request.
    `down` refuses connections, `slow` times out, `status` answers every request with
    it, `corrupt` changes one byte of every blob body."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self._inner = httpx.ASGITransport(app=app)
        self.requests: list[tuple[str, str]] = []
        self.down = False
        self.slow = False
        self.status: int | None = None
        self.corrupt = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path))
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if self.slow:  # what httpx raises when the upstream exceeds the timeout
            raise httpx.ReadTimeout("timed out", request=request)
        if self.status is not None:
            return httpx.Response(self.status, headers={"Retry-After": "7"}, request=request)
        response = await self._inner.handle_async_request(request)
        if request.method != "GET" or "/blobs/" not in request.url.path:
            return response
        body = bytearray(await response.aread())
        if self.corrupt:
            body[0] ^= 0xFF
        return httpx.Response(
            response.status_code, headers=response.headers, content=_pieces(bytes(body))
        )

    def count(self, method: str, path_part: str) -> int:
        return sum(1 for m, path in self.requests if m == method and path_part in path)


async def _pieces(body: bytes, size: int = 64 << 10) -> AsyncIterator[bytes]:
    """A body in pieces, as from a socket (the ASGI transport gives it whole)."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def upstream_config(**settings: Any) -> dict[str, Any]:
    return {"prefix": "hub", "url": UPSTREAM_URL, **settings}


@pytest.fixture
async def upstream() -> AsyncIterator[httpx.AsyncClient]:
    """A client of the upstream registry (to push what the tests pull through)."""
    app = create_app(Config(), MemoryDriver())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=UPSTREAM_URL
    ) as client:
        client.app = app  # type: ignore[attr-defined]
        yield client


@pytest.fixture
def transport(upstream: httpx.AsyncClient) -> UpstreamTransport:
    return UpstreamTransport(upstream.app)  # type: ignore[attr-defined]


CacheFactory = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def open_cache(
    driver: StorageDriver, transport: UpstreamTransport
) -> AsyncIterator[CacheFactory]:
    """Opens a client of a caching registry configured with these upstreams (default:
    one, `hub`); every upstream is reached through `transport`."""
    opened: list[tuple[httpx.AsyncClient, Any]] = []

    def open_(*upstreams: dict[str, Any], **settings: Any) -> httpx.AsyncClient:
        config = Config(proxy={"upstreams": list(upstreams) or [upstream_config()]}, **settings)
        app = create_app(config, driver)
        app.state.proxy = build_proxy(config, app.state.store, transport)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://cache.test"
        )
        client.app = app  # type: ignore[attr-defined]
        opened.append((client, app.state.proxy))
        return client

    yield open_
    for client, cache in opened:
        await client.aclose()
        await cache.close()
