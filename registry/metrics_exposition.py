"""Serving the metrics: `GET /metrics` on the main port, or a listener of its own.

A scrape sums the totals every worker publishes in the server's metrics directory
(`registry.metrics`), the answering worker's own taken fresh, and renders them in
the Prometheus text format with prometheus-client. The separate listener
(`metrics.address`) runs in the `dockyard serve` process itself, in a thread, and
reads the same files. An optional bearer token guards both.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.exposition import ThreadingWSGIServer
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from oci.errors import ErrorCode, RegistryError
from registry import metrics
from registry.config import MetricsConfig, split_address
from registry.error_response import error_response

PATH = "/metrics"
Snapshot = dict[str, Any]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, under another user
        return True
    return True


def worker_snapshots(own: Snapshot | None) -> list[tuple[Snapshot, bool]]:
    """Every worker's totals with whether it is alive: `own` (this worker's, fresh)
    and the files the others published."""
    found = [(own, True)] if own is not None else []
    directory = os.environ.get(metrics.METRICS_DIR_ENV)
    if not directory:
        return found
    skip = os.getpid() if own is not None else None
    for path in Path(directory).glob("worker-*.json"):
        pid = int(path.stem.removeprefix("worker-"))
        if pid == skip:
            continue
        try:
            found.append((json.loads(path.read_text()), _alive(pid)))
        except (OSError, ValueError):  # gone or replaced meanwhile: it is counted next time
            continue
    return found


def _add(sums: dict[tuple[str, ...], list[float]], rows: list[list[Any]], labels: int) -> None:
    for row in rows:
        key, values = tuple(row[:labels]), row[labels:]
        total = sums.setdefault(key, [0.0] * len(values))
        for index, value in enumerate(values):
            total[index] += value


def _bucket_bounds(bounds: tuple[float, ...]) -> list[str]:
    return [repr(float(bound)) for bound in bounds] + ["+Inf"]


def _histogram(
    name: str, documentation: str, labels: list[str], sums: dict, bounds: tuple[float, ...]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=labels)
    names = _bucket_bounds(bounds)
    for key, values in sorted(sums.items()):
        counts, total = values[:-1], values[-1]
        cumulative, running = [], 0.0
        for bound, count in zip(names, counts, strict=True):
            running += count
            cumulative.append((bound, running))
        family.add_metric(list(key), cumulative, total)
    return family


def families(snapshots: list[tuple[Snapshot, bool]]) -> Iterator[Metric]:
    """The metric families of the summed snapshots."""
    sums: dict[str, dict[tuple[str, ...], list[float]]] = {}
    for field, labels in (
        ("requests", 3),
        ("durations", 1),
        ("request_bytes", 1),
        ("response_bytes", 1),
        ("storage", 2),
        ("auth_failures", 1),
        ("webhook_deliveries", 2),
        ("proxy", 2),
    ):
        sums[field] = {}
        for snapshot, _ in snapshots:
            _add(sums[field], snapshot[field], labels)
    requests = CounterMetricFamily(
        "registry_http_requests", "HTTP requests answered", labels=["method", "route", "code"]
    )
    for key, (count,) in sorted(sums["requests"].items()):
        requests.add_metric(list(key), count)
    yield requests
    yield _histogram(
        "registry_http_request_duration_seconds",
        "Time from request to the end of the response",
        ["route"],
        sums["durations"],
        metrics.DURATION_BUCKETS,
    )
    for field, name, documentation in (
        ("request_bytes", "registry_http_request_size_bytes", "Request body bytes (sum: in)"),
        ("response_bytes", "registry_http_response_size_bytes", "Response body bytes (sum: out)"),
    ):
        summary = SummaryMetricFamily(name, documentation, labels=["route"])
        for key, (count, total) in sorted(sums[field].items()):
            summary.add_metric(list(key), count, total)
        yield summary
    live = [snapshot for snapshot, alive in snapshots if alive]
    yield GaugeMetricFamily(
        "registry_http_in_flight_requests",
        "Requests being served",
        value=sum(s["in_flight"] for s in live),
    )
    yield GaugeMetricFamily(
        "registry_uploads_in_progress",
        "Blob upload requests (POST, PATCH, PUT) being received",
        value=sum(s["uploads"] for s in live),
    )
    yield _histogram(
        "registry_storage_action_seconds",
        "Time of storage driver actions (a read: until its first piece)",
        ["driver", "action"],
        sums["storage"],
        metrics.STORAGE_BUCKETS,
    )
    failures = CounterMetricFamily(
        "registry_auth_failures",
        "Refused credentials (401 to a request that carried some) and denied access (403)",
        labels=["reason"],
    )
    for key, (count,) in sorted(sums["auth_failures"].items()):
        failures.add_metric(list(key), count)
    yield failures
    yield CounterMetricFamily(
        "registry_throttled_requests",
        "Requests refused with 429",
        value=sum(s["throttled"] for s, _ in snapshots),
    )
    yield from _event_families(sums["webhook_deliveries"], snapshots, live)
    yield from _proxy_families(sums["proxy"])
    yield from _gc_families(snapshots)


def _proxy_families(sums: dict[tuple[str, ...], list[float]]) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "registry_proxy_requests",
        "Pull-through cache requests by upstream and result (hit, miss, stale)",
        labels=["upstream", "result"],
    )
    received = CounterMetricFamily(
        "registry_proxy_upstream_bytes", "Bytes fetched from each upstream", labels=["upstream"]
    )
    errors = CounterMetricFamily(
        "registry_proxy_upstream_errors",
        "Upstream requests that failed (unreachable, slow, 5xx, 429, wrong content)",
        labels=["upstream"],
    )
    for (upstream, what), (count,) in sorted(sums.items()):
        if what == "bytes":
            received.add_metric([upstream], count)
        elif what == "error":
            errors.add_metric([upstream], count)
        else:
            requests.add_metric([upstream, what], count)
    yield from (requests, received, errors)


def _gc_families(snapshots: list[tuple[Snapshot, bool]]) -> Iterator[Metric]:
    """The background collector's runs in this server (not the ones it found another
    process or replica running)."""
    durations: dict[tuple[str, ...], list[float]] = {}
    _add(durations, [snapshot["gc_duration"] for snapshot, _ in snapshots], 0)
    deleted: dict[tuple[str, ...], list[float]] = {}
    _add(deleted, [row for snapshot, _ in snapshots for row in snapshot["gc_deleted"]], 1)
    histogram = durations.get((), [0.0] * (len(metrics.GC_BUCKETS) + 2))
    yield CounterMetricFamily(
        "registry_gc_runs", "Background garbage collections run", value=sum(histogram[:-1])
    )
    yield _histogram(
        "registry_gc_duration_seconds",
        "Time a background garbage collection took",
        [],
        {(): histogram},
        metrics.GC_BUCKETS,
    )
    for kind in metrics.GC_REMOVED:
        yield CounterMetricFamily(
            f"registry_gc_{kind}_deleted",
            f"{kind.capitalize()} the background garbage collector deleted",
            value=deleted.get((kind,), [0.0])[0],
        )
    yield CounterMetricFamily(
        "registry_gc_bytes_freed",
        "Bytes of blobs the background garbage collector deleted",
        value=sum(snapshot["gc_bytes_freed"] for snapshot, _ in snapshots),
    )


def _event_families(
    deliveries: dict[tuple[str, ...], list[float]],
    snapshots: list[tuple[Snapshot, bool]],
    live: list[Snapshot],
) -> Iterator[Metric]:
    yield CounterMetricFamily(
        "registry_events_dropped",
        "Events not stored because the outbox was full (notifications.outbox_max_batches)",
        value=sum(s["events_dropped"] for s, _ in snapshots),
    )
    sent = CounterMetricFamily(
        "registry_webhook_deliveries",
        "Webhook requests by endpoint and outcome (sent: 2xx or 3xx; failed: anything else)",
        labels=["endpoint", "outcome"],
    )
    for key, (count,) in sorted(deliveries.items()):
        sent.add_metric(list(key), count)
    yield sent
    pending = GaugeMetricFamily(
        "registry_webhook_pending_batches",
        "Outbox segments an endpoint has not taken all of (as its deliverer last saw them)",
        labels=["endpoint"],
    )
    largest: dict[str, int] = {}
    for snapshot in live:  # every delivering process sees the same outbox: the largest
        for name, count in snapshot["webhook_pending"]:
            largest[name] = max(largest.get(name, 0), count)
    for name, count in sorted(largest.items()):
        pending.add_metric([name], count)
    yield pending


class _Collector:
    def __init__(self, snapshots: list[tuple[Snapshot, bool]]) -> None:
        self._snapshots = snapshots

    def collect(self) -> Iterator[Metric]:
        return families(self._snapshots)


def scrape(own: Snapshot | None) -> bytes:
    """The metrics in the text format, summed over every worker of the server."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(worker_snapshots(own)))
    return generate_latest(registry)


