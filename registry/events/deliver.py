"""Delivering the outbox to the webhooks: in order, at least once, with backoff.

Each endpoint has a cursor object in the storage: for every producing process, the last
of its batches the endpoint has taken (a 2xx or 3xx answer). A process writes its batches
one after another, so its batch names only grow; batches of different processes are
taken in name (time) order, and one written late by a slow process is still taken, since
it is compared with its own process's cursor only. A batch every endpoint has passed is
removed. An endpoint that fails is retried after 1 s, doubling up to `max_backoff`, and
holds up only itself; nothing of a stuck endpoint stays in memory but the names of the
batches (bounded by `outbox_max_batches`). Delivery restarts from the cursors after a
restart or a crash: a batch sent but not yet marked is sent again (at least once).

Consecutive batches go out together, in one request with one cursor write, and after a
delivery the next waits `GATHER_SECONDS` for more: under load, each request and cursor
write carries hundreds of events rather than the few of one batch (bench/RESULTS.md,
"Cost of metrics and events").

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

from oci.globs import matches_any
from registry.config import NotificationsConfig, WebhookEndpoint
from registry.events.formats import SIGNATURE_HEADER, bodies_of, signature
from registry.metrics import TOTALS, Totals
from storage import paths
from storage.driver import PathNotFoundError
from storage.lease import LEASE_SECONDS, Lease, LeaseLostError, take
from storage.outbox import Event, Outbox

log = logging.getLogger("dockyard")

POLL_SECONDS = 1.0
GATHER_SECONDS = 0.2  # after a delivery, the wait for more batches to send together
MAX_DELIVERY_EVENTS = 500  # events in one request at most (a few hundred KiB of JSON)
FIRST_BACKOFF = 1.0

Cursor = dict[str, str]  # producing process -> last batch taken


def producer(batch: str) -> str:
    return batch.split("-")[1]


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
        """Send every batch the endpoint has not taken, oldest first, consecutive batches
        together (up to `MAX_DELIVERY_EVENTS` events a request, the cursor saved once a
        request); how many batches were sent."""
        batches = await self.outbox.batches()
        producers = {producer(batch) for batch in batches}
        # A process none of whose batches is left has nothing to compare with its entry.
        cursor = {p: b for p, b in (await self.cursor(endpoint.name)).items() if p in producers}
        pending = [b for b in batches if b > cursor.get(producer(b), "")]
        self.totals.webhook_pending[endpoint.name] = len(pending)
        taken: list[str] = []
        events: list[Event] = []
        for batch in pending:
            taken.append(batch)
            events += [e for e in await self.outbox.read(batch) or () if wanted(endpoint, e)]
            if len(events) >= MAX_DELIVERY_EVENTS or batch == pending[-1]:
                await lease.keep()  # LeaseLostError if another process delivers now
                await self._send(client, endpoint, events)
                cursor.update((producer(taken_batch), taken_batch) for taken_batch in taken)
                await self._save_cursor(endpoint.name, cursor)
                self.totals.webhook_pending[endpoint.name] -= len(taken)
                taken, events = [], []
        return len(pending)

    async def _send(
        self, client: httpx.AsyncClient, endpoint: WebhookEndpoint, events: list[Event]
    ) -> None:
        if not events:
            return
        for body, content_type in bodies_of(events, endpoint.format):
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
        """Remove the batches every endpoint has taken; forget cursors of gone processes."""
        while True:
            try:
                batches = await self.outbox.batches()
                cursors = [await self.cursor(e.name) for e in self.config.endpoints]
                for batch in batches:
                    if all(batch <= cursor.get(producer(batch), "") for cursor in cursors):
                        await self.outbox.remove(batch)
            except Exception:
                log.exception("removing delivered event batches failed")
            await asyncio.sleep(POLL_SECONDS)


class DeliveryError(Exception):
    """The endpoint did not take a delivery (no answer, or a 4xx or 5xx)."""


def wanted(endpoint: WebhookEndpoint, event: Event) -> bool:
    target = event["target"]
    if endpoint.actions and event["action"] not in endpoint.actions:
        return False
    if endpoint.media_types and target.get("mediaType", None) not in (None, *endpoint.media_types):
        return False
    return not endpoint.repositories or matches_any(endpoint.repositories, target["repository"])
