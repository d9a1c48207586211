"""What a delivery looks like: docker distribution's envelope or CloudEvents 1.0, signed.

A `secret` signs the exact body: `X-Dockyard-Signature: sha256=<hex HMAC-SHA256>`, which a
receiver recomputes with the shared secret (and compares in constant time).
"""

from __future__ import annotations

import hashlib
import hmac
import json

from oci.globs import matches_any
from registry.config import WebhookEndpoint
from storage.outbox import Event, Record

DISTRIBUTION_MEDIA_TYPE = "application/vnd.docker.distribution.events.v2+json"
CLOUDEVENTS_MEDIA_TYPE = "application/cloudevents+json"
SIGNATURE_HEADER = "X-Dockyard-Signature"
CLOUDEVENT_TYPE_PREFIX = "io.dockyard.registry."


def cloudevent(event: Event) -> dict[str, object]:
    """A CloudEvents 1.0 structured event; `data` is the distribution event."""
    target = event["target"]
    subject = target["repository"] + (f":{target['tag']}" if "tag" in target else "")
    return {
        "specversion": "1.0",
        "id": event["id"],
        "source": f"/dockyard/{event['source']['addr']}",
        "type": CLOUDEVENT_TYPE_PREFIX + event["action"],
        "subject": subject,
        "time": event["timestamp"],
        "datacontenttype": "application/json",
        "data": event,
    }


Body = tuple[bytes, str]  # a request body and its content type


def wanted(endpoint: WebhookEndpoint, event: Event) -> bool:
    target = event["target"]
    if endpoint.actions and event["action"] not in endpoint.actions:
        return False
    if endpoint.media_types and target.get("mediaType", None) not in (None, *endpoint.media_types):
        return False
    return not endpoint.repositories or matches_any(endpoint.repositories, target["repository"])


def bodies_for(endpoint: WebhookEndpoint, records: list[Record]) -> list[Body]:
    """The request bodies delivering the events of `records` the endpoint wants."""
    if endpoint.format == "distribution" and not (
        endpoint.actions or endpoint.media_types or endpoint.repositories
    ):
        # Every event as stored: the records' JSON lists joined, not decoded.
        lists = [record.raw[1:-1] for record in records if record.count]
        body = b'{"events":[' + b",".join(lists) + b"]}"
        return [(body, DISTRIBUTION_MEDIA_TYPE)] if lists else []
    events = [e for record in records for e in record.events() if wanted(endpoint, e)]
    return bodies_of(events, endpoint.format) if events else []


def bodies_of(events: list[Event], format: str) -> list[Body]:
    """The request bodies delivering `events`, with their content type: one envelope of
    them all, or one CloudEvent a request (structured mode, as zot and Harbor send)."""
    if format == "cloudevents":
        return [(json.dumps(cloudevent(e)).encode(), CLOUDEVENTS_MEDIA_TYPE) for e in events]
    return [(json.dumps({"events": events}).encode(), DISTRIBUTION_MEDIA_TYPE)]


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
