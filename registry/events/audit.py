"""The audit log: every event as one JSON line (who, what, from where, when).

Lines go to a file opened for appending (each line one `write`, so the lines of several
worker processes never interleave within a line) or to standard output, off the event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from storage.outbox import Event


def audit_line(event: Event) -> str:
    target = event["target"]
    line: dict[str, Any] = {
        "time": event["timestamp"],
        "actor": event["actor"].get("name"),
        "action": event["action"],
        "repository": target["repository"],
        "digest": target.get("digest"),
        "tag": target.get("tag"),
        "media_type": target.get("mediaType"),
        "from_repository": target.get("fromRepository"),
        "addr": event["request"]["addr"],
        "method": event["request"]["method"],
        "user_agent": event["request"]["useragent"],
        "request_id": event["request"]["id"],
        "event_id": event["id"],
    }
    return json.dumps({k: v for k, v in line.items() if v is not None}) + "\n"


class AuditLog:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fd: int | None = None

    def _write_lines(self, data: bytes) -> None:
        if self.path is None:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            return
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        os.write(self._fd, data)

    async def write(self, events: list[Event]) -> None:
        data = "".join(audit_line(event) for event in events).encode()
        await asyncio.to_thread(self._write_lines, data)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