def token_accepted(authorization: str | None, config: MetricsConfig) -> bool:
    """Whether `Authorization` carries `metrics.token` (always, when none is set)."""
    if config.token is None:
        return True
    expected = f"Bearer {config.token.get_secret_value()}".encode()
    return hmac.compare_digest((authorization or "").encode("latin-1"), expected)


async def metrics_endpoint(request: Request) -> Response:
    config: MetricsConfig = request.app.state.config.metrics
    if not token_accepted(request.headers.get("authorization"), config):
        return error_response(
            RegistryError(
                ErrorCode.UNAUTHORIZED,
                "metrics need the bearer token",
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        )
    own = metrics.TOTALS.snapshot()  # on the event loop, which alone changes them
    body = await asyncio.to_thread(scrape, own)  # reads the other workers' files
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def routes(config: MetricsConfig) -> list[Route]:
    """`/metrics` on the main port, unless off or served by a listener of its own."""
    if not config.enabled or config.address is not None:
        return []
    return [Route(PATH, metrics_endpoint, methods=["GET"])]


StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No line per scrape on standard error."""


def start_listener(config: MetricsConfig) -> WSGIServer:
    """Serve `/metrics` at `metrics.address` from a daemon thread of this process."""
    host, port = split_address(config.address or "")

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        if not token_accepted(environ.get("HTTP_AUTHORIZATION"), config):
            challenge = ("WWW-Authenticate", 'Bearer realm="metrics"')
            start_response("401 Unauthorized", [("Content-Type", "text/plain"), challenge])
            return [b"metrics need the bearer token\n"]
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
        return [scrape(None)]  # the workers' files only (one worker may be this process)

    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]  # IPv4 or IPv6
    server_class = type("MetricsServer", (ThreadingWSGIServer,), {"address_family": family})
    server = make_server(host, port, app, server_class, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
