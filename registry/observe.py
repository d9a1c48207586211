"""One pure-ASGI layer that measures each request once — status, body bytes in and
out, duration — and hands the figures to its recorders: the metrics and the access log.

One layer rather than one per recorder: every layer costs each request a coroutine
and a call per message sent, which on small requests is a few percent of their time.
"""

from __future__ import annotations

from collections.abc import Sequence
from time import perf_counter
from typing import Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

BODILESS = frozenset({"GET", "HEAD"})  # their bodies are never read: nothing to count


class Recorder(Protocol):
    def started(self, scope: Scope) -> None: ...

    def finished(self, scope: Scope, status: int, received: int, sent: int, seconds: float) -> None:
        """`status` 0: no response was started (the client went away)."""


class ObserveRequests:
    def __init__(self, app: ASGIApp, recorders: Sequence[Recorder]) -> None:
        self.app = app
        self._recorders = tuple(recorders)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0
        received = 0
        sent = 0

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        reading = receive
        if scope["method"] not in BODILESS:

            async def counting_receive() -> Message:
                nonlocal received
                message = await receive()
                received += len(message.get("body", b""))
                return message

            reading = counting_receive
        for recorder in self._recorders:
            recorder.started(scope)
        started = perf_counter()
        try:
            await self.app(scope, reading, counting_send)
        except BaseException:
            status = status or 500  # the server error handler outside us answers
            raise
        finally:
            seconds = perf_counter() - started
            for recorder in self._recorders:
                recorder.finished(scope, status, received, sent, seconds)
