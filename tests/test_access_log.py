"""The access log: a line per request with status and size, written in whole-line batches."""

from __future__ import annotations

import asyncio
import io

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from registry import access_log
from registry.access_log import AccessLog, LogLines
from registry.app import create_app
from registry.config import Config
from registry.observe import ObserveRequests
from storage.memory import MemoryDriver


async def _ok(request: Request) -> Response:
    return Response(b"12345", status_code=201)


async def _fail(request: Request) -> Response:
    raise RuntimeError("boom")


def _client(lines: LogLines) -> httpx.AsyncClient:
    app = Starlette(routes=[Route("/ok", _ok), Route("/fail", _fail)])
    app.add_middleware(ObserveRequests, recorders=[AccessLog(lines)])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://registry.test")


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


async def test_one_line_per_request_with_status_size_and_raw_target() -> None:
    stream = io.StringIO()
    async with _client(LogLines(stream)) as client:
        await client.get("/ok?n=1")
        await client.get("/fail")
        await client.get("/ok%0aforged")
    await asyncio.sleep(0)  # out as soon as the loop has run what was ready
    written = stream.getvalue().splitlines()
    assert len(written) == 3
    assert '"GET /ok?n=1 HTTP/1.1" 201 5 ' in written[0]
    assert '"GET /fail HTTP/1.1" 500 ' in written[1]
    assert '"GET /ok%0aforged HTTP/1.1" 404 ' in written[2]


async def test_requests_finishing_together_share_a_write() -> None:
    stream = CountingStream()
    async with _client(LogLines(stream)) as client:
        await asyncio.gather(*(client.get("/ok") for _ in range(20)))
    await asyncio.sleep(0)
    assert stream.getvalue().count("\n") == 20
    assert len(stream.writes) < 20


async def test_a_write_holds_whole_lines_of_bounded_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(access_log, "FLUSH_AT_BYTES", 200)
    stream = CountingStream()
    async with _client(LogLines(stream)) as client:
        await asyncio.gather(*(client.get("/ok") for _ in range(20)))
    await asyncio.sleep(0)
    assert stream.getvalue().count("\n") == 20
    assert len(stream.writes) > 1
    assert all(text.endswith("\n") and len(text) < 400 for text in stream.writes)


@pytest.mark.parametrize(
    ("settings", "logged"),
    [
        ({}, True),
        ({"http": {"access_log": False}}, False),
        ({"log": {"level": "warning"}}, False),  # access lines are info lines
    ],
)
async def test_registry_access_log_follows_configuration(
    settings: dict[str, dict[str, object]], logged: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app(Config(**settings), MemoryDriver())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://r.test") as client:
        assert (await client.get("/v2/")).status_code == 200
    await asyncio.sleep(0)
    assert ('"GET /v2/ HTTP/1.1" 200 ' in capsys.readouterr().out) is logged
