"""Which deadlines `LimitedHttpToolsProtocol` arms, in process: a request that comes
whole in one chunk needs neither, a head or body still to come needs its own (the real
server's closing of such connections: tests/test_connection_limits.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from unittest.mock import Mock

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from registry.connections import ConnectionLimits, LimitedHttpToolsProtocol

LIMITS = ConnectionLimits(
    header_timeout=60, body_timeout=120, max_header_bytes=1 << 16, max_connections=10
)
WHOLE = b"GET /v2/ HTTP/1.1\r\nHost: registry.test\r\n\r\n"
DECLARING_A_BODY = b"PUT /v2/x HTTP/1.1\r\nHost: registry.test\r\nContent-Length: 10\r\n\r\n"


async def app(scope: object, receive: object, send: object) -> None:
    await asyncio.Event().wait()  # never answers: the test looks at the timers meanwhile


@pytest.fixture
async def protocol() -> AsyncIterator[LimitedHttpToolsProtocol]:
    config = Config(app=app, http="httptools", lifespan="off")
    config.load()
    connection = LimitedHttpToolsProtocol(config, ServerState(), {}, limits=LIMITS)
    transport = Mock(spec=asyncio.Transport)
    transport.get_extra_info.side_effect = lambda name, default=None: (
        ("127.0.0.1", 5000) if name in ("sockname", "peername") else default
    )
    transport.is_closing.return_value = False
    connection.connection_made(transport)
    connection._cancel_header_timer()  # the connection's own, armed when it opened
    connection._head_bytes = None  # as after a previous request on the connection
    connection.loop = Mock(wraps=connection.loop)  # counts the timers armed
    yield connection
    connection.connection_lost(None)


async def test_a_request_whole_in_one_chunk_arms_no_deadline(
    protocol: LimitedHttpToolsProtocol,
) -> None:
    protocol.data_received(WHOLE)
    assert protocol.loop.call_later.call_count == 0


async def test_a_head_cut_in_two_arms_the_header_deadline(
    protocol: LimitedHttpToolsProtocol,
) -> None:
    protocol.data_received(WHOLE[:20])
    assert protocol._header_timer is not None
    assert protocol.loop.call_later.call_count == 1
    protocol.data_received(WHOLE[20:])
    assert protocol._header_timer is None
    assert protocol._body_timer is None


async def test_a_body_still_to_come_arms_the_body_deadline(
    protocol: LimitedHttpToolsProtocol,
) -> None:
    protocol.data_received(DECLARING_A_BODY)
    assert protocol._header_timer is None
    assert protocol._body_timer is not None
    assert protocol.loop.call_later.call_count == 1
    protocol.data_received(b"0123456789")
    assert protocol._body_timer is None
