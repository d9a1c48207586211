"""Webhooks for a real docker push: both envelopes arrive signed at loopback receivers, and
every event gets through a receiver outage and a kill -9 of the registry in between."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from storage import paths
from storage.lease import LEASE_SECONDS
from tests.support.dockerd import DockerDaemon
from tests.support.server import RegistryProcess
from tests.support.storage_clock import set_back
from tests.support.webhooks import WebhookReceiver

pytestmark = pytest.mark.e2e

SECRET = "webhook secret"


@pytest.fixture
def receivers() -> Iterator[dict[str, WebhookReceiver]]:
    made = {"distribution": WebhookReceiver(), "cloudevents": WebhookReceiver()}
    yield made
    for receiver in made.values():
        receiver.stop()


def audited_ids(server: RegistryProcess) -> set[str]:
    """Every event the registry produced, from its audit log."""
    lines = (server.workdir / "audit.log").read_text().splitlines()
    return {json.loads(line)["event_id"] for line in lines}


def test_docker_push_events_survive_an_outage_and_kill_9(
    dockerd: DockerDaemon,
    receivers: dict[str, WebhookReceiver],
    tmp_path: Path,
    storage_config: dict[str, Any],
) -> None:
    endpoints = [
        {"name": name, "url": r.url, "format": name, "secret": SECRET}
        for name, r in receivers.items()
    ]
    workdir = tmp_path / "registry"
    settings = {
        "storage": storage_config,
        "notifications": {
            "endpoints": endpoints,
            "audit": {"enabled": True, "path": str(workdir / "audit.log")},
        },
    }
    server = RegistryProcess(workdir, settings, workers=2).start()
    first, second = f"{server.host}/team/app:1", f"{server.host}/team/app:2"
    try:
        dockerd.build_image(first, tmp_path / "context")
        dockerd.run("push", first)
        for receiver in receivers.values():
            receiver.wait_for(1)

        port = receivers["distribution"].port  # the receiver goes down: connections refused
        receivers["distribution"].stop()
        receivers["cloudevents"].failing = True  # this one answers 503
        dockerd.run("tag", first, second)
        dockerd.run("push", second)
        dockerd.run("rmi", first)
        dockerd.run("pull", first)
        server.kill()  # kill -9: its events are in the outbox, nowhere else
        if "s3" not in storage_config:  # its delivery lease expires as a minute would
            set_back([workdir / "data" / paths.events_lease()], LEASE_SECONDS + 1)
        produced = audited_ids(server)
        server.start()
        old = receivers["distribution"].received()
        receivers["distribution"] = WebhookReceiver(port)
        receivers["distribution"].deliveries[:0] = old
        receivers["cloudevents"].failing = False

        for name, receiver in receivers.items():
            # The killed holder's delivery lease expires first (on S3 in real time), then
            # the new server's workers take it over.
            events = receiver.wait_for(len(produced), timeout=LEASE_SECONDS + 60)
            assert {e["id"] for e in events} == produced, name
            assert all(d.signed_with(SECRET) for d in receiver.received()), name
            actions = {(e["action"], e["target"].get("tag")) for e in events}
            # docker resolves the tag with a HEAD (no event), then GETs by digest
            assert {("push", "1"), ("push", "2"), ("pull", None)} <= actions, (name, actions)
        cloud = receivers["cloudevents"].received()[0]
        assert cloud.headers["content-type"] == "application/cloudevents+json"
        assert cloud.json()["specversion"] == "1.0"
    finally:
        server.stop()
        dockerd.run("rmi", "--force", first, second, check=False)
