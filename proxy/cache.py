"""The pull-through cache: manifests and blobs of upstream registries, kept in the store.

- A manifest by digest is fetched once and then served from the store.
- A tag is served from the store while it was confirmed upstream less than `tag_ttl`
  ago (the time is a small object in the storage, `_proxy/checked/<tag>`, so every
  process and replica shares it; `tag_checks` remembers it); after that one HEAD
  upstream confirms it (no body) or finds the new digest, which is fetched. When the
  upstream is down, slow or rate limiting, the cached tag is served stale with a
  `Warning` header and a log line; only what was never cached fails, with an error
  naming the upstream and the cause.
- A blob is streamed to the client as it arrives while it is written through the
  store's upload path, which verifies its digest before committing (`blob_fill`).
- A manifest just fetched is served as soon as its digest is checked, while it is
  stored (durable writes that took 10-160 ms); meanwhile this process serves it from
  memory, by its tag and its digest, rather than fetch it again.
- Concurrent requests for one manifest or blob share one upstream fetch per process
  (`single_flight`, `_fills`). A blob fetch also holds a lease in the storage
  (`_proxy/filling/<digest>`): other processes wait for the blob to be stored rather
  than fetch it too (a manifest, small, is fetched at most once per process).
Cached content is ordinary content of its repository (pushed and pulled times, usage,
retention and GC apply unchanged).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from functools import partial
from urllib.parse import urlencode

from starlette.responses import Response

from oci.errors import ErrorCode, RegistryError
from oci.manifests import Manifest, parse_manifest
from oci.references import Digest, is_digest, is_tag
from proxy.blob_fill import BlobFill, FilledResponse, not_upstream
from proxy.routing import Routes, Target
from proxy.single_flight import SingleFlight
from proxy.tag_checks import TagChecks
from proxy.upstream import MANIFEST_ACCEPT, Upstream, UpstreamError
from registry import metrics
from storage import paths
from storage.driver import PathNotFoundError
from storage.lease import Lease
from storage.lease import take as take_lease
from storage.manifests import StoredManifest
from storage.store import Store

log = logging.getLogger("dockyard.proxy")

_LINK_QUERY = re.compile(r"<[^>?]*\?([!-=?-~]*)>")  # printable ASCII but `>`
_FILLED_KEPT = 4096
_FILLED_FOR = 60.0  # seconds
# A process fetching a blob holds a lease on it (renewed as its bytes come); the others
# look every `_FILL_POLL` seconds whether it is stored, until the lease ends or lapses.
_FILL_LEASE = 30.0
_FILL_POLL = 0.05


class PullThrough:
    def __init__(
        self,
        upstreams: Sequence[Upstream],
        store: Store,
        manifest_max_bytes: int,
        totals: metrics.Totals = metrics.TOTALS,
    ) -> None:
        self.routes = Routes(upstreams)
        self._upstreams = list(upstreams)
        self._store = store
        self._manifest_max_bytes = manifest_max_bytes
        self._totals = totals
        self._manifests: SingleFlight[StoredManifest | Manifest] = SingleFlight()
        # Manifests fetched and being stored, by (repository, tag or digest): bounded by
        # the fetches in flight.
        self._storing: dict[tuple[str, str], _Storing] = {}
        self._tag_checks = TagChecks(store.driver)
        self._fills: dict[tuple[str, Digest], BlobFill] = {}
        # Fills that succeeded lately (monotonic time): a request that looked in the store
        # just before one committed finds it here rather than fetching again.
        self._filled: OrderedDict[tuple[str, Digest], float] = OrderedDict()

    async def close(self) -> None:
        await self.stored()
        for upstream in self._upstreams:
            await upstream.close()

    async def stored(self) -> None:
        """Wait until the manifests served while being stored are stored."""
        stores = {storing.task for storing in self._storing.values()}
        await asyncio.gather(*stores, return_exceptions=True)

    async def target(self, name: str, ns: str | None, fallback: bool = True) -> Target | None:
        return await self.routes.target(name, ns, self._store.catalog, fallback)

    def _count(self, target: Target, what: str, amount: int = 1) -> None:
        self._totals.count_proxy(target.upstream.prefix, what, amount)

    def _failed(self, target: Target, error: UpstreamError) -> RegistryError:
        """The error a client gets for content not cached that the upstream did not give
        (counted where the upstream failed)."""
        if error.rate_limited:
            headers = {"Retry-After": error.retry_after or "60"}
            return RegistryError(ErrorCode.TOOMANYREQUESTS, str(error), headers=headers)
        # 424 Failed Dependency, not a 5xx: docker and the distribution client read the
        # error body of 4xx answers only and print a bare "unexpected HTTP status: 502"
        # for the rest, which would hide the upstream and the cause.
        return RegistryError(ErrorCode.UNAVAILABLE, str(error), status=424)

    async def _refuse_if_read_only(self) -> None:
        """Caching writes to storage: in maintenance mode only what is cached is served."""
        if (maintenance := await self._store.maintenance.state()) is not None:
            message = f"not cached, and the registry is read-only: {maintenance.message}"
            raise RegistryError(ErrorCode.UNSUPPORTED, message)

    # -- manifests ---------------------------------------------------------------

    async def manifest(
        self, target: Target, reference: str
    ) -> tuple[StoredManifest | Manifest, str | None]:
        """The manifest `reference` of `target`, from the store or just fetched (being
        stored then); and, when a stale tag is served, the `Warning` header to send."""
        manifests = self._store.manifests
        key = (target.local, reference)
        if (storing := self._storing.get(key)) is not None:
            age = time.monotonic() - storing.fetched
            if is_digest(reference) or age < target.upstream.config.tag_ttl:
                self._count(target, "hit")
                return storing.manifest, None
            await asyncio.shield(storing.task)  # then the tag's age is checked as usual
        if is_digest(reference):
            digest = Digest.parse(reference)
            if (stored := await manifests.get(target.local, digest)) is not None:
                self._count(target, "hit")
                return stored, None
            self._count(target, "miss")
            fetch = partial(self._fetch_manifest, target, reference, digest, None)
        elif not is_tag(reference):
            raise RegistryError(ErrorCode.MANIFEST_UNKNOWN, detail={"reference": reference[:160]})
        else:
            cached = await manifests.resolve(target.local, reference)
            if cached is not None and (stored := await manifests.get(target.local, cached)):
                return await self._cached_tag(target, reference, stored)
            self._count(target, "miss")
            fetch = partial(self._fetch_manifest, target, reference, None, reference)
        await self._refuse_if_read_only()
        if (storing := self._storing.get(key)) is not None:  # fetched since we looked
            return storing.manifest, None
        try:
            return await self._manifests.run(key, fetch), None
        except UpstreamError as error:
            self._count(target, "error")
            raise self._failed(target, error) from None

    async def _cached_tag(
        self, target: Target, tag: str, cached: StoredManifest
    ) -> tuple[StoredManifest | Manifest, str | None]:
        ttl = target.upstream.config.tag_ttl
        age = await self._tag_checks.age(target.local, tag, fresh_for=ttl)
        if age is not None and age < ttl:
            self._count(target, "hit")
            return cached, None
        if (maintenance := await self._store.maintenance.state()) is not None:
            self._count(target, "stale")  # checking it would write: served as it is
            return cached, _warning(f"the registry is read-only: {maintenance.message}")
        try:
            revalidate = partial(self._revalidate, target, tag, cached)
            return await self._manifests.run((target.local, tag), revalidate), None
        except UpstreamError as error:
            self._count(target, "error")
            self._count(target, "stale")
            log.warning("serving %s:%s stale from the cache: %s", target.local, tag, error)
            return cached, _warning(str(error))

    async def _revalidate(
        self, target: Target, tag: str, cached: StoredManifest
    ) -> StoredManifest | Manifest:
        """One HEAD upstream: the same digest is confirmed, a new one fetched."""
        upstream = target.upstream
        path = f"manifests/{tag}"
        async with upstream.open("HEAD", target.remote, path, MANIFEST_ACCEPT) as response:
            if response.status_code == 404:
                raise self._unknown(target, tag)
            named = response.headers.get("docker-content-digest")
        current = _digest_or_none(named)
        if current == cached.digest:
            await self._tag_checks.confirm(target.local, tag, cached.digest)
            self._count(target, "hit")
            return cached
        self._count(target, "miss")
        return await self._fetch_manifest(target, str(current or tag), current, tag)

    async def _fetch_manifest(
        self, target: Target, reference: str, expected: Digest | None, tag: str | None
    ) -> Manifest:
        upstream = target.upstream
        path = f"manifests/{reference}"
        async with upstream.open("GET", target.remote, path, MANIFEST_ACCEPT) as response:
            if response.status_code == 404:
                raise self._unknown(target, reference)
            raw = await self._read_small(upstream, response.aiter_bytes())
            content_type = response.headers.get("content-type")
            named = _digest_or_none(response.headers.get("docker-content-digest"))
        self._count(target, "bytes", len(raw))
        digest = Digest.of(raw, expected.algorithm if expected else "sha256")
        for claimed in (expected, named):
            if claimed is not None and claimed.algorithm == digest.algorithm and claimed != digest:
                raise UpstreamError(upstream, f"sent a manifest of digest {digest}, not {claimed}")
        try:
            manifest = parse_manifest(raw, content_type, digest)
        except RegistryError as error:
            raise UpstreamError(upstream, f"sent an unusable manifest: {error.message}") from None
        self._start_storing(target.local, manifest, tag)
        return manifest

    def _start_storing(self, local: str, manifest: Manifest, tag: str | None) -> None:
        keys = [(local, str(manifest.digest))] + ([(local, tag)] if tag is not None else [])
        task = asyncio.create_task(self._store_manifest(local, manifest, tag))
        storing = _Storing(manifest, time.monotonic(), task)
        for key in keys:
            self._storing[key] = storing

        def stored(_: asyncio.Task[None]) -> None:
            for key in keys:
                if self._storing.get(key) is storing:
                    del self._storing[key]

        task.add_done_callback(stored)

    async def _store_manifest(self, local: str, manifest: Manifest, tag: str | None) -> None:
        """Store a manifest served already; a failure is logged (the next pull fetches it
        again)."""
        try:
            await self._store.manifests.put(local, manifest, [tag] if tag else [], [], [])
            if tag is not None:
                await self._tag_checks.confirm(local, tag, manifest.digest)
            await self._store.usage.refresh_after_request(local, pushed_at=time.time())
        except Exception as error:
            log.warning("caching manifest %s of %s failed: %s", manifest.digest, local, error)

    async def _read_small(self, upstream: Upstream, chunks: AsyncIterator[bytes]) -> bytes:
        """A manifest or tag list, at most `uploads.manifest_max_bytes`."""
        parts, size = [], 0
        async for chunk in chunks:
            size += len(chunk)
            if size > self._manifest_max_bytes:
                raise UpstreamError(upstream, f"sent more than {self._manifest_max_bytes} bytes")
            parts.append(chunk)
        return b"".join(parts)

    def _unknown(self, target: Target, reference: str) -> RegistryError:
        return RegistryError(
            ErrorCode.MANIFEST_UNKNOWN,
            not_upstream(target.upstream, f"manifest {target.remote}:{reference}"),
            detail={"reference": reference[:160]},
        )

    # -- tags --------------------------------------------------------------------

    async def tags(
        self, target: Target, params: dict[str, str]
    ) -> tuple[list[str], str | None] | None:
        """The upstream's tags of `target` (one page: `params` holds the client's `n` and
        `last`) and the query of the next page's link, if any; None when the upstream
        cannot answer (logged: the cached tags are listed instead)."""
        upstream = target.upstream
        path = "tags/list?" + urlencode(params) if params else "tags/list"
        try:
            async with upstream.open("GET", target.remote, path) as response:
                if response.status_code == 404:
                    raise RegistryError(
                        ErrorCode.NAME_UNKNOWN,
                        not_upstream(upstream, f"repository {target.remote}"),
                        detail={"name": target.remote},
                    )
                tags = _tag_list(upstream, await self._read_small(upstream, response.aiter_bytes()))
                link = response.headers.get("link", "")
        except UpstreamError as error:
            self._count(target, "error")
            log.warning("listing the cached tags of %s instead: %s", target.local, error)
            return None
        following = _LINK_QUERY.search(link)
        return tags, following[1] if following else None

    # -- blobs -------------------------------------------------------------------

    async def blob(
        self, target: Target, digest: Digest, method: str, ranged: bool = False
    ) -> Response | int | None:
        """A response for a blob not cached yet (streamed from the upstream while it is
        stored), else the blob's vouched size when it was looked up here (None: the
        store holds it for `target.local`, look it up). `ranged`: the client asks for a
        range, which is served from the store once the whole blob is (the fill's stream
        is the whole body, from its start)."""
        blobs = self._store.blobs
        key = (target.local, digest)
        if (size := await blobs.vouched_size(digest, target.local)) is not None:
            self._count(target, "hit")
            return size
        if self._filled_lately(key):
            self._count(target, "hit")
            return None
        running = self._fills.get(key)
        try:
            if method == "HEAD":
                return await self._head_blob(target, digest)
            if running is not None:  # another request is fetching it: share its result
                self._count(target, "hit")
                await asyncio.shield(running.task)
                return None
            await self._refuse_if_read_only()
            if await blobs.size(digest) is not None:  # stored for another repository
                await self._head_blob(target, digest)  # which the upstream must confirm here
                await blobs.link(target.local, digest)
                self._count(target, "hit")
                return None
        except UpstreamError as error:
            if running is None:  # a failed fill counts itself
                self._count(target, "error")
            raise self._failed(target, error) from None
        if key in self._fills or self._filled_lately(key):
            return await self.blob(target, digest, method, ranged)  # started or done meanwhile
        # Not fsynced: it stands between the client and its first byte, and a crash that
        # loses it (or leaves it empty, which reads as free) costs at most one more fetch.
        lease = await take_lease(
            self._store.driver, paths.proxy_filling(digest), _FILL_LEASE, durable=False
        )
        # None: another process is fetching it; if it goes away or fails, fetch it here
        if lease is None and await self._other_fill_stored(key):
            return await self.blob(target, digest, method, ranged)
        if lease is not None and (
            key in self._fills or self._filled_lately(key) or await blobs.size(digest) is not None
        ):  # its holder before us stored the blob and let the lease go since we looked
            await self._store.driver.delete(lease.key)
            return await self.blob(target, digest, method, ranged)
        self._count(target, "miss")
        fill = self._start_fill(target, digest, lease)
        try:
            headers = await fill.started
            if ranged:
                fill.detach()
                await asyncio.shield(fill.task)
                return None
        except UpstreamError as error:  # counted by the fill
            raise self._failed(target, error) from None
        answer = {
            "Docker-Content-Digest": str(digest),
            "Content-Type": "application/octet-stream",
        }
        if "content-length" in headers and "content-encoding" not in headers:
            answer["Content-Length"] = headers["content-length"]
        return FilledResponse(fill.stream(), headers=answer)

    async def _other_fill_stored(self, key: tuple[str, Digest]) -> bool:
        """Wait while another process holds the lease of filling the blob (or a request
        of this one, which is joined); True once the store has the blob."""
        digest = key[1]
        lease = paths.proxy_filling(digest)
        while True:
            if (running := self._fills.get(key)) is not None:
                try:
                    await asyncio.shield(running.task)
                except Exception:  # logged by that fill
                    return False
                return True
            if await self._store.blobs.size(digest) is not None:
                return True
            try:
                held = await self._store.driver.read_versioned(lease)
            except PathNotFoundError:
                return await self._store.blobs.size(digest) is not None
            if not held.data or held.age >= _FILL_LEASE:
                return False
            await asyncio.sleep(_FILL_POLL)

    def _start_fill(self, target: Target, digest: Digest, lease: Lease | None) -> BlobFill:
        key = (target.local, digest)
        fill = BlobFill(
            self._store,
            target.upstream,
            target.remote,
            target.local,
            digest,
            lambda amount: self._count(target, "bytes", amount),
            lease,
        )
        self._fills[key] = fill

        def finished(task: object) -> None:
            if self._fills.get(key) is fill:
                del self._fills[key]
            if fill.task.cancelled():
                return
            error = fill.task.exception()
            if error is None:
                self._filled[key] = time.monotonic()
                while len(self._filled) > _FILLED_KEPT:
                    self._filled.popitem(last=False)
            elif isinstance(error, UpstreamError):
                self._count(target, "error")

        fill.task.add_done_callback(finished)
        return fill

    def _filled_lately(self, key: tuple[str, Digest]) -> bool:
        filled = self._filled.get(key)
        return filled is not None and time.monotonic() - filled < _FILLED_FOR

    async def _head_blob(self, target: Target, digest: Digest) -> Response:
        async with target.upstream.open("HEAD", target.remote, f"blobs/{digest}") as response:
            if response.status_code == 404:
                raise RegistryError(
                    ErrorCode.BLOB_UNKNOWN,
                    not_upstream(target.upstream, f"blob {digest} of {target.remote}"),
                    detail={"digest": str(digest)},
                )
            headers = {
                "Docker-Content-Digest": str(digest),
                "Content-Type": "application/octet-stream",
            }
            if length := response.headers.get("content-length"):
                headers["Content-Length"] = length
        return Response(headers=headers)


@dataclass(frozen=True, slots=True)
class _Storing:
    """A manifest fetched (at `fetched`, monotonic) that `task` is storing."""

    manifest: Manifest
    fetched: float
    task: asyncio.Task[None]


def _warning(reason: str) -> str:
    """The `Warning` header of a stale answer (RFC 9111's code 110, ASCII)."""
    text = reason.replace('"', "'").encode("ascii", "replace").decode()
    return f'110 dockyard "stale: {text}"'


def _tag_list(upstream: Upstream, raw: bytes) -> list[str]:
    try:
        tags = json.loads(raw).get("tags") or []
    except (ValueError, AttributeError):
        tags = None
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise UpstreamError(upstream, "sent no tag list")
    return [tag for tag in tags if is_tag(tag)]


def _digest_or_none(value: str | None) -> Digest | None:
    if not value:
        return None
    try:
        return Digest.parse(value)
    except RegistryError:
        return None
