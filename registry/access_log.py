"""The access log: one line per request, written in batches.

uvicorn's own access log goes through `logging` and makes a write per request;
on small requests that cost a third of the request rate (see bench/). Here a line
is formatted once and kept; the kept lines are written together, in one write of
whole lines, when the event loop has run what was ready (so under load many
requests share a write, and alone a line is out at once) or once about 4 KiB
wait. Lines of several worker processes sharing one output never interleave.

With `log.format: json` each line is a JSON object instead: time, request id,
client, user, method, route template, repository, status, bytes, duration. It
names no query string and no header, so no credential can reach it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import TextIO

from starlette.types import Scope

from registry.auth.caller import CALLER_KEY
from registry.request_id import REQUEST_ID_KEY
from registry.route_labels import RouteLabels

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
    """`<time> <client> "<method> <target> HTTP/<version>" <status> <bytes> <seconds>`,
    or a JSON object when given the `RouteLabels` to name the route with. A recorder
    of `registry.observe.ObserveRequests`."""

    def __init__(self, lines: LogLines, json_labels: RouteLabels | None = None) -> None:
        self._lines = lines
        self._json_labels = json_labels
        self._second = -1
        self._stamp = ""

    def started(self, scope: Scope) -> None:
        """A line is written when the request is done."""

    def finished(self, scope: Scope, status: int, received: int, sent: int, seconds: float) -> None:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        host, port = scope.get("client") or ("-", "-")
        if self._json_labels is not None:
            self._lines.add(self._json_line(scope, f"{host}:{port}", status, sent, seconds))
            return
        # raw_path is as the client sent it, so no decoded newline can forge a line.
        target = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        if query := scope.get("query_string"):
            target = f"{target}?{query.decode('latin-1')}"
        self._lines.add(
            f'{self._stamp} {host}:{port} "{scope["method"]} {target} '
            f'HTTP/{scope["http_version"]}" {status or "-"} {sent} {seconds:.4f}\n'
        )

    def _json_line(self, scope: Scope, client: str, status: int, sent: int, seconds: float) -> str:
        assert self._json_labels is not None
        caller = scope.get(CALLER_KEY)
        fields = {
            "time": self._stamp,
            "request_id": scope.get(REQUEST_ID_KEY),
            "client": client,
            "user": caller.name if caller is not None else None,
            "method": scope["method"],
            "route": self._json_labels.template(scope),
            "repository": self._json_labels.repository(scope),
            "status": status or None,
            "bytes": sent,
            "duration": round(seconds, 4),
        }
        return json.dumps(fields, separators=(",", ":")) + "\n"
