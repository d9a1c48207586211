"""Read the rest of a request body before the server closes the connection.

When a server closes a socket that still holds unread request bytes, the kernel answers
with a reset instead of an orderly close, and the reset can destroy the response before
the client reads it: the client sees "connection reset" instead of the error. uvicorn
closes the connection after a response when the client asked for it (`Connection:
close`, HTTP/1.0) and after an exception escaped the application; an early error (a
full disk, an unknown upload, a manifest too large) can leave most of a body unread.
On a kept-alive connection the server itself reads and discards the rest after
answering, so nothing is needed there, and a client that answers early errors by
stopping its upload may do so.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Up to this much is read and dropped; a longer body is cut off (and may be reset).
DRAIN_LIMIT = 64 << 20
DRAIN_SECONDS = 30.0


def _closes_connection(scope: Scope) -> bool:
    if scope.get("http_version") == "1.0":
        return True
    return any(
        name == b"connection" and b"close" in value.lower() for name, value in scope["headers"]
    )


def _declares_a_body(scope: Scope) -> bool:
    """An HTTP/1.1 request has a body only if it says so: a `Content-Length` above 0 or
    a `Transfer-Encoding` (most requests, pulls, say neither)."""
    return any(
        name == b"transfer-encoding" or (name == b"content-length" and value != b"0")
        for name, value in scope["headers"]
    )


def _waits_for_continue(scope: Scope) -> bool:
    """The client sends its body only once asked to (`Expect: 100-continue`)."""
    return any(
        name == b"expect" and value.lower() == b"100-continue" for name, value in scope["headers"]
    )


class DrainBeforeClose:
    def __init__(self, app: ASGIApp, limit: int = DRAIN_LIMIT) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _declares_a_body(scope):
            await self.app(scope, receive, send)  # nothing could be left unread
            return
        received_any = False
        complete = False

        async def tracking_receive() -> Message:
            nonlocal received_any, complete
            message = await receive()
            received_any = True
            complete = complete or not message.get("more_body", False)
            return message

        async def drain() -> None:
            nonlocal complete
            if complete or (not received_any and _waits_for_continue(scope)):
                return
            complete = True
            dropped = 0
            with contextlib.suppress(TimeoutError):  # then answer anyway
                async with asyncio.timeout(DRAIN_SECONDS):
                    while dropped <= self.limit:
                        message = await receive()
                        dropped += len(message.get("body", b""))
                        if not message.get("more_body", False):
                            return

        async def draining_send(message: Message) -> None:
            if message["type"] == "http.response.start" and _closes_connection(scope):
                await drain()
            await send(message)

        try:
            await self.app(scope, tracking_receive, draining_send)
        except Exception:
            await drain()  # uvicorn closes the connection after the 500
            raise
