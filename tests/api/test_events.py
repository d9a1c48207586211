"""Events: recorded in the storage's outbox before the answer, audited, delivered to
webhooks on loopback in order, signed, in both formats, after an outage."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

import registry.events.deliver
from registry.app import create_app
from registry.config import Config
from registry.events.deliver import Deliverer
from registry.metrics import Totals
from storage.driver import StorageDriver
from storage.filesystem import FilesystemDriver
from storage.lease import Lease
from storage.outbox import Outbox
from tests.api.helpers import OCI_MANIFEST, digest_of, push_image
from tests.storage.test_outbox_log import cut_off_record
from tests.support.drivers import twin
from tests.support.webhooks import WebhookReceiver

SECRET = "s3cret"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    made = WebhookReceiver()
    yield made
    made.stop()


def events_config(receiver: WebhookReceiver, tmp_path: Path, **extra: Any) -> Config:
    return Config(
        notifications={
            "endpoints": [
                {"name": "plain", "url": receiver.url, "secret": SECRET},
                {
                    "name": "cloud",
                    "url": receiver.url.replace("/events", "/cloud"),
                    "format": "cloudevents",
                    "repositories": ["team/**"],
                    "actions": ["push", "delete"],
                },
            ],
            "audit": {"enabled": True, "path": str(tmp_path / "audit.log")},
            **extra,
        }
    )


async def stored_events(driver: StorageDriver) -> list[dict[str, Any]]:
    outbox = Outbox(driver, 100)
    segments = [await outbox.read(name) for name, _ in await outbox.segments()]
    return [e for segment in segments for record in segment.records for e in record.events()]


async def do_everything(client: httpx.AsyncClient) -> str:
    """Push, pull (GET; a HEAD is no event), mount, untag, delete a blob; the digest."""
    digest, _ = await push_image(client, "team/app", "1")
    assert (
        await client.get("/v2/team/app/manifests/1", headers={"Accept": OCI_MANIFEST})
    ).is_success
    assert (await client.head("/v2/team/app/manifests/1")).is_success
    layer = digest_of(b"layer of x")
    mounted = await client.post(f"/v2/other/app/blobs/uploads/?mount={layer}&from=team/app")
    assert mounted.status_code == 201
    assert (await client.delete("/v2/team/app/manifests/1")).status_code == 202
    assert (await client.delete(f"/v2/other/app/blobs/{layer}")).status_code == 202
    return digest


@pytest.fixture
def config(receiver: WebhookReceiver, tmp_path: Path) -> Config:
    return events_config(receiver, tmp_path)


async def test_every_action_is_in_the_outbox_and_the_audit_log_when_it_answers(
    client: httpx.AsyncClient, driver: StorageDriver, tmp_path: Path
) -> None:
    digest = await do_everything(client)
    events = await stored_events(driver)
    layer = digest_of(b"layer of x")
    summary = [
        (e["action"], e["target"]["repository"], e["target"]["digest"], e["target"].get("tag"))
        for e in events
    ]
    assert summary == [
        ("push", "team/app", digest, "1"),
        ("pull", "team/app", digest, "1"),
        ("mount", "other/app", layer, None),
        ("delete", "team/app", digest, "1"),
        ("delete", "other/app", layer, None),
    ]
    assert events[0]["target"]["mediaType"] == OCI_MANIFEST
    assert events[2]["target"]["fromRepository"] == "team/app"
    assert events[1]["request"]["method"] == "GET"
    audit = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    assert [(a["action"], a["repository"], a["digest"]) for a in audit] == [s[:3] for s in summary]
    assert all(a["addr"] and a["time"] and a["method"] for a in audit)


async def test_events_no_endpoint_wants_are_not_stored(
    driver: StorageDriver, receiver: WebhookReceiver
) -> None:
    pushes = {"name": "pushes", "url": receiver.url, "actions": ["push", "delete"]}
    team = {"name": "team", "url": receiver.url, "repositories": ["other/**"], "actions": ["mount"]}
    app = create_app(Config(notifications={"endpoints": [pushes, team]}), driver)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://registry.test"
    ) as client:
        digest = await do_everything(client)
    layer = digest_of(b"layer of x")
    summary = [
        (e["action"], e["target"]["repository"], e["target"]["digest"])
        for e in await stored_events(driver)
    ]
    assert summary == [  # no pull: neither endpoint takes them
        ("push", "team/app", digest),
        ("mount", "other/app", layer),
        ("delete", "team/app", digest),
        ("delete", "other/app", layer),
    ]


def first_of_each(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    first: dict[str, dict[str, Any]] = {}
    for event in events:
        first.setdefault(event["id"], event)
    return list(first.values())


async def wait_until(done: Any, limit: float = 60.0) -> None:
    for _ in range(int(limit / 0.05)):
        if await done():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("delivery did not finish")


async def deliver_until(deliverer: Deliverer, done: Any, limit: float = 60.0) -> None:
    task = asyncio.create_task(deliverer.run())
    try:
        await wait_until(done, limit)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_delivery_after_an_outage_in_order_signed_filtered_and_the_outbox_emptied(
    client: httpx.AsyncClient,
    app: Starlette,
    driver: StorageDriver,
    receiver: WebhookReceiver,
    config: Config,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry.events.deliver, "POLL_SECONDS", 0.05)
    monkeypatch.setattr(registry.events.deliver, "FIRST_BACKOFF", 0.05)
    digest = await do_everything(client)
    receiver.failing = True
    outbox = Outbox(driver, 100)
    totals = Totals()
    deliverer = Deliverer(outbox, config.notifications, totals)

    async def failed_twice() -> bool:
        return totals.webhook_deliveries.get(("plain", "failed"), 0) >= 2

    await deliver_until(deliverer, failed_twice)
    assert receiver.received() == [] and await stored_events(driver)

    receiver.failing = False

    async def all_delivered() -> bool:
        # The cursors are in storage a moment before the deliverer, resuming, zeroes its
        # pending counts: wait for both (ending the deliverer between them left one stale).
        pending = set(totals.webhook_pending.values())
        return not await deliverer.undelivered() and pending == {0}

    async def all_removed() -> bool:
        return not await outbox.segments()

    await deliver_until(deliverer, all_delivered)
    assert totals.webhook_pending == {"plain": 0, "cloud": 0}
    await app.state.events.close()  # the writer lets its log segment go: it is removed
    await deliver_until(deliverer, all_removed)
    assert totals.webhook_deliveries[("plain", "sent")] >= 1
    deliveries = receiver.received()
    plain = [d for d in deliveries if d.headers["content-type"].endswith("events.v2+json")]
    cloud = [d for d in deliveries if d.headers["content-type"] == "application/cloudevents+json"]
    assert len(plain) + len(cloud) == len(deliveries)
    assert all(d.signed_with(SECRET) for d in plain)
    assert all("x-dockyard-signature" not in d.headers for d in cloud)
    assert not plain[0].signed_with("another secret")
    # At least once: a request cut off by the end of the first round may still have been
    # taken once the receiver is back, and is sent again; the first of each id counts.
    plain_events = first_of_each([e for d in plain for e in d.json()["events"]])
    assert [e["action"] for e in plain_events] == ["push", "pull", "mount", "delete", "delete"]
    cloud_events = first_of_each([d.json() for d in cloud])
    assert [c["type"] for c in cloud_events] == [
        "io.dockyard.registry.push",
        "io.dockyard.registry.delete",
    ]
    assert all(c["specversion"] == "1.0" and c["id"] and c["source"] for c in cloud_events)
    assert cloud_events[0]["data"]["target"]["digest"] == digest
    assert cloud_events[0]["subject"] == "team/app:1"


@pytest.mark.parametrize("driver", ["memory"], indirect=True)
async def test_a_full_outbox_drops_events_with_a_log_line(
    driver: StorageDriver,
    receiver: WebhookReceiver,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = create_app(events_config(receiver, tmp_path, outbox_max_batches=1), driver)
    app.state.events.totals = totals = Totals()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as client:
        with caplog.at_level(logging.ERROR, logger="dockyard"):
            await push_image(client, "team/app", "1")
            await push_image(client, "team/app", "2")  # answered, though its event is dropped
    assert [e["target"]["tag"] for e in await stored_events(driver)] == ["1"]
    assert totals.events_dropped == 1
    assert "events dropped" in caplog.text


@pytest.mark.parametrize("driver", ["memory"], indirect=True)
async def test_batches_and_cursors_cut_off_empty_are_skipped_and_resent(
    driver: StorageDriver,
    receiver: WebhookReceiver,
    config: Config,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry.events.deliver, "POLL_SECONDS", 0.05)
    outbox = Outbox(driver, 100)
    await driver.put("_events/outbox/00000000000000000001-1.a-0000000000", b"")
    await driver.put("_events/cursors/plain", b"")
    event = {"id": "e1", "action": "push", "target": {"repository": "x", "digest": "sha256:0"}}
    await outbox.append([event])
    deliverer = Deliverer(
        outbox,
        config.notifications.model_copy(update={"endpoints": [config.notifications.endpoints[0]]}),
    )

    async def all_delivered() -> bool:
        return not await outbox.segments()

    await deliver_until(deliverer, all_delivered)
    assert [e["id"] for e in receiver.events()] == ["e1"]


@pytest.mark.parametrize("driver", ["memory"], indirect=True)
async def test_consecutive_batches_go_in_one_request_up_to_the_bound(
    driver: StorageDriver,
    receiver: WebhookReceiver,
    config: Config,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under load the outbox holds many small batches: each request carries several (so
    a delivery costs one request and one cursor write per few hundred events)."""
    monkeypatch.setattr(registry.events.deliver, "MAX_DELIVERY_EVENTS", 4)
    outbox = Outbox(driver, 100)
    ids = [f"e{i}" for i in range(10)]
    for pair in zip(ids[::2], ids[1::2], strict=True):
        await outbox.append(
            [{"id": i, "action": "pull", "target": {"repository": "x"}} for i in pair]
        )
    plain = config.notifications.model_copy(
        update={"endpoints": [config.notifications.endpoints[0]]}
    )

    async def all_delivered() -> bool:
        return not await outbox.segments()

    await deliver_until(Deliverer(outbox, plain), all_delivered)
    sizes = [len(delivery.json()["events"]) for delivery in receiver.received()]
    assert sizes == [4, 4, 2]
    assert [event["id"] for event in receiver.events()] == ids


