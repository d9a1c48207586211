"""`X-Request-Id` on every response: the client's own when it sent a sane one, else a new one.

The id is kept in the request scope under `REQUEST_ID_KEY` for the access log. The
same layer adds the headers every response carries (`fixed`): one layer costs each
request a coroutine and a call per message sent, so two would cost that twice.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_KEY = "dockyard.request_id"
REQUEST_ID_HEADER = "x-request-id"
HEADER = REQUEST_ID_HEADER.encode()
_SANE = re.compile(rb"[A-Za-z0-9._:+/=-]{1,128}")  # nothing that could forge a log line
Header = tuple[bytes, bytes]


class _NewIds:
    """16 hex digits: this process's random prefix and a counter. Unique across
    processes and restarts (the prefix is drawn anew) without a system call each."""

    def __init__(self) -> None:
        self.restart()
        os.register_at_fork(after_in_child=self.restart)

    def restart(self) -> None:
        self._prefix = os.urandom(4).hex()
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFF:08x}"


_new_ids = _NewIds()


def request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == HEADER and _SANE.fullmatch(value):
            return value.decode("ascii")
    return _new_ids.next()


class RequestId:
    def __init__(self, app: ASGIApp, fixed: Sequence[Header] = ()) -> None:
        self.app = app
        self.fixed = list(fixed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        identifier = scope[REQUEST_ID_KEY] = request_id(scope)
        added = [*self.fixed, (HEADER, identifier.encode("ascii"))]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *added]
            await send(message)

        await self.app(scope, receive, send_with_id)
