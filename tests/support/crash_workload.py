"""A seeded push workload for crash tests, and the ledger of what the registry
acknowledged (tests/support/crash_checks.py checks it after a crash).

Every manifest and tag belongs to one client task, which works on it one request at a
time, so the ledger knows exactly which states each may be in: the acknowledged one, or,
when a request was cut off by the crash, the one before it or the one it asked for. Blobs
are only ever added. Failures are collected as sentences, not raised, so one run reports
everything that broke.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
ARTIFACT_TYPE = "application/vnd.dockyard.crash-test"
ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX])
EMPTY_CONFIG = b"{}"
REPOSITORIES = ("crash/alpha", "crash/beta", "crash/gamma")
KiB = 1 << 10
RACES = 4  # upload sessions raced at once
RACE_STREAM = 0.06  # seconds a racing PATCH takes to send its body
RACE_PIECES = 8


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(media_type: str, data: bytes) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest_of(data), "size": len(data)}


class Interrupted(Exception):
    """A request got no acknowledgement: the server died, or answered what it must not."""


Key = tuple[str, str]  # (repository, digest or tag)
Retry = tuple[Callable[..., Awaitable[None]], tuple[Any, ...]]


@dataclass
class Ledger:
    """What was pushed, what the registry acknowledged, and what may be true after a crash."""

    round: int = 0
    contents: dict[str, bytes] = field(default_factory=dict)  # by digest: all we generated
    blobs: dict[Key, bool] = field(default_factory=dict)  # attempted -> acknowledged
    manifests: dict[Key, set[bool]] = field(default_factory=dict)  # presence states allowed
    children: dict[Key, list[str]] = field(default_factory=dict)  # manifest -> blobs/children
    tags: dict[Key, set[str | None]] = field(default_factory=dict)  # target digests allowed
    subjects: set[Key] = field(default_factory=set)  # (repository, subject) with referrers
    sessions: set[str] = field(default_factory=set)  # upload locations maybe left open
    pending: list[Retry] = field(default_factory=list)  # unacknowledged pushes
    touched: set[str] = field(default_factory=set)  # blob digests attempted since last check
    acknowledged: int = 0
    retried: int = 0
    dangling_tags_deleted: int = 0
    failures: list[str] = field(default_factory=list)
    history: list[str] = field(default_factory=list)  # every request and its answer

    def fail(self, message: str) -> None:
        self.failures.append(f"round {self.round}: {message}")

    def record(self, method: str, url: str, params: Any, outcome: object) -> None:
        query = f"?{httpx.QueryParams(params)}" if params else ""
        self.history.append(f"round {self.round}: {method} {url}{query} -> {outcome}")

    def settle(self, allowed: set[Any], new: Any, acknowledged: bool) -> None:
        """An acknowledged change leaves only its state; an interrupted one adds it."""
        if acknowledged:
            allowed.clear()
        allowed.add(new)


class Pusher:
    """The registry's push operations over one client, each recording its outcome.

    An operation raises Interrupted when it was not acknowledged, after queueing
    itself for a retry; `retrying` is set while those retries run after a restart.
    """

    def __init__(self, ledger: Ledger, client: httpx.AsyncClient, retrying: bool = False) -> None:
        self.ledger = ledger
        self.client = client
        self.retrying = retrying

    async def request(
        self, method: str, url: str, expected: set[int], **kwargs: Any
    ) -> httpx.Response:
        params = kwargs.get("params")
        try:
            response = await self.client.request(method, url, **kwargs)
        except httpx.TransportError as error:
            self.ledger.record(method, url, params, repr(error))
            if self.retrying:
                self.ledger.fail(f"retry {method} {url} got no answer: {error!r}")
            raise Interrupted(method, url) from error
        self.ledger.record(method, url, params, response.status_code)
        if response.status_code not in expected:
            self.ledger.fail(
                f"{'retry ' if self.retrying else ''}{method} {url} answered "
                f"{response.status_code} (expected {sorted(expected)}): {response.text[:300]}"
            )
            raise Interrupted(method, url)
        return response

    def _retry_later(self, operation: Callable[..., Awaitable[None]], *args: Any) -> None:
        if not self.retrying:
            self.ledger.pending.append((operation, args))

    # Blobs

    async def push_blob(self, repository: str, data: bytes, chunks: int) -> None:
        """Monolithic (`chunks` 0: POST ?digest=) or PATCH by PATCH, then PUT ?digest=."""
        digest = digest_of(data)
        self.ledger.contents[digest] = data
        self.ledger.blobs.setdefault((repository, digest), False)
        self.ledger.touched.add(digest)
        try:
            if chunks == 0:
                await self.request(
                    "POST",
                    f"/v2/{repository}/blobs/uploads/",
                    {201},
                    params={"digest": digest},
                    content=data,
                    headers={"Content-Type": "application/octet-stream"},
                )
            else:
                await self._push_chunked(repository, data, chunks)
        except Interrupted:
            self._retry_later(Pusher.push_blob, repository, data, chunks)
            raise
        self._acknowledge_blob(repository, digest)

    async def _push_chunked(self, repository: str, data: bytes, chunks: int) -> None:
        location = started = await self.start_upload(repository)
        cuts = [len(data) * n // (chunks + 1) for n in range(chunks + 1)]
        for number, (start, end) in enumerate(zip(cuts, [*cuts[1:], len(data)], strict=True)):
            last = number == chunks
            headers = {"Content-Type": "application/octet-stream"}
            if number % 2 == 1 and end > start:  # every other chunk names its range
                headers["Content-Range"] = f"{start}-{end - 1}"
            response = await self.request(
                "PUT" if last else "PATCH",
                location,
                {201} if last else {202},
                params={"digest": digest_of(data)} if last else None,
                content=data[start:end],
                headers=headers,
            )
            location = response.headers["Location"] if not last else location
        self.ledger.sessions -= {started, location}

    async def start_upload(self, repository: str) -> str:
        response = await self.request("POST", f"/v2/{repository}/blobs/uploads/", {202})
        location = response.headers["Location"]
        self.ledger.sessions.add(location)
        return location

    def _acknowledge_blob(self, repository: str, digest: str) -> None:
        self.ledger.blobs[(repository, digest)] = True
        self.ledger.acknowledged += 1

    async def mount_blob(self, repository: str, source: str, digest: str) -> None:
        """Mount a blob acknowledged in `source`: it must be mounted (201), not uploaded."""
        self.ledger.blobs.setdefault((repository, digest), False)
        self.ledger.touched.add(digest)
        try:
            await self.request(
                "POST",
                f"/v2/{repository}/blobs/uploads/",
                {201},
                params={"mount": digest, "from": source},
            )
        except Interrupted:
            self._retry_later(Pusher.mount_blob, repository, source, digest)
            raise
        self._acknowledge_blob(repository, digest)

    async def race_upload(self, repository: str, first: bytes, second: bytes, lag: float) -> None:
        """Finish a session with the digest of `first` while `second` is PATCHed to it,
        slowly (over `RACE_STREAM` seconds), the PUT `lag` seconds after the PATCH starts.

        A client error, but the registry must neither corrupt the blob nor answer 5xx:
        whatever it acknowledges under `digest_of(first)` must hash to it.
        """
        digest = digest_of(first)
        self.ledger.contents[digest] = first
        self.ledger.blobs.setdefault((repository, digest), False)
        self.ledger.touched.add(digest)
        location = await self.start_upload(repository)
        response = await self.request(
            "PATCH",
            location,
            {202},
            content=first,
            headers={"Content-Range": f"0-{len(first) - 1}"},
        )
        location = response.headers["Location"]
        self.ledger.sessions.add(location)
        any_answer = set(range(200, 500))

        async def finish() -> httpx.Response:
            await asyncio.sleep(lag)
            return await self.request("PUT", location, any_answer, params={"digest": digest})

        _, finished = await asyncio.gather(
            self.request("PATCH", location, any_answer, content=_slowly(second)), finish()
        )
        if finished.status_code == 201:
            self._acknowledge_blob(repository, digest)

    # Manifests and tags

    async def put_manifest(
        self, repository: str, raw: bytes, media_type: str, tag: str | None, owned: list[str]
    ) -> None:
        """PUT by tag (moving it) or by digest; `owned` lists the blobs and children it names."""
        digest = digest_of(raw)
        self.ledger.contents[digest] = raw
        self.ledger.children[(repository, digest)] = owned
        self.ledger.manifests.setdefault((repository, digest), {False})
        if tag is not None:
            self.ledger.tags.setdefault((repository, tag), {None})
        subject = json.loads(raw).get("subject")
        if subject is not None:
            self.ledger.subjects.add((repository, subject["digest"]))
        acknowledged = True
        try:
            response = await self.request(
                "PUT",
                f"/v2/{repository}/manifests/{tag or digest}",
                {201},
                content=raw,
                headers={"Content-Type": media_type},
            )
            if response.headers.get("Docker-Content-Digest") != digest:
                self.ledger.fail(f"PUT {repository} manifest {digest} answered another digest")
        except Interrupted:
            acknowledged = False
            self._retry_later(Pusher.put_manifest, repository, raw, media_type, tag, owned)
            raise
        finally:
            self.ledger.settle(self.ledger.manifests[(repository, digest)], True, acknowledged)
            if tag is not None:
                self.ledger.settle(self.ledger.tags[(repository, tag)], digest, acknowledged)
        self.ledger.acknowledged += 1

    async def delete_manifest(self, repository: str, digest: str) -> None:
        """DELETE by digest: the manifest goes, with every tag pointing at it."""
        acknowledged = True
        try:
            await self._delete(f"/v2/{repository}/manifests/{digest}")
        except Interrupted:
            acknowledged = False
            self._retry_later(Pusher.delete_manifest, repository, digest)
            raise
        finally:
            self.ledger.settle(self.ledger.manifests[(repository, digest)], False, acknowledged)
            for (name, _), targets in self.ledger.tags.items():
                if name == repository and digest in targets:
                    if acknowledged:
                        targets.discard(digest)
                    targets.add(None)
        self.ledger.acknowledged += 1

    async def delete_tag(self, repository: str, tag: str) -> None:
        acknowledged = True
        try:
            await self._delete(f"/v2/{repository}/manifests/{tag}")
        except Interrupted:
            acknowledged = False
            self._retry_later(Pusher.delete_tag, repository, tag)
            raise
        finally:
            self.ledger.settle(self.ledger.tags[(repository, tag)], None, acknowledged)
        self.ledger.acknowledged += 1

    async def _delete(self, url: str) -> None:
        # A retried delete may find its work done before the crash.
        await self.request("DELETE", url, {202, 404} if self.retrying else {202})


@dataclass
class ClientTask:
    """One client pushing in a loop; owns the manifests and tags it creates."""

    number: int
    rng: random.Random
    serial: int = 0
    images: list[Key] = field(default_factory=list)  # standalone images and referrers
    tags: list[Key] = field(default_factory=list)

    def unique(self, size: int) -> bytes:
        self.serial += 1
        stamp = f"task {self.number} item {self.serial}\n".encode()
        return stamp + self.rng.randbytes(max(size - len(stamp), 0))

    def repository(self) -> str:
        return self.rng.choice(REPOSITORIES)

    async def run(self, pusher: Pusher) -> None:
        """Push until a request goes unacknowledged (the server was killed)."""
        operations = [
            (self.push_blob, 3),
            (self.push_image, 4),
            (self.push_index, 1),
            (self.push_referrer, 2),
            (self.move_tag, 2),
            (self.delete_tag, 1),
            (self.delete_manifest, 1),
            (self.mount_blob, 1),
            (self.race_upload, 1),
        ]
        functions, weights = zip(*operations, strict=True)
        try:
            while True:
                await self.rng.choices(functions, weights)[0](pusher)
                await asyncio.sleep(0)  # an operation that found nothing to do sent nothing
        except Interrupted:
            return

    @staticmethod
    def _present(pusher: Pusher, images: list[Key]) -> list[Key]:
        """Manifests the ledger knows for sure to be in the registry."""
        return [key for key in images if pusher.ledger.manifests[key] == {True}]

    @staticmethod
    def _set(pusher: Pusher, tags: list[Key]) -> list[Key]:
        """Tags the ledger knows for sure to point at a manifest."""
        return [
            key
            for key in tags
            if len(targets := pusher.ledger.tags[key]) == 1 and None not in targets
        ]

    async def push_blob(self, pusher: Pusher, repository: str | None = None) -> bytes:
        data = self.unique(self.rng.randrange(1, 192) * KiB)
        chunks = self.rng.choice([0, 0, 1, 2, 3])
        await pusher.push_blob(repository or self.repository(), data, chunks)
        return data

    async def push_image(
        self, pusher: Pusher, repository: str | None = None, tagged: bool = True
    ) -> Key:
        repository = repository or self.repository()
        config = json.dumps({"task": self.number, "serial": self.serial}).encode()
        await pusher.push_blob(repository, config, 0)
        layers = [await self.push_blob(pusher, repository) for _ in range(self.rng.randint(1, 2))]
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, config),
            "layers": [descriptor(OCI_LAYER, layer) for layer in layers],
        }
        raw = json.dumps(manifest).encode()
        tag = self._new_tag(repository) if tagged else None
        owned = [digest_of(config), *map(digest_of, layers)]
        await pusher.put_manifest(repository, raw, OCI_MANIFEST, tag, owned)
        key = (repository, digest_of(raw))
        if tagged:
            self.images.append(key)
        return key

    def _new_tag(self, repository: str) -> str:
        self.serial += 1
        key = (repository, f"t{self.number}-{self.serial}")
        self.tags.append(key)
        return key[1]

    async def push_index(self, pusher: Pusher) -> None:
        repository = self.repository()
        children = [await self.push_image(pusher, repository, tagged=False) for _ in range(2)]
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    **descriptor(OCI_MANIFEST, pusher.ledger.contents[digest]),
                    "platform": {"os": "linux", "architecture": architecture},
                }
                for (_, digest), architecture in zip(children, ["amd64", "arm64"], strict=True)
            ],
        }
        raw = json.dumps(index).encode()
        owned = [digest for _, digest in children]
        await pusher.put_manifest(repository, raw, OCI_INDEX, self._new_tag(repository), owned)

    async def push_referrer(self, pusher: Pusher) -> None:
        subjects = self._present(pusher, self.images)
        if not subjects:
            return
        repository, subject = self.rng.choice(subjects)
        await pusher.push_blob(repository, EMPTY_CONFIG, 0)
        payload = await self.push_blob(pusher, repository)
        artifact = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": ARTIFACT_TYPE,
            "config": descriptor(OCI_EMPTY, EMPTY_CONFIG),
            "layers": [descriptor("application/octet-stream", payload)],
            "subject": descriptor(OCI_MANIFEST, pusher.ledger.contents[subject]),
            "annotations": {"crash.task": str(self.number), "crash.serial": str(self.serial)},
        }
        raw = json.dumps(artifact).encode()
        owned = [digest_of(EMPTY_CONFIG), digest_of(payload)]
        await pusher.put_manifest(repository, raw, OCI_MANIFEST, None, owned)
        self.images.append((repository, digest_of(raw)))

    async def move_tag(self, pusher: Pusher) -> None:
        """PUT a present image again under one of this task's tags in its repository."""
        images = self._present(pusher, self.images)
        if not images:
            return
        repository, digest = self.rng.choice(images)
        tags = [key for key in self._set(pusher, self.tags) if key[0] == repository]
        tag = self.rng.choice(tags)[1] if tags else self._new_tag(repository)
        raw = pusher.ledger.contents[digest]
        owned = pusher.ledger.children[(repository, digest)]
        await pusher.put_manifest(repository, raw, OCI_MANIFEST, tag, owned)

    async def delete_tag(self, pusher: Pusher) -> None:
        if tags := self._set(pusher, self.tags):
            await pusher.delete_tag(*self.rng.choice(tags))

    async def delete_manifest(self, pusher: Pusher) -> None:
        if images := self._present(pusher, self.images):
            await pusher.delete_manifest(*self.rng.choice(images))

    async def mount_blob(self, pusher: Pusher) -> None:
        acknowledged = [key for key, done in pusher.ledger.blobs.items() if done]
        if not acknowledged:
            return
        source, digest = self.rng.choice(acknowledged)
        target = self.rng.choice([name for name in REPOSITORIES if name != source])
        await pusher.mount_blob(target, source, digest)

    async def race_upload(self, pusher: Pusher) -> None:
        """Several racing sessions at once, their PUTs spread from the start of the
        PATCHes to a little after their end."""
        repository = self.repository()
        window = RACE_STREAM * 1.25
        lags = [(n + self.rng.random()) * window / RACES for n in range(RACES)]
        races = [
            pusher.race_upload(
                repository,
                self.unique(64 * KiB),
                self.unique(self.rng.randrange(256, 1024) * KiB),
                lag,
            )
            for lag in lags
        ]
        for outcome in await asyncio.gather(*races, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome


async def _slowly(data: bytes) -> AsyncIterator[bytes]:
    """`data` in `RACE_PIECES` pieces over `RACE_STREAM` seconds."""
    size = -(-len(data) // RACE_PIECES)
    for start in range(0, len(data), size):
        yield data[start : start + size]
        await asyncio.sleep(RACE_STREAM / RACE_PIECES)


async def run_workload(ledger: Ledger, client: httpx.AsyncClient, tasks: list[ClientTask]) -> None:
    """All tasks pushing at once, until each is cut off."""
    pusher = Pusher(ledger, client)
    await asyncio.gather(*(task.run(pusher) for task in tasks))


async def retry_pending(ledger: Ledger, client: httpx.AsyncClient) -> None:
    """Every push that was not acknowledged before the crash must succeed now."""
    pending, ledger.pending = ledger.pending, []
    pusher = Pusher(ledger, client, retrying=True)
    for operation, args in pending:
        ledger.retried += 1
        with contextlib.suppress(Interrupted):  # recorded as a failure by the request
            await operation(pusher, *args)