async def test_one_deliverer_at_a_time_and_another_takes_over_when_it_dies(
    client: httpx.AsyncClient,
    driver: StorageDriver,
    receiver: WebhookReceiver,
    config: Config,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two processes deliver at once: the receiver gets each event once. The holder of
    the lease stopped as a crash would (not freeing it), the other takes over once the
    lease expires and delivers the rest."""
    monkeypatch.setattr(registry.events.deliver, "POLL_SECONDS", 0.05)

    async def left_held(lease: Lease) -> None:
        pass

    monkeypatch.setattr(Lease, "release", left_held)
    plain = config.notifications.model_copy(
        update={"endpoints": [config.notifications.endpoints[0]]}
    )
    drivers = [driver, twin(driver)]
    totals = [Totals(), Totals()]
    # S3 times are whole seconds, so a renewed lease can look up to a second older than it
    # is: a lease of 1 s would be taken over from a live holder now and then.
    deliverers = [
        Deliverer(Outbox(d, 100), plain, t, lease_seconds=3.0)
        for d, t in zip(drivers, totals, strict=True)
    ]
    tasks = [asyncio.create_task(d.run()) for d in deliverers]

    def delivered_by(index: int) -> int:
        return totals[index].webhook_deliveries.get(("plain", "sent"), 0)

    async def all_delivered() -> bool:
        return not await deliverers[0].undelivered()

    try:
        for tag in ("1", "2", "3"):
            await push_image(client, "team/app", tag)
        await wait_until(all_delivered)
        holders = [i for i in (0, 1) if delivered_by(i)]
        assert len(holders) == 1, "both processes delivered"
        holder = holders[0]
        tasks[holder].cancel()
        await asyncio.gather(tasks[holder], return_exceptions=True)
        for tag in ("4", "5"):
            await push_image(client, "team/app", tag)
        await wait_until(all_delivered)
        assert delivered_by(1 - holder) > 0
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if drivers[1] is not driver:
            await drivers[1].close()
    ids = [event["id"] for event in receiver.events()]
    assert len(ids) == 5 and len(set(ids)) == 5
    assert [e["target"]["tag"] for e in receiver.events()] == ["1", "2", "3", "4", "5"]


@pytest.mark.parametrize("driver", ["filesystem"], indirect=True)
async def test_a_dead_writers_cut_off_record_is_skipped_and_its_segment_removed(
    driver: FilesystemDriver,
    receiver: WebhookReceiver,
    config: Config,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A writer killed in the middle of a record leaves part of a line: the whole records
    are delivered, and the segment goes once its writer is gone."""
    monkeypatch.setattr(registry.events.deliver, "POLL_SECONDS", 0.05)
    writer = Outbox(driver, 100)
    event = {"id": "e1", "action": "push", "target": {"repository": "x", "digest": "sha256:0"}}
    await writer.append([event])
    await writer.close()  # as its process's death lets the segment go
    [(name, _)] = await writer.segments()
    cut_off_record(driver.path(f"_events/outbox/{name}"))
    plain = config.notifications.model_copy(
        update={"endpoints": [config.notifications.endpoints[0]]}
    )

    async def all_removed() -> bool:
        return not await writer.segments()

    await deliver_until(Deliverer(writer, plain), all_removed)
    assert [e["id"] for e in receiver.events()] == ["e1"]
