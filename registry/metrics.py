"""Prometheus metrics of one server, summed over its worker processes.

Recording is on every request's path, so a worker counts in plain Python
(dictionary and list increments: no lock, no system call, no file write per
request; prometheus-client's multiprocess values, a locked write to a memory-mapped
file per observation, cost 26 µs a request against 2 µs when this was designed; what
metrics cost a server: bench/RESULTS.md, "Cost of metrics and events") and
publishes its totals, at most a second old, to a file of its own in
the server's metrics directory (`METRICS_DIR_ENV`, made by `dockyard serve`). A
scrape sums those files with the answering worker's own fresh totals
(`metrics_exposition`), so whichever worker answers, it answers for the whole
server. Counters of workers that exited stay in the sums; gauges count only for
workers still alive. A worker killed outright loses its last second of counts.

Labels are bounded: routes are templates (`route_labels`), methods a fixed set,
codes HTTP statuses.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.types import Scope

from registry.route_labels import RouteLabels
from storage.instrumented import Observe

if TYPE_CHECKING:
    from collector.run import GcResult

METRICS_DIR_ENV = "REGISTRY_METRICS_DIR"
PUBLISH_INTERVAL = 1.0  # seconds a scrape may lag behind another worker's requests
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UPLOAD_METHODS = frozenset({"POST", "PATCH", "PUT"})
DURATION_BUCKETS = (0.005, 0.025, 0.1, 0.5, 2.5, 10.0, 60.0)
STORAGE_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10.0)
GC_BUCKETS = (1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0)
GC_REMOVED = ("manifests", "tags", "blobs")  # what `registry_gc_<kind>_deleted` counts


class Totals:
    """This process's metrics since it started. Histograms are `[count per bucket...,
    count above the last bound, sum]`; sizes are `[count, sum]`."""

    def __init__(self) -> None:
        # (method, route, status) -> [count per duration bucket..., count above the last
        # bound, seconds, bytes received, bytes sent]: one record a request updates
        self.http: dict[tuple[str, str, int], list[float]] = {}
        self.storage: dict[tuple[str, str], list[float]] = {}
        self.auth_failures: dict[str, int] = {}
        self.throttled = 0
        self.in_flight = 0
        self.uploads = 0
        self.events_dropped = 0
        self.webhook_deliveries: dict[tuple[str, str], int] = {}  # (endpoint, outcome)
        self.webhook_pending: dict[str, int] = {}  # endpoint -> batches it has not taken
        self.proxy: dict[tuple[str, str], int] = {}  # (upstream, hit|miss|stale|error|bytes)
        self.gc_duration = [0.0] * (len(GC_BUCKETS) + 2)  # its count: the runs
        self.gc_deleted = dict.fromkeys(GC_REMOVED, 0)
        self.gc_bytes_freed = 0

    def count_delivery(self, endpoint: str, outcome: str) -> None:
        key = (endpoint, outcome)
        self.webhook_deliveries[key] = self.webhook_deliveries.get(key, 0) + 1

    def count_proxy(self, upstream: str, what: str, amount: int = 1) -> None:
        key = (upstream, what)
        self.proxy[key] = self.proxy.get(key, 0) + amount

    def http_record(self, method: str, route: str, status: int) -> list[float]:
        """The record of requests with this method, route template and status."""
        key = (method if method in METHODS else "other", route, status)
        record = self.http.get(key)
        if record is None:
            record = self.http[key] = [0.0] * (len(DURATION_BUCKETS) + 4)
        return record

    def snapshot(self) -> dict[str, Any]:
        """A copy of everything, as JSON-ready lists (keys are label values)."""
        requests = []
        durations: dict[str, list[float]] = {}
        request_bytes: dict[str, list[float]] = {}
        response_bytes: dict[str, list[float]] = {}
        for (method, route, status), record in self.http.items():
            count = int(sum(record[:-3]))
            requests.append([method, route, str(status), count])
            histogram = durations.setdefault(route, [0.0] * (len(DURATION_BUCKETS) + 2))
            for i, value in enumerate(record[:-2]):
                histogram[i] += value
            for sizes, total in ((request_bytes, record[-2]), (response_bytes, record[-1])):
                size = sizes.setdefault(route, [0, 0])
                size[0] += count
                size[1] += total
        return {
            "requests": requests,
            "durations": [[route, *h] for route, h in durations.items()],
            "request_bytes": [[route, *s] for route, s in request_bytes.items()],
            "response_bytes": [[route, *s] for route, s in response_bytes.items()],
            "storage": [[*key, *h] for key, h in self.storage.items()],
            "auth_failures": [[reason, n] for reason, n in self.auth_failures.items()],
            "throttled": self.throttled,
            "in_flight": self.in_flight,
            "uploads": self.uploads,
            "events_dropped": self.events_dropped,
            "webhook_deliveries": [[*key, n] for key, n in self.webhook_deliveries.items()],
            "webhook_pending": [[name, n] for name, n in self.webhook_pending.items()],
            "proxy": [[*key, n] for key, n in self.proxy.items()],
            "gc_duration": list(self.gc_duration),
            "gc_deleted": [[kind, n] for kind, n in self.gc_deleted.items()],
            "gc_bytes_freed": self.gc_bytes_freed,
        }


TOTALS = Totals()


def _observe(histogram: list[float], bounds: tuple[float, ...], value: float) -> None:
    histogram[bisect.bisect_left(bounds, value)] += 1
    histogram[-1] += value


def _has_credentials(scope: Scope) -> bool:
    return any(name == b"authorization" for name, _ in scope["headers"])


class HttpMetrics:
    """Counts every request by method, route template and status; a recorder of
    `registry.observe.ObserveRequests`. A request adds to one record, found by its
    method, endpoint and status (the route template is looked up once per record)."""

    def __init__(self, labels: RouteLabels, totals: Totals = TOTALS) -> None:
        self._labels = labels
        self._totals = totals
        self._records: dict[tuple[str, Any, int], list[float]] = {}

    def started(self, scope: Scope) -> None:
        totals = self._totals
        totals.in_flight += 1
        if scope["method"] in UPLOAD_METHODS and "/blobs/uploads/" in scope["path"]:
            totals.uploads += 1

    def finished(self, scope: Scope, status: int, received: int, sent: int, seconds: float) -> None:
        totals = self._totals
        totals.in_flight -= 1
        method = scope["method"]
        if method in UPLOAD_METHODS and "/blobs/uploads/" in scope["path"]:
            totals.uploads -= 1
        endpoint = scope.get("endpoint")
        key = (method, endpoint, status)
        record = self._records.get(key)
        if record is None:
            record = totals.http_record(method, self._labels.template(scope), status)
            if endpoint is not None and method in METHODS:  # else the key is unbounded,
                self._records[key] = record  # or the route varies (answered before routing)
        record[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        record[-3] += seconds
        record[-2] += received
        record[-1] += sent
        if status in (401, 403, 429):
            self._count_refusal(scope, status)

    def _count_refusal(self, scope: Scope, status: int) -> None:
        totals = self._totals
        if status == 429:
            totals.throttled += 1
            return
        if status == 403:
            reason = "denied"
        elif _has_credentials(scope):  # a bare 401 is only the challenge that asks for them
            reason = "invalid_credentials"
        else:
            return
        totals.auth_failures[reason] = totals.auth_failures.get(reason, 0) + 1


def storage_observer(driver: str, totals: Totals = TOTALS) -> Observe:
    """`observe(action, seconds)` for `storage.instrumented`."""
    by_action: dict[str, list[float]] = {}

    def observe(action: str, seconds: float) -> None:
        histogram = by_action.get(action)
        if histogram is None:
            histogram = totals.storage.setdefault(
                (driver, action), [0.0] * (len(STORAGE_BUCKETS) + 2)
            )
            by_action[action] = histogram
        histogram[bisect.bisect_left(STORAGE_BUCKETS, seconds)] += 1  # `_observe`, inline: it
        histogram[-1] += seconds  # runs for every storage call

    return observe


def gc_observer(totals: Totals = TOTALS) -> Callable[[GcResult], None]:
    """Counts each run of the background collector (collector.background) in `totals`."""

    def observe(result: GcResult) -> None:
        _observe(totals.gc_duration, GC_BUCKETS, result.duration)
        for kind in GC_REMOVED:
            totals.gc_deleted[kind] += getattr(result, kind)
        totals.gc_bytes_freed += result.bytes_freed

    return observe


def worker_file(directory: str | Path, pid: int) -> Path:
    return Path(directory) / f"worker-{pid}.json"


def publish(snapshot: dict[str, Any]) -> None:
    """Write this process's totals where scrapes find them (atomically: replace)."""
    directory = os.environ.get(METRICS_DIR_ENV)
    if not directory:
        return
    target = worker_file(directory, os.getpid())
    aside = target.with_suffix(".tmp")
    aside.write_text(json.dumps(snapshot))
    os.replace(aside, target)


async def publish_periodically(totals: Totals = TOTALS) -> None:
    """Publish every `PUBLISH_INTERVAL` seconds while the worker runs (when there is a
    directory to publish to: under `dockyard serve`). The snapshot is taken on the
    event loop, which alone changes the totals; the file is written in a thread."""
    if not os.environ.get(METRICS_DIR_ENV):
        return
    published = None
    while True:
        snapshot = totals.snapshot()
        if snapshot != published:
            await asyncio.to_thread(publish, snapshot)
            published = snapshot
        await asyncio.sleep(PUBLISH_INTERVAL)
