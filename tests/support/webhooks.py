"""A webhook receiver on loopback for tests: records what it is sent, can be made to fail."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def signed_with(self, secret: str) -> bool:
        expected = "sha256=" + hmac.new(secret.encode(), self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(self.headers.get("x-dockyard-signature", ""), expected)


class WebhookReceiver:
    """`url` takes POSTs; `failing` answers them 503 (an outage), `stop()` closes the port."""

    def __init__(self, port: int = 0) -> None:
        self.deliveries: list[Delivery] = []
        self.failing = False
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if receiver.failing:
                    self.send_response(503)
                else:
                    with receiver.lock:
                        headers = {k.lower(): v for k, v in self.headers.items()}
                        receiver.deliveries.append(Delivery(headers, body))
                    self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/events"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def received(self) -> list[Delivery]:
        with self.lock:
            return list(self.deliveries)

    def events(self) -> list[dict[str, Any]]:
        """Every event received, in order: from distribution envelopes or CloudEvents."""
        found: list[dict[str, Any]] = []
        for delivery in self.received():
            body = delivery.json()
            found.extend(body["events"] if "events" in body else [body["data"]])
        return found

    def wait_for(self, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        """The events received once at least `count` distinct ones arrived (or raise)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = self.events()
            if len({event["id"] for event in events}) >= count:
                return events
            time.sleep(0.1)
        raise AssertionError(f"{len(self.events())} events arrived, {count} expected")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
