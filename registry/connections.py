"""The limits uvicorn's httptools protocol lacks: header and body deadlines, a connection cap.

uvicorn closes a connection idle between requests (`timeout_keep_alive`) and nothing
else: a connection that never sends a request, sends half its headers or declares a body
it never sends stays open for ever. This protocol adds:

- a header deadline: a request's head must be complete within `header_timeout` seconds of
  the connection opening, or on a reused connection of the first byte after the previous
  answer (uvicorn stops its keep-alive timer at any byte, even one that starts no request);
- a body inactivity deadline: while a request body is read, `body_timeout` seconds without
  a byte close the connection. Only the client's silence counts: while uvicorn has paused
  reading (the application has not taken what arrived) or the client waits for
  `100 Continue`, the deadline starts again, so a slow but live upload never trips it;
- a size limit on request heads: httptools keeps a head in memory however long it grows,
  so beyond `max_header_bytes` the request is answered 431 and the connection closed;
- a cap: a worker holding `max_connections` connections closes new ones at once, while
  the ones it holds keep working (with several workers, the others may still have room).

A closed connection ends its request as a client disconnect would. Requests refused
before they reach the application (431, and uvicorn's 400 for malformed HTTP) get the
spec's JSON error body like every other error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from asyncio import TimerHandle
from dataclasses import dataclass
from typing import Any

from uvicorn.config import Config as UvicornConfig
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from oci.errors import ErrorCode, RegistryError
from registry.logs import INVALID_REQUEST

log = logging.getLogger("dockyard")
http_log = logging.getLogger("dockyard.http")

_WARN_EVERY = 60.0  # seconds between "connection limit reached" warnings of one worker
_last_full_warning = -_WARN_EVERY


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float
    body_timeout: float
    max_header_bytes: int
    max_connections: int


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with `ConnectionLimits` (pass them with functools.partial)."""

    def __init__(
        self,
        config: UvicornConfig,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ConnectionLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self._refused = False
        self._header_timer: TimerHandle | None = None
        self._body_timer: TimerHandle | None = None
        self._last_data = 0.0
        self._head_bytes: int | None = 0  # bytes of the request head so far; None: not in one
        # Deadlines a request started in this `data_received` needs, armed at its end
        # only if they still are: most requests arrive whole in one chunk, and a timer
        # armed and cancelled costs each of them ~1.7 µs.
        self._head_pending = False
        self._body_pending = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self._refused = True
            _warn_full(self.limits.max_connections)
            transport.close()
            return
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._cancel_header_timer()
        self._cancel_body_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._last_data = self.loop.time()
        if self._head_bytes is not None:  # (a head starting mid-chunk counts from the next)
            self._head_bytes += len(data)
        super().data_received(data)  # (cancels uvicorn's keep-alive timer)
        if self._head_bytes is not None and self._head_bytes > self.limits.max_header_bytes:
            self._refuse(431, f"request head larger than {self.limits.max_header_bytes} bytes")
            return
        self._arm_pending_timers()
        # Bytes between requests that start none (blank lines, the rest of a body answered
        # early) leave no timer running: wait for the next request's head as for any.
        answered = self.cycle is not None and self.cycle.response_complete
        no_timer = self._header_timer is None and self._body_timer is None
        if answered and no_timer and self.timeout_keep_alive_task is None:
            self._arm_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_bytes is None:  # a new connection's count runs from the connect
            self._head_bytes = 0
        if self._header_timer is None:  # a new connection's timer runs from the connect
            self._head_pending = True

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        self._head_pending = False
        self._cancel_header_timer()
        super().on_headers_complete()
        self._cancel_body_timer()
        self._body_pending = True

    def on_message_complete(self) -> None:
        self._body_pending = False
        self._cancel_body_timer()
        super().on_message_complete()

    def _arm_pending_timers(self) -> None:
        """The deadlines of a request whose head or body did not all come in the chunk
        just parsed (they run from that chunk, as if armed when it began)."""
        if self._head_pending:
            self._head_pending = False
            self._arm_header_timer()
        if self._body_pending:
            self._body_pending = False
            self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_deadline)

    def send_400_response(self, msg: str) -> None:
        if msg == INVALID_REQUEST:  # docker probing a plain-HTTP registry with TLS
            host, port = self.client or ("-", "-")
            http_log.debug("invalid HTTP request from %s:%s (a TLS probe?)", host, port)
        self._refuse(400, msg)

    def _refuse(self, status: int, message: str) -> None:
        """Answer a request the application never saw, with the spec's JSON, and close."""
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and cycle.response_started and not cycle.response_complete:
            self.transport.close()  # another answer is under way: no room for this one
            return
        body = RegistryError(ErrorCode.UNSUPPORTED, message, status=status).body()
        head = [STATUS_LINE[status]]
        head += [
            name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers
        ]
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body))
        self.transport.write(b"".join([*head, b"connection: close\r\n\r\n", body]))
        self.transport.close()

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.limits.header_timeout, self._header_deadline)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _header_deadline(self) -> None:
        self._header_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm_header_timer()  # a pipelined request: we are still answering the last one
            return
        self._close("request headers incomplete after %.0f s", self.limits.header_timeout)

    def _body_deadline(self) -> None:
        self._body_timer = None
        timeout = self.limits.body_timeout
        cycle = self.cycle
        if self.flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue):
            delay = timeout  # the client waits for us: its silence does not count
        else:
            delay = self._last_data + timeout - self.loop.time()
            if delay <= 0:
                self._close("no request body bytes for %.0f s", timeout)
                return
        self._body_timer = self.loop.call_later(delay, self._body_deadline)

    def _close(self, reason: str, seconds: float) -> None:
        if not self.transport.is_closing():
            log.debug("%s: closing the connection: " + reason, self.client, seconds)
            self.transport.close()


def _warn_full(limit: int) -> None:
    global _last_full_warning
    now = time.monotonic()
    if now - _last_full_warning >= _WARN_EVERY:
        _last_full_warning = now
        log.warning(
            "%d connections open in this worker (http.max_connections): closing new ones", limit
        )
