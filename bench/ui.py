"""The web UI's figure (Dockyard only: the reference registry has no UI): server time of
the repository list's first page with 10,000 repositories.

The app runs in process on the filesystem driver; each repository is what a push leaves
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

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from registry.app import create_app
from registry.config import Config
from storage import paths
from storage.store import Store
from storage.usage import Summary

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


async def _measure(workdir: Path, requests: int) -> dict[str, list[float]]:
    config = Config(
        storage={"filesystem": {"root": str(workdir)}},
        http={"access_log": False},
        gc={"enabled": False},
    )
    app = create_app(config)
    timed = ServerTime(app)
    store: Store = app.state.store
    times: dict[str, list[float]] = {"name": [], "push": []}
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
    finally:
        await store.close()
    return times


def run(workdir: Path, requests: int) -> str:
    """Measure and return the results as a Markdown section."""
    shutil.rmtree(workdir, ignore_errors=True)
    try:
        times = asyncio.run(_measure(workdir, requests))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    name, push = (statistics.median(times[sort]) for sort in ("name", "push"))
    verdict = "met" if name < TARGET_MS else "MISSED"
    lines = [
        "## Web UI (Dockyard's own)",
        "",
        "Written by `python -m bench --only ui`; Dockyard only (the reference registry has no"
        " UI). Server time of `GET /ui/` in process on the filesystem driver, median of"
        f" {requests} requests after a warm-up.",
        "",
        "| figure | ms | target |",
        "|---|---:|---|",
        f"| repository list, first page of {REPOSITORIES:,} repositories, by name |"
        f" {name:.1f} | < {TARGET_MS:g} ms: {verdict} |",
        f"| the same sorted by last push (reads all {REPOSITORIES:,} summaries) |"
        f" {push:.1f} | none |",
        "",
    ]
    return "\n".join(lines)
