"""`/metrics` in process: what is counted, under which bounded labels, and who may scrape."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import Route

from registry import metrics
from registry.app import create_app
from registry.config import Config
from registry.metrics_exposition import scrape
from registry.route_labels import RouteLabels
from storage.memory import MemoryDriver
from tests.api.helpers import digest_of, push_image
from tests.support.auth import basic, write_users

Clients = Callable[..., httpx.AsyncClient]


def sample(name: str, **labels: str) -> float:
    """A value of this process's metrics (the apps in process share them), 0 if absent."""
    key = (name, frozenset(labels.items()))
    return scraped(scrape(metrics.TOTALS.snapshot()).decode()).get(key, 0.0)


def scraped(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
async def clients() -> AsyncIterator[Clients]:
    opened: list[httpx.AsyncClient] = []

    def open_(config: Config | None = None, **settings: Any) -> httpx.AsyncClient:
        app = create_app(config or Config(**settings), MemoryDriver())
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        client = httpx.AsyncClient(transport=transport, base_url="http://registry.test")
        opened.append(client)
        return client

    yield open_
    for client in opened:
        await client.aclose()


REQUESTS = "registry_http_requests_total"
MANIFESTS = "/v2/{name}/manifests/{reference}"


async def test_requests_counted_by_method_route_template_and_code(clients: Clients) -> None:
    client = clients()
    await push_image(client, "team/app", "v1")
    before = {
        (method, code): sample(REQUESTS, method=method, route=MANIFESTS, code=code)
        for method, code in (("GET", "200"), ("HEAD", "200"), ("GET", "404"))
    }
    other = sample(REQUESTS, method="GET", route="other", code="404")
    assert (await client.get("/v2/team/app/manifests/v1")).status_code == 200
    assert (await client.head("/v2/team/app/manifests/v1")).status_code == 200
    assert (await client.get("/v2/team/app/manifests/nope")).status_code == 404
    assert (await client.get("/no/such/endpoint")).status_code == 404
    for method, code in before:
        after = sample(REQUESTS, method=method, route=MANIFESTS, code=code)
        assert after == before[(method, code)] + 1, (method, code)
    assert sample(REQUESTS, method="GET", route="other", code="404") == other + 1


async def test_scrape_shows_template_labels_never_raw_paths(clients: Clients) -> None:
    client = clients()
    await push_image(client, "team/unique-name-1234", "v1")
    await client.get("/v2/team/unique-name-1234/manifests/v1")
    await client.request("BREW", "/v2/")
    text = (await client.get("/metrics")).text
    assert "unique-name-1234" not in text
    routes = {dict(labels).get("route") for _, labels in scraped(text)} - {None}
    assert MANIFESTS in routes
    methods = {dict(labels)["method"] for name, labels in scraped(text) if name == REQUESTS}
    assert "BREW" not in methods
    assert "other" in methods


def test_requests_of_unknown_methods_share_one_bounded_record() -> None:
    async def endpoint(request: Any) -> None: ...

    route = Route("/v2/", endpoint)
    totals = metrics.Totals()
    recorder = metrics.HttpMetrics(RouteLabels([route]), totals)
    for n in range(1000):  # any token is a method to uvicorn; 405 is answered after routing
        scope = {"method": f"BREW{n}", "path": "/v2/", "endpoint": endpoint, "headers": []}
        recorder.started(scope)
        recorder.finished(scope, 405, 0, 0, 0.001)
    assert list(totals.http) == [("other", "/v2/", 405)]
    assert totals.http[("other", "/v2/", 405)][0] == 1000
    assert len(recorder._records) == 0  # cached only for known methods


async def test_sizes_durations_and_storage_actions(clients: Clients) -> None:
    client = clients()
    await push_image(client, "team/app", "v1")
    count = "registry_http_response_size_bytes_count"
    received = sample("registry_http_request_size_bytes_sum", route="/v2/{name}/blobs/uploads/")
    sent = sample("registry_http_response_size_bytes_sum", route=MANIFESTS)
    timed = sample("registry_storage_action_seconds_count", driver="memory", action="get")
    durations = sample("registry_http_request_duration_seconds_count", route=MANIFESTS)
    responses = sample(count, route=MANIFESTS)
    manifest = await client.get("/v2/team/app/manifests/v1")
    uploaded = await client.post(
        "/v2/team/other/blobs/uploads/",
        params={"digest": digest_of(b"x" * 1000)},
        content=b"x" * 1000,
    )
    assert uploaded.status_code == 201
    assert sample("registry_http_response_size_bytes_sum", route=MANIFESTS) == sent + len(
        manifest.content
    )
    assert sample(count, route=MANIFESTS) == responses + 1
    route = "/v2/{name}/blobs/uploads/"
    assert sample("registry_http_request_size_bytes_sum", route=route) == received + 1000
    assert sample("registry_http_request_duration_seconds_count", route=MANIFESTS) == durations + 1
    assert sample("registry_storage_action_seconds_count", driver="memory", action="get") > timed


async def test_in_flight_and_uploads_in_progress_while_a_body_streams(clients: Clients) -> None:
    client = clients()
    release = asyncio.Event()
    started = await client.post("/v2/team/app/blobs/uploads/")
    location = started.headers["location"]

    async def body() -> AsyncIterator[bytes]:
        yield b"a" * 10
        await release.wait()
        yield b"b" * 10

    patch = asyncio.create_task(client.patch(location, content=body()))
    for _ in range(100):
        if sample("registry_uploads_in_progress") >= 1:
            break
        await asyncio.sleep(0.01)
    assert sample("registry_uploads_in_progress") == 1
    assert sample("registry_http_in_flight_requests") == 1
    release.set()
    assert (await patch).status_code == 202
    assert sample("registry_uploads_in_progress") == 0
    assert sample("registry_http_in_flight_requests") == 0


async def test_metrics_off_or_elsewhere_leaves_no_endpoint(clients: Clients) -> None:
    assert (await clients(metrics={"enabled": False}).get("/metrics")).status_code == 404
    elsewhere = clients(metrics={"address": "127.0.0.1:9100"})
    assert (await elsewhere.get("/metrics")).status_code == 404
    assert (await clients().get("/metrics")).status_code == 200


async def test_metrics_off_leaves_the_driver_untimed(clients: Clients) -> None:
    client = clients(metrics={"enabled": False})
    timed = sample("registry_storage_action_seconds_count", driver="memory", action="get")
    counted = sample(REQUESTS, method="GET", route=MANIFESTS, code="404")
    await client.get("/v2/team/app/manifests/v1")
    assert sample("registry_storage_action_seconds_count", driver="memory", action="get") == timed
    assert sample(REQUESTS, method="GET", route=MANIFESTS, code="404") == counted


async def test_bearer_token_guards_the_scrape(clients: Clients) -> None:
    client = clients(metrics={"token": "s3cret-scrape"})
    assert (await client.get("/metrics")).status_code == 401
    wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"].startswith("Bearer")
    right = await client.get("/metrics", headers={"Authorization": "Bearer s3cret-scrape"})
    assert right.status_code == 200
    assert right.headers["content-type"].startswith("text/plain")
    assert REQUESTS in right.text


USERS = {"alice": "alice-pw"}


@pytest.mark.parametrize("mode", ["basic", "token"])
async def test_ops_endpoints_need_no_registry_credentials(
    clients: Clients, tmp_path: Path, mode: str
) -> None:
    users = write_users(tmp_path / "htpasswd", USERS)
    storage = {"filesystem": {"root": str(tmp_path / "data")}}
    client = clients(Config(auth={"mode": mode, "htpasswd": str(users)}, storage=storage))
    assert (await client.get("/v2/")).status_code == 401
    for path in ("/metrics", "/healthz", "/readyz"):
        response = await client.get(path)
        assert response.status_code == 200, (path, response.text)
    # The scrape token is not mistaken for a registry credential, nor needed by it.
    guarded = clients(
        Config(auth={"mode": mode, "htpasswd": str(users)}, storage=storage, metrics={"token": "t"})
    )
    assert (await guarded.get("/metrics", headers={"Authorization": "Bearer t"})).status_code == 200
    assert (await guarded.get("/metrics", headers=basic("alice", "alice-pw"))).status_code == 401


async def test_refused_credentials_and_throttling_counted(clients: Clients, tmp_path: Path) -> None:
    users = write_users(tmp_path / "htpasswd", USERS)
    auth = {"mode": "basic", "htpasswd": str(users), "throttle": {"max_failures": 1}}
    client = clients(Config(auth=auth, storage={"filesystem": {"root": str(tmp_path / "d")}}))
    failures = sample("registry_auth_failures_total", reason="invalid_credentials")
    throttled = sample("registry_throttled_requests_total")
    assert (await client.get("/v2/")).status_code == 401  # the challenge: not a failure
    assert sample("registry_auth_failures_total", reason="invalid_credentials") == failures
    assert (await client.get("/v2/", headers=basic("alice", "wrong"))).status_code == 401
    assert sample("registry_auth_failures_total", reason="invalid_credentials") == failures + 1
    assert (await client.get("/v2/", headers=basic("alice", "wrong"))).status_code == 429
    assert sample("registry_throttled_requests_total") == throttled + 1


def test_scrape_sums_published_workers_and_counts_gauges_of_live_ones_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(metrics.METRICS_DIR_ENV, str(tmp_path))
    worker = metrics.Totals()
    worker.http_record("GET", "/v2/", 200)[0] = 5  # 5 requests in the first bucket
    worker.in_flight = 3
    for pid in (os.getppid(), 2**22 + 1):  # alive; above any pid Linux hands out
        (tmp_path / f"worker-{pid}.json").write_text(json.dumps(worker.snapshot()))
    own = metrics.Totals()
    own.http_record("GET", "/v2/", 200)[0] = 1
    own.in_flight = 1
    samples = scraped(scrape(own.snapshot()).decode())
    labels = frozenset({"method": "GET", "route": "/v2/", "code": "200"}.items())
    assert samples[(REQUESTS, labels)] == 11
    assert samples[("registry_http_in_flight_requests", frozenset())] == 4


def test_event_metrics_sum_counters_and_take_the_largest_pending_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(metrics.METRICS_DIR_ENV, str(tmp_path))
    worker = metrics.Totals()
    worker.events_dropped = 2
    worker.count_delivery("hook", "sent")
    worker.webhook_pending["hook"] = 7
    (tmp_path / f"worker-{os.getppid()}.json").write_text(json.dumps(worker.snapshot()))
    own = metrics.Totals()
    own.events_dropped = 1
    own.count_delivery("hook", "sent")
    own.count_delivery("hook", "failed")
    own.webhook_pending["hook"] = 3  # both deliverers see one outbox: not 10
    samples = scraped(scrape(own.snapshot()).decode())
    assert samples[("registry_events_dropped_total", frozenset())] == 3
    sent = frozenset({"endpoint": "hook", "outcome": "sent"}.items())
    failed = frozenset({"endpoint": "hook", "outcome": "failed"}.items())
    assert samples[("registry_webhook_deliveries_total", sent)] == 2
    assert samples[("registry_webhook_deliveries_total", failed)] == 1
    pending = frozenset({"endpoint": "hook"}.items())
    assert samples[("registry_webhook_pending_batches", pending)] == 7
