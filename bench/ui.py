"""The web UI's figure (Dockyard only: the reference registry has no UI): server time of
the repository list's first page with 10,000 repositories, and of `_catalog`'s.

The app runs in process on the filesystem driver (on SeaweedFS for the S3 variants:
`python -m bench --variant s3 --only ui`); each repository is what a push leaves
for the list to read, a catalog marker and a usage summary, written directly (10,000
pushes would take most of the run). The time is taken around the app's ASGI call, so it
is the server's own time, without a network or a client. The list sorted by last push is
shown beside it: that one reads every repository's summary.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from registry.app import create_app
from registry.config import Config
from storage import paths
from storage.store import Store
from storage.usage import Summary
from tests.support.seaweedfs import SeaweedFS

REPOSITORIES = 10_000
TARGET_MS = 100.0
_WRITES_AT_ONCE = 32


class ServerTime:
    """Wraps an ASGI app and keeps how long its last call took."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.last = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        await self.app(scope, receive, send)
        self.last = time.perf_counter() - start


async def populate(store: Store, count: int) -> None:
    limit = asyncio.Semaphore(_WRITES_AT_ONCE)
    now = time.time()

    async def repository(number: int) -> None:
        name = f"bench/ui/repository{number:05}"
        summary = Summary(tags=3, manifests=3, blobs=9, bytes=50 << 20, last_push=now - number)
        async with limit:
            await store.driver.put(paths.summary(name), summary.to_json())
            await store.catalog.add(name)

    await asyncio.gather(*map(repository, range(count)))


async def _measure(storage: dict[str, Any], requests: int) -> dict[str, list[float]]:
    config = Config(storage=storage, http={"access_log": False}, gc={"enabled": False})
    app = create_app(config)
    timed = ServerTime(app)
    store: Store = app.state.store
    times: dict[str, list[float]] = {"name": [], "push": [], "catalog": []}
    try:
        await populate(store, REPOSITORIES)
        transport = httpx.ASGITransport(app=timed)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for sort, first in (("name", "repository00000"), ("push", "repository00000")):
                for round_ in range(requests + 1):  # the first is a warm-up
                    response = await client.get("/ui/", params={"sort": sort})
                    assert response.status_code == 200 and first in response.text, response.text
                    if round_:
                        times[sort].append(timed.last * 1000)
            for round_ in range(requests + 1):
                response = await client.get("/v2/_catalog")
                assert response.status_code == 200 and response.json()["repositories"]
                if round_:
                    times["catalog"].append(timed.last * 1000)
    finally:
        await store.close()
    return times


def run(workdir: Path, requests: int, s3: bool = False) -> str:
    """Measure (on a SeaweedFS of its own with `s3`) and return a Markdown section."""
    shutil.rmtree(workdir, ignore_errors=True)
    seaweed = SeaweedFS(workdir / "seaweedfs").start() if s3 else None
    try:
        if seaweed is not None:
            storage = seaweed.storage_config(seaweed.create_bucket("bench-ui"))
        else:
            storage = {"filesystem": {"root": str(workdir / "data")}}
        times = asyncio.run(_measure(storage, requests))
    finally:
        if seaweed is not None:
            seaweed.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    name, push, catalog = (statistics.median(times[key]) for key in ("name", "push", "catalog"))
    where = "S3 (SeaweedFS on 127.0.0.1)" if s3 else "the filesystem driver"
    verdict = {ms: "met" if ms < TARGET_MS else "MISSED" for ms in (name, catalog)}
    lines = [
        "## Web UI and _catalog (Dockyard's own)",
        "",
        "Written by `python -m bench --only ui`; Dockyard only (the reference registry has no"
        f" UI). Server time of `GET /ui/` and `GET /v2/_catalog` in process on {where},"
        f" median of {requests} requests after a warm-up.",
        "",
        "| figure | ms | target |",
        "|---|---:|---|",
        f"| repository list, first page of {REPOSITORIES:,} repositories, by name |"
        f" {name:.1f} | < {TARGET_MS:g} ms: {verdict[name]} |",
        f"| the same sorted by last push (reads all {REPOSITORIES:,} summaries) |"
        f" {push:.1f} | none |",
        f"| `_catalog`, first page (1,000) of {REPOSITORIES:,} repositories |"
        f" {catalog:.1f} | < {TARGET_MS:g} ms: {verdict[catalog]} |",
        "",
    ]
    return "\n".join(lines)
