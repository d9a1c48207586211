"""What a delivery looks like: docker distribution's envelope or CloudEvents 1.0, signed.

A `secret` signs the exact body: `X-Dockyard-Signature: sha256=<hex HMAC-SHA256>`, which a
receiver recomputes with the shared secret (and compares in constant time).
"""

from __future__ import annotations

import hashlib
import hmac
import json

from storage.outbox import Event

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


def bodies_of(events: list[Event], format: str) -> list[tuple[bytes, str]]:
    """The request bodies delivering `events`, with their content type: one envelope of
    them all, or one CloudEvent a request (structured mode, as zot and Harbor send)."""
    if format == "cloudevents":
        return [(json.dumps(cloudevent(e)).encode(), CLOUDEVENTS_MEDIA_TYPE) for e in events]
    return [(json.dumps({"events": events}).encode(), DISTRIBUTION_MEDIA_TYPE)]


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
