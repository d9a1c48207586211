"""The access log: one line per request, written in batches.

uvicorn's own access log goes through `logging` and makes a write per request;
on small requests that cost a third of the request rate (see bench/). Here a line
is formatted once and kept; the kept lines are written together, in one write of
whole lines, when the event loop has run what was ready (so under load many
requests share a write, and alone a line is out at once) or once about 4 KiB
wait. Lines of several worker processes sharing one output never interleave.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TextIO

from starlette.types import ASGIApp, Message, Receive, Scope, Send

FLUSH_AT_BYTES = 4000  # below PIPE_BUF, so one write to a pipe stays whole


class LogLines:
    """Lines waiting to be written to `stream` (stdout if None) in one write."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lines: list[str] = []
        self._size = 0
        self._flush_scheduled = False

    def add(self, line: str) -> None:
        self._lines.append(line)
        self._size += len(line)
        if self._size >= FLUSH_AT_BYTES:
            self.flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        if not self._lines:
            return
        stream = self._stream or sys.stdout
        stream.write("".join(self._lines))
        stream.flush()
        self._lines.clear()
        self._size = 0


class AccessLog:
    """`<time> <client> "<method> <target> HTTP/<version>" <status> <bytes> <seconds>`."""

    def __init__(self, app: ASGIApp, lines: LogLines) -> None:
        self.app = app
        self._lines = lines
        self._second = -1
        self._stamp = ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0
        sent = 0

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, counting_send)
        except BaseException:
            status = status or 500  # the server error handler outside us answers
            raise
        finally:
            self._record(scope, status, sent, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, sent: int, seconds: float) -> None:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        host, port = scope.get("client") or ("-", "-")
        # raw_path is as the client sent it, so no decoded newline can forge a line.
        target = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        if query := scope.get("query_string"):
            target = f"{target}?{query.decode('latin-1')}"
        self._lines.add(
            f'{self._stamp} {host}:{port} "{scope["method"]} {target} '
            f'HTTP/{scope["http_version"]}" {status or "-"} {sent} {seconds:.4f}\n'
        )
