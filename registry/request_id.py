"""`X-Request-Id` on every response: the client's own when it sent a sane one, else a new one.

The id is kept in the request scope under `REQUEST_ID_KEY` for the access log.
"""

from __future__ import annotations

import re
import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_KEY = "dockyard.request_id"
REQUEST_ID_HEADER = "x-request-id"
HEADER = REQUEST_ID_HEADER.encode()
_SANE = re.compile(rb"[A-Za-z0-9._:+/=-]{1,128}")  # nothing that could forge a log line


def request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == HEADER and _SANE.fullmatch(value):
            return value.decode("ascii")
    return secrets.token_hex(8)


class RequestId:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        identifier = scope[REQUEST_ID_KEY] = request_id(scope)
        header = (HEADER, identifier.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        await self.app(scope, receive, send_with_id)
