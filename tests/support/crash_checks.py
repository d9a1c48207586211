"""What must hold when a registry comes back from a crash, checked through its API only
(never its storage layout) against the ledger of what it acknowledged before."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Iterable

import httpx

from tests.support.crash_workload import ACCEPT, REPOSITORIES, Ledger, digest_of

PARALLEL_CHECKS = 8


async def check_after_restart(ledger: Ledger, client: httpx.AsyncClient, every_blob: bool) -> None:
    """Blobs attempted since the last check (all of them with `every_blob`), then every
    manifest, tag, referrers list and upload session the workload left."""
    checks = _Checks(ledger, client)
    digests = {digest for _, digest in ledger.blobs} if every_blob else ledger.touched
    await _bounded(checks.blob(name, digest) for digest in digests for name in REPOSITORIES)
    ledger.touched = set()
    await _bounded(checks.manifest(name, digest) for name, digest in list(ledger.manifests))
    await _bounded(checks.tag(name, tag) for name, tag in list(ledger.tags))
    for name in REPOSITORIES:
        await checks.listed_tags(name)
    await _bounded(checks.referrers(name, subject) for name, subject in list(ledger.subjects))
    await _bounded(checks.session(location) for location in list(ledger.sessions))
    ledger.sessions = set()


async def _bounded(checks: Iterable[Awaitable[None]]) -> None:
    limit = asyncio.Semaphore(PARALLEL_CHECKS)

    async def run(check: Awaitable[None]) -> None:
        async with limit:
            await check

    await asyncio.gather(*(run(check) for check in checks))


class _Checks:
    def __init__(self, ledger: Ledger, client: httpx.AsyncClient) -> None:
        self.ledger = ledger
        self.client = client

    async def send(self, method: str, url: str) -> httpx.Response:
        try:
            response = await self.client.request(method, url, headers={"Accept": ACCEPT})
        except httpx.TransportError:
            # uvicorn closes a connection after a 500; the pool may have reused it already.
            response = await self.client.request(method, url, headers={"Accept": ACCEPT})
        self.ledger.record(method, url, None, f"{response.status_code} (check)")
        return response

    async def request(self, method: str, url: str, expected: set[int]) -> httpx.Response:
        response = await self.send(method, url)
        if response.status_code not in expected:
            self.ledger.fail(
                f"after restart {method} {url} answered {response.status_code} "
                f"(expected {sorted(expected)}): {response.text[:300]}"
            )
        return response

    async def blob(self, name: str, digest: str) -> None:
        """Served bytes hash to their digest; an acknowledged blob is served."""
        response = await self.request("GET", f"/v2/{name}/blobs/{digest}", {200, 404})
        if response.status_code == 200 and digest_of(response.content) != digest:
            self.ledger.fail(
                f"blob {digest} in {name} served {len(response.content)} bytes "
                f"hashing to {digest_of(response.content)}"
            )
        if response.status_code == 404 and self.ledger.blobs.get((name, digest)):
            self.ledger.fail(f"acknowledged blob {digest} lost from {name}")

    async def manifest(self, name: str, digest: str) -> None:
        """An acknowledged manifest is served byte for byte, with everything it names;
        a manifest whose DELETE was acknowledged stays deleted."""
        states = self.ledger.manifests[(name, digest)]
        response = await self.request("GET", f"/v2/{name}/manifests/{digest}", {200, 404})
        if response.status_code == 404:
            if states == {True}:
                self.ledger.fail(f"acknowledged manifest {name}@{digest} lost")
            return
        if response.status_code != 200:
            return
        if response.content != self.ledger.contents[digest]:
            self.ledger.fail(f"manifest {name}@{digest} served other bytes")
        if states == {False}:
            self.ledger.fail(f"manifest {name}@{digest} served after its DELETE was acknowledged")
        for child in self.ledger.children[(name, digest)]:
            kind = "manifests" if (name, child) in self.ledger.manifests else "blobs"
            answer = await self.request("HEAD", f"/v2/{name}/{kind}/{child}", {200, 404})
            if answer.status_code == 404:
                self.ledger.fail(f"manifest {name}@{digest} served but its {child} is missing")

    async def tag(self, name: str, tag: str) -> None:
        """A tag points where its last acknowledged change left it."""
        allowed = self.ledger.tags[(name, tag)]
        response = await self.request("HEAD", f"/v2/{name}/manifests/{tag}", {200, 404})
        if response.status_code not in (200, 404):
            return
        target = response.headers.get("Docker-Content-Digest")
        if target not in allowed:
            self.ledger.fail(f"tag {name}:{tag} points at {target}, expected one of {allowed}")

    async def listed_tags(self, name: str) -> None:
        """Every tag listed resolves to a manifest served by digest, or can be deleted."""
        response = await self.request("GET", f"/v2/{name}/tags/list", {200, 404})
        tags = (response.json().get("tags") or []) if response.status_code == 200 else []
        for tag in tags:
            if await self._resolves(name, tag):
                continue
            deleted = await self.request("DELETE", f"/v2/{name}/manifests/{tag}", {202})
            if deleted.status_code == 202:
                self.ledger.dangling_tags_deleted += 1
                if (name, tag) in self.ledger.tags:
                    self.ledger.tags[(name, tag)] = {None}
            else:
                self.ledger.fail(f"tag {name}:{tag} is listed, does not resolve, cannot be deleted")

    async def _resolves(self, name: str, tag: str) -> bool:
        by_tag = await self.send("GET", f"/v2/{name}/manifests/{tag}")
        digest = by_tag.headers.get("Docker-Content-Digest")
        if by_tag.status_code != 200 or digest != digest_of(by_tag.content):
            return False
        by_digest = await self.send("GET", f"/v2/{name}/manifests/{digest}")
        return by_digest.status_code == 200 and by_digest.content == by_tag.content

    async def referrers(self, name: str, subject: str) -> None:
        """The referrers list names only manifests that are served, and every
        acknowledged referrer."""
        response = await self.request("GET", f"/v2/{name}/referrers/{subject}", {200})
        if response.status_code != 200:
            return
        listed = {entry["digest"] for entry in response.json()["manifests"]}
        for digest in sorted(listed):
            served = await self.request("HEAD", f"/v2/{name}/manifests/{digest}", {200, 404})
            if served.status_code == 404:
                self.ledger.fail(
                    f"referrers of {name}@{subject} list {digest}, which is not served"
                )
        for (repository, digest), states in self.ledger.manifests.items():
            if repository != name or states != {True} or digest in listed:
                continue
            if json.loads(self.ledger.contents[digest]).get("subject", {}).get("digest") == subject:
                self.ledger.fail(f"acknowledged referrer {digest} missing from {name}@{subject}")

    async def session(self, location: str) -> None:
        """An upload session the crash left behind answers, and can be cancelled — or,
        on S3, says it is busy while the killed writer's lease runs out (its holder cannot
        release it; the session frees itself after `storage.s3.LEASE_SECONDS`)."""
        await self.request("GET", location, {204, 404})
        response = await self.request("DELETE", location, {204, 404, 416})
        if response.status_code == 416 and "another request is writing" not in response.text:
            self.ledger.fail(f"cancelling {location} answered 416: {response.text[:300]}")
