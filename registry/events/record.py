"""Building the event of a request, and storing events before the request answers.

Events of concurrent requests share one outbox write (a group commit): a single writer
task takes everything waiting (at most `MAX_BATCH_EVENTS`), stores it as one record, and
wakes the requests, which answer only then; the requests that come meanwhile wait for
the next record. A full outbox drops the events with a log line and a
count rather than fail the request: the action itself is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import uuid
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request

from oci.references import Digest
from registry.auth.caller import CALLER_KEY
from registry.config import WebhookEndpoint
from registry.events.audit import AuditLog
from registry.events.formats import wanted
from registry.metrics import TOTALS, Totals
from registry.request_id import REQUEST_ID_KEY
from storage.outbox import Event, Outbox, OutboxFullError

log = logging.getLogger("dockyard")

MAX_BATCH_EVENTS = 200
INSTANCE_ID = str(uuid.uuid4())
SOURCE_ADDR = socket.gethostname()

# Event ids: random UUIDs from a generator seeded from the system's randomness (in each
# process: reseeded after a fork), without uuid4's system call per event.
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)


def event_id() -> str:
    return str(uuid.UUID(int=_ids.getrandbits(128), version=4))


def request_part(request: Request) -> tuple[dict[str, str], str]:
    """What every event of a request says about it, and the registry's base URL as the
    client called it (as starlette's `request.url`: the Host header, else the server)."""
    scope = request.scope
    host = user_agent = ""
    for key, value in scope["headers"]:
        if key == b"host":
            host = value.decode("latin-1")
        elif key == b"user-agent":
            user_agent = value.decode("latin-1")
    client = scope.get("client")
    server = scope.get("server")
    netloc = host or (f"{server[0]}:{server[1]}" if server else "")
    part = {
        "id": scope.get(REQUEST_ID_KEY, ""),
        "addr": f"{client[0]}:{client[1]}" if client else "",
        "host": host,
        "method": scope["method"],
        "useragent": user_agent,
    }
    return part, f"{scope['scheme']}://{netloc}"


def build_event(
    request: Request,
    action: str,
    name: str,
    digest: Digest | None,
    *,
    media_type: str | None = None,
    size: int | None = None,
    tag: str | None = None,
    from_repository: str | None = None,
    about: tuple[dict[str, str], str] | None = None,
) -> Event:
    """An event in the shape of docker distribution's notifications; `about` is the
    request's `request_part` when the caller made it already."""
    request_fields, base_url = about or request_part(request)
    target: dict[str, Any] = {"repository": name}
    if digest is not None:
        target["digest"] = str(digest)
    if media_type is not None:
        target["mediaType"] = media_type
    if size is not None:
        target["size"] = target["length"] = size
    # as docker's: a delete's target is its digest and repository, and no URL
    if action != "delete" and digest is not None:
        kind = "blobs" if action == "mount" else "manifests"
        target["url"] = f"{base_url}/v2/{name}/{kind}/{digest}"
    if tag is not None:
        target["tag"] = tag
    if from_repository is not None:
        target["fromRepository"] = from_repository
    caller = request.scope.get(CALLER_KEY)
    return {
        "id": event_id(),
        "timestamp": datetime.now(UTC).isoformat(timespec="microseconds"),
        "action": action,
        "target": target,
        "request": request_fields,
        "actor": {"name": caller.name} if caller is not None and caller.name else {},
        "source": {"addr": SOURCE_ADDR, "instanceID": INSTANCE_ID},
    }


class EventRecorder:
    """Stores events in the audit log, and in the outbox those some endpoint wants (its
    filters: an event no endpoint would be sent is never stored, so a pull costs nothing
    when the endpoints take only pushes)."""

    def __init__(
        self,
        outbox: Outbox | None,
        audit: AuditLog | None,
        endpoints: Sequence[WebhookEndpoint] = (),
        totals: Totals = TOTALS,
    ) -> None:
        self.outbox = outbox
        self.audit = audit
        self.endpoints = tuple(endpoints) if outbox is not None else ()
        self.totals = totals
        # None: some endpoint takes every action
        self._actions: frozenset[str] | None = frozenset(
            action for endpoint in self.endpoints for action in endpoint.actions
        )
        if any(not endpoint.actions for endpoint in self.endpoints):
            self._actions = None
        self._waiting: deque[tuple[list[Event], asyncio.Future[None]]] = deque()
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    def wants(self, action: str) -> bool:
        """Whether an event of `action` would be stored anywhere."""
        if self.audit is not None:
            return True
        return bool(self.endpoints) and (self._actions is None or action in self._actions)

    async def record(self, *events: Event) -> None:
        """Returns once the events are stored (or dropped, the outbox being full)."""
        if self.audit is not None:
            await self.audit.write(list(events))
        events = tuple(e for e in events if any(wanted(end, e) for end in self.endpoints))
        if not events or self.outbox is None:
            return
        if self._writer is None or self._writer.done():
            self._wake = asyncio.Event()
            self._writer = asyncio.create_task(self._write_batches(self.outbox))
        stored = asyncio.get_running_loop().create_future()
        self._waiting.append((list(events), stored))
        self._wake.set()
        await stored

    async def _write_batches(self, outbox: Outbox) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._waiting:
                taken = [self._waiting.popleft()]
                count = len(taken[0][0])
                while self._waiting and count + len(self._waiting[0][0]) <= MAX_BATCH_EVENTS:
                    taken.append(self._waiting.popleft())
                    count += len(taken[-1][0])
                await self._write(outbox, taken, count)

    async def _write(
        self, outbox: Outbox, taken: list[tuple[list[Event], asyncio.Future[None]]], count: int
    ) -> None:
        failure: BaseException | None = None
        try:
            await outbox.append([event for events, _ in taken for event in events])
        except OutboxFullError as full:
            self.totals.events_dropped += count
            log.error("events dropped: %s (%d events); are the webhooks down?", full, count)
        except Exception as error:  # the requests answer with it (503): clients retry
            failure = error
        for _, stored in taken:
            if not stored.done():
                if failure is None:
                    stored.set_result(None)
                else:
                    stored.set_exception(failure)

    async def close(self) -> None:
        if self.audit is not None:
            self.audit.close()
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        if self.outbox is not None:
            await self.outbox.close()


async def emit(
    request: Request,
    action: str,
    name: str,
    digests: list[tuple[Digest, str | None]],
    **fields: Any,
) -> None:
    """Record one event per (digest, tag) of an action (nothing when events are off)."""
    recorder: EventRecorder = request.app.state.events
    if recorder.wants(action):
        about = request_part(request)
        await recorder.record(
            *(
                build_event(request, action, name, digest, tag=tag, about=about, **fields)
                for digest, tag in digests
            )
        )
