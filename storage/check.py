"""`dockyard check`: verify what the storage holds, and optionally repair it.

Three passes, in this order so that a repair in one is seen by the next:
1. every blob under `blobs/` is hashed and compared with its digest, streamed in
   `READ_CHUNK` pieces (hashing in a thread, off the event loop), `parallelism` blobs at
   a time. A corrupt one is, with `repair`, copied (streamed) to `quarantine/<alg>/<hex>`
   and removed from its content address, so it is no longer served;
2. in every repository, each blob link and each manifest revision must have its content
   (else it is dangling: removed with `repair`, a manifest together with its tags), and
   each manifest's references must be there (reported only: nothing safe can fix them;
   not in a pull-through cache's repositories, which fetch them when they are pulled);
3. each tag must point at a manifest of its repository (else removed with `repair`).

It runs beside a live registry: pushes write content before links and links before
tags, so nothing a push is in the middle of looks dangling. Repositories it changed get
an exact usage summary (`Usage.refresh(exact=True)`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field

from oci.errors import RegistryError
from oci.manifests import Descriptor, Manifest, parse_manifest
from oci.references import Digest, is_digest_of
from storage import paths
from storage.driver import PathNotFoundError
from storage.store import Store

# Which blobs of a manifest its repository must hold (the registry's validation policy).
RequiredBlobs = Callable[[Manifest], Iterable[Descriptor]]


@dataclass(slots=True)
class Problem:
    kind: str  # corrupt-blob, dangling-link, dangling-manifest, missing-reference, dangling-tag
    subject: str  # the digest or tag at fault
    detail: str
    repository: str | None = None
    repaired: bool = False


@dataclass(slots=True)
class CheckReport:
    blobs_checked: int = 0
    repositories_checked: int = 0
    problems: list[Problem] = field(default_factory=list)


def _all_blobs(manifest: Manifest) -> Iterable[Descriptor]:
    return [manifest.config, *manifest.layers] if manifest.config else manifest.layers


class Checker:
    def __init__(
        self,
        store: Store,
        repair: bool = False,
        parallelism: int = 4,
        required_blobs: RequiredBlobs = _all_blobs,
        children_required: bool = True,
        pulled_through: Callable[[str], bool] = lambda name: False,
    ) -> None:
        """`pulled_through(name)`: the repository is a pull-through cache's, whose
        manifests' blobs and child manifests are fetched when a client pulls them, so
        their absence is no problem."""
        self._store = store
        self._driver = store.driver
        self._repair = repair
        self._parallelism = parallelism
        self._required_blobs = required_blobs
        self._children_required = children_required
        self._pulled_through = pulled_through
        self.report = CheckReport()

    async def run(self) -> CheckReport:
        await _bounded(self._stored_blobs(), self._check_blob, self._parallelism)
        for name in await self._store.catalog.names():
            await self._check_repository(name)
        return self.report

    def _found(self, problem: Problem) -> Problem:
        self.report.problems.append(problem)
        return problem

    async def _stored_blobs(self) -> AsyncIterator[Digest]:
        top = paths.blobs_dir()
        for algorithm in await self._driver.list(top):
            for prefix in await self._driver.list(f"{top}/{algorithm}"):
                for encoded in await self._driver.list(f"{top}/{algorithm}/{prefix}"):
                    if is_digest_of(algorithm, encoded):
                        yield Digest(algorithm, encoded)

    async def _check_blob(self, digest: Digest) -> None:
        hasher = hashlib.new(digest.algorithm)
        try:
            async for chunk in self._driver.reader(paths.blob_data(digest)):
                await asyncio.to_thread(hasher.update, chunk)
        except PathNotFoundError:
            return  # removed meanwhile, or a folder left by an earlier removal
        self.report.blobs_checked += 1
        actual = Digest(digest.algorithm, hasher.hexdigest())
        if actual == digest:
            return
        problem = self._found(Problem("corrupt-blob", str(digest), f"its bytes hash to {actual}"))
        if self._repair:
            await self._quarantine(digest)
            problem.repaired = True
            problem.detail += f"; moved to {paths.quarantined(digest)}"

    async def _quarantine(self, digest: Digest) -> None:
        writer = await self._driver.writer(paths.quarantined(digest))
        try:
            async for chunk in self._driver.reader(paths.blob_data(digest)):
                await writer.write(chunk)
        except BaseException:
            await writer.cancel()
            raise
        await writer.commit(paths.quarantined(digest))
        await self._driver.delete(paths.blob_data(digest))

    async def _has_content(self, digest: Digest) -> bool:
        return await self._driver.exists(paths.blob_data(digest))

    async def _check_repository(self, name: str) -> None:
        self.report.repositories_checked += 1
        before = len(self.report.problems)
        blobs, manifests = self._store.blobs, self._store.manifests
        links = await blobs.links(name)
        for digest in sorted(links, key=str):
            if not await self._has_content(digest):
                problem = self._found(
                    Problem("dangling-link", str(digest), "blob link without content", name)
                )
                if self._repair:
                    await blobs.unlink(name, digest)
                    problem.repaired = True
        revisions = set(await manifests.digests(name))
        for digest in sorted(revisions, key=str):
            await self._check_manifest(name, digest, links, revisions)
        for tag in await manifests.tags(name):
            target = await manifests.resolve(name, tag)
            if target is None or await manifests.exists(name, target):
                continue
            problem = self._found(
                Problem("dangling-tag", tag, f"points at {target}, not in the repository", name)
            )
            if self._repair:
                await manifests.untag(name, tag)
                problem.repaired = True
        if self._repair and any(p.repaired for p in self.report.problems[before:]):
            await self._store.usage.refresh(name, exact=True)

    async def _check_manifest(
        self, name: str, digest: Digest, links: set[Digest], revisions: set[Digest]
    ) -> None:
        manifests = self._store.manifests
        try:
            stored = await manifests.get(name, digest)
        except PathNotFoundError:
            stored = None
        if stored is None:
            problem = self._found(
                Problem("dangling-manifest", str(digest), "manifest without content", name)
            )
            if self._repair:  # its tags go with it
                await manifests.delete(name, digest)
                problem.repaired = True
            return
        try:
            manifest = parse_manifest(stored.raw, stored.media_type, digest)
        except RegistryError as error:
            self._found(Problem("missing-reference", str(digest), f"unreadable: {error}", name))
            return
        if self._pulled_through(name):
            return
        wanted = [(d.digest, "blob") for d in self._required_blobs(manifest)]
        if self._children_required:
            wanted += [(d.digest, "manifest") for d in manifest.children]
        for reference, kind in wanted:
            held = reference in (links if kind == "blob" else revisions)
            if not held or not await self._has_content(reference):
                self._found(
                    Problem(
                        "missing-reference",
                        str(digest),
                        f"references {kind} {reference}, which the repository lacks",
                        name,
                    )
                )


async def _bounded(
    items: AsyncIterator[Digest], work: Callable[[Digest], Awaitable[None]], parallelism: int
) -> None:
    """`work` on each item, at most `parallelism` at once, reading `items` as it goes."""
    lock = asyncio.Lock()

    async def worker() -> None:
        while True:
            async with lock:
                item = await anext(items, None)
            if item is None:
                return
            await work(item)

    await asyncio.gather(*(worker() for _ in range(parallelism)))


def render(report: CheckReport, repair: bool) -> str:
    """The human report: one line a problem, then a summary line."""
    lines = []
    for problem in report.problems:
        where = f"{problem.repository}: " if problem.repository else ""
        fixed = " [repaired]" if problem.repaired else ""
        lines.append(f"{problem.kind:18} {where}{problem.subject}: {problem.detail}{fixed}")
    found = len(report.problems)
    repaired = sum(problem.repaired for problem in report.problems)
    lines.append(
        f"checked {report.blobs_checked} blobs and {report.repositories_checked} repositories: "
        + (f"{found} problems" if found else "no problems")
        + (f", {repaired} repaired" if repair and found else "")
    )
    return "\n".join(lines)


def to_json(report: CheckReport) -> str:
    return json.dumps(asdict(report), indent=2)
