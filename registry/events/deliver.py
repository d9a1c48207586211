"""Delivering the outbox to the webhooks: in order, at least once, with backoff.

Each endpoint has a cursor object in the storage: for every producing process, the last
of its records the endpoint has taken (a 2xx or 3xx answer). A process writes its records
one after another, so their names (segment, then end offset) only grow; segments of
different processes are taken in name (time) order, and a record written late by a slow
process is still taken, since it is compared with its own process's cursor only. A
segment every endpoint has passed is removed once its writer has let it go. An endpoint
that fails is retried after 1 s, doubling up to `max_backoff`, and holds up only itself;
nothing of a stuck endpoint stays in memory but the names of the segments (bounded by
`outbox_max_batches`) and one request's records. Delivery restarts from the cursors after
a restart or a crash: a record sent but not yet marked is sent again (at least once).

Consecutive records go out together, in one request with one cursor write, and after a
delivery the next waits `GATHER_SECONDS` for more: under load, each request and cursor
write carries hundreds of events rather than the few of one record (bench/RESULTS.md,
"Cost of metrics and events"). An endpoint without filters in the distribution format
gets the records' stored JSON as it is, never decoded and encoded again.

One process delivers at a time, across every process and replica sharing the storage:
the one holding the lease `_events/lease` (storage.lease). It renews the lease as it
goes and before every request it sends; one that loses it stops, and every process that
does not hold it tries to take it each third of `lease_seconds`, so a dead holder's
lease is taken over once it expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import httpx

from registry.config import NotificationsConfig, WebhookEndpoint
from registry.events.formats import SIGNATURE_HEADER, Body, bodies_for, signature
from registry.metrics import TOTALS, Totals
from storage import paths
from storage.driver import PathNotFoundError
from storage.lease import LEASE_SECONDS, Lease, LeaseLostError, take
from storage.outbox import Outbox, Record, position, producer

log = logging.getLogger("dockyard")

POLL_SECONDS = 1.0
GATHER_SECONDS = 0.2  # after a delivery, the wait for more batches to send together
MAX_DELIVERY_EVENTS = 500  # events in one request at most (a few hundred KiB of JSON)
FIRST_BACKOFF = 1.0

TAIL_BYTES = 256 << 10  # a cut-off record is looked for only in a log's last bytes

Cursor = dict[str, str]  # producing process -> last record taken


def unread(segment: str, size: int, cursor: Cursor) -> tuple[int] | None:
    """Where the records of `segment` the cursor has not taken start (a 1-tuple, as 0 is
    a start), or None if it took them all."""
    taken = cursor.get(producer(segment))
    start = 0
    if taken is not None:
        taken_segment, end = position(taken)
        if segment < taken_segment:
            return None
        if segment == taken_segment:
            start = size if end < 0 else end
    return (start,) if start < size else None


class Deliverer:
    def __init__(
        self,
        outbox: Outbox,
        config: NotificationsConfig,
        totals: Totals = TOTALS,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self.outbox = outbox
        self.config = config
        self.totals = totals
        self.lease_seconds = lease_seconds

    async def run(self) -> None:
        """Deliver forever while holding the lease; without it, try to take it again."""
        while True:
            lease = await self._take_lease()
            if lease is None:
                await asyncio.sleep(self.lease_seconds / 3)
                continue
            try:
                await self._deliver_holding(lease)
            except* LeaseLostError:
                log.warning("webhook delivery: another process took the lease over")
            finally:
                await self._release(lease)

    async def _take_lease(self) -> Lease | None:
        try:
            return await take(self.outbox.driver, paths.events_lease(), self.lease_seconds)
        except Exception:
            log.exception("webhook delivery: taking the lease failed")
            return None

    async def _release(self, lease: Lease) -> None:
        """Free the lease for another process now rather than after its expiry."""
        with contextlib.suppress(Exception):  # it expires anyway
            await lease.release()

    async def _deliver_holding(self, lease: Lease) -> None:
        """A task per endpoint, the removal of delivered batches and the lease's renewal;
        all end (LeaseLostError) when the lease is lost."""
        async with httpx.AsyncClient(follow_redirects=True) as client, asyncio.TaskGroup() as tg:
            tg.create_task(self._renew(lease))
            for endpoint in self.config.endpoints:
                tg.create_task(self._serve(client, endpoint, lease))
            tg.create_task(self._remove_delivered())

    async def _renew(self, lease: Lease) -> None:
        while True:
            try:
                await lease.keep()
            except LeaseLostError:
                raise
            except Exception:
                log.exception("webhook delivery: renewing the lease failed")
            await asyncio.sleep(lease.seconds / 6)

    async def cursor(self, endpoint: str) -> Cursor:
        """What `endpoint` has taken; a cursor that is not whole is none (all is sent again)."""
        try:
            cursor = json.loads(await self.outbox.driver.get(paths.outbox_cursor(endpoint)))
        except (PathNotFoundError, ValueError):
            return {}
        return cursor if isinstance(cursor, dict) else {}

    async def undelivered(self) -> int:
        """Segments holding records some endpoint has not taken."""
        segments = await self.outbox.segments()
        cursors = [await self.cursor(e.name) for e in self.config.endpoints]
        return sum(1 for n, size in segments if any(unread(n, size, c) for c in cursors))

    async def _save_cursor(self, endpoint: str, cursor: Cursor) -> None:
        await self.outbox.driver.put(paths.outbox_cursor(endpoint), json.dumps(cursor).encode())

    async def _serve(
        self, client: httpx.AsyncClient, endpoint: WebhookEndpoint, lease: Lease
    ) -> None:
        backoff = 0.0
        while True:
            try:
                delivered = await self._deliver_pending(client, endpoint, lease)
                backoff = 0.0
                await asyncio.sleep(GATHER_SECONDS if delivered else POLL_SECONDS)
            except DeliveryError as error:
                backoff = min(self.config.max_backoff, max(FIRST_BACKOFF, backoff * 2))
                log.warning("webhook %s: %s; next try in %.0fs", endpoint.name, error, backoff)
                await asyncio.sleep(backoff)
            except LeaseLostError:
                raise
            except Exception:
                log.exception("webhook %s: delivery failed", endpoint.name)
                await asyncio.sleep(max(FIRST_BACKOFF, backoff))

    async def _deliver_pending(
        self, client: httpx.AsyncClient, endpoint: WebhookEndpoint, lease: Lease
    ) -> int:
        """Send every record the endpoint has not taken, oldest first, consecutive records
        together (up to `MAX_DELIVERY_EVENTS` events a request, the cursor saved once a
        request); how many records were sent."""
        segments = await self.outbox.segments()
        producers = {producer(name) for name, _ in segments}
        # A process none of whose segments is left has nothing to compare with its entry.
        cursor = {p: r for p, r in (await self.cursor(endpoint.name)).items() if p in producers}
        pending = [(name, at) for name, size in segments if (at := unread(name, size, cursor))]
        self.totals.webhook_pending[endpoint.name] = len(pending)
        taken: list[Record] = []
        count = sent = 0
        for name, start in pending:
            for record in (await self.outbox.read(name, start[0])).records:
                taken.append(record)
                count += record.count
                if count >= MAX_DELIVERY_EVENTS:
                    await self._take(client, endpoint, lease, cursor, taken)
                    sent += len(taken)
                    taken, count = [], 0
        if taken:
            await self._take(client, endpoint, lease, cursor, taken)
            sent += len(taken)
        self.totals.webhook_pending[endpoint.name] = 0
        return sent

    async def _take(
        self,
        client: httpx.AsyncClient,
        endpoint: WebhookEndpoint,
        lease: Lease,
        cursor: Cursor,
        records: list[Record],
    ) -> None:
        """Send `records` to the endpoint and move its cursor past them."""
        await lease.keep()  # LeaseLostError if another process delivers now
        await self._send(client, endpoint, bodies_for(endpoint, records))
        cursor.update((producer(record.id), record.id) for record in records)
        await self._save_cursor(endpoint.name, cursor)

    async def _send(
        self, client: httpx.AsyncClient, endpoint: WebhookEndpoint, bodies: list[Body]
    ) -> None:
        for body, content_type in bodies:
            headers = {**endpoint.headers, "Content-Type": content_type}
            if endpoint.secret is not None:
                headers[SIGNATURE_HEADER] = signature(endpoint.secret.get_secret_value(), body)
            try:
                response = await client.post(
                    endpoint.url, content=body, headers=headers, timeout=endpoint.timeout
                )
            except httpx.HTTPError as error:
                self.totals.count_delivery(endpoint.name, "failed")
                raise DeliveryError(f"{type(error).__name__}: {error}") from None
            if response.status_code >= 400:
                self.totals.count_delivery(endpoint.name, "failed")
                raise DeliveryError(f"answered {response.status_code}")
            self.totals.count_delivery(endpoint.name, "sent")

    async def _remove_delivered(self) -> None:
        """Remove the segments every endpoint has taken (once their writers let them go);
        forget cursors of gone processes."""
        while True:
            try:
                segments = await self.outbox.segments()
                cursors = [await self.cursor(e.name) for e in self.config.endpoints]
                for name, size in segments:
                    starts = [at[0] for c in cursors if (at := unread(name, size, c))]
                    if starts and not await self._only_cut_off(name, size, min(starts)):
                        continue
                    await self.outbox.remove(name, size)
            except Exception:
                log.exception("removing delivered event segments failed")
            await asyncio.sleep(POLL_SECONDS)

    async def _only_cut_off(self, name: str, size: int, start: int) -> bool:
        """Whether the segment holds no whole record past `start`: a record cut off by a
        crash (removing it then waits for its writer to be gone). Only a log's last bytes
        are looked at: whole objects hold whole records, and an endpoint behind by more
        than a record has records to take."""
        if not self.outbox.driver.appends_in_place or size - start > TAIL_BYTES:
            return False
        return not (await self.outbox.read(name, start)).records


class DeliveryError(Exception):
    """The endpoint did not take a delivery (no answer, or a 4xx or 5xx)."""
