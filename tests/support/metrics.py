"""Scraping a running registry's `/metrics` in tests."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(url: str, **headers: str) -> httpx.Response:
    """One scrape on a connection of its own (so any worker may answer it)."""
    with httpx.Client() as client:
        return client.get(url, headers=headers)


def scrape_until(
    url: str, settled: Callable[[Samples], bool], timeout: float = 15.0, **headers: str
) -> Samples:
    """Scrape until `settled` holds: other workers publish their totals every second.
    Returns the last scrape's samples either way, for the test to assert on."""
    deadline = time.monotonic() + timeout
    while True:
        samples = parse(scrape(url, **headers).raise_for_status().text)
        if settled(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name` over the samples holding `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def published_requests(temp: Path, route: str | None = None) -> float:
    """Requests the workers of a server started with TMPDIR=`temp` published so far
    (in its metrics directory), all or those of one route template."""
    return sum(
        row[-1]
        for path in temp.glob("dockyard-metrics-*/worker-*.json")
        for row in json.loads(path.read_text())["requests"]
        if route is None or row[1] == route
    )


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll `condition` until it holds (the caller asserts it after, either way)."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.2)
