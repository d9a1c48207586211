"""The garbage collection figure (issue 11 §5): Dockyard's online `dockyard gc` against
the reference registry's offline `garbage-collect`, on the same data, on the filesystem
and on one SeaweedFS.

The data: `blobs` small blobs, half referenced by `blobs / 10` manifests (a config and
four layers each, one tag each; the manifests' own bytes are blobs too) in `blobs / 100`
repositories, half referenced by nothing but a link in their repository (what deleting
an image leaves). It is written straight into each registry's storage layout, not pushed
through HTTP: Dockyard's by its own store (into memory, a batch at a time, then copied
out as files), the reference's as distribution lays it out; on SeaweedFS those files
are then copied into the buckets through its filer. Each collector is timed, with its
peak RSS (on the filesystem twice, on fresh copies, taking turns at going first; the
figure is the median); Dockyard's with its server up (it collects online), the
reference's with its server stopped (it must). Then the request rates of the Dockyard
server on that data, with its own background collector on and off.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.figures import request_rate
from bench.report import machine
from bench.s3 import SharedS3
from bench.servers import ReferenceRegistry, version_of
from oci.manifests import DOCKER_MANIFEST, parse_manifest
from oci.references import Digest
from registry.config import Config
from storage import paths
from storage.memory import MemoryDriver
from storage.store import Store
from tests.support.seaweedfs import SeaweedFS, weed_binary
from tests.support.server import RegistryProcess

MB = 1e6
LAYERS = 4  # and a config: five referenced blobs a manifest
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
REFERENCE_ROOT = "docker/registry/v2"
BATCH = 500  # images written into memory, then copied out, at a time
RSS_TARGET = 150 * MB
PSS_EVERY = 0.05  # seconds between samples of a collection's memory
SECONDS_TARGET = {"filesystem": 60.0, "SeaweedFS": 300.0}
RATE_TARGET = 0.95  # request rates with the collector running, against without
COLLECTING_WAIT = 30.0  # seconds a collecting server has to start its first run
FILESYSTEM_COLLECTIONS = 2  # timed of each on the filesystem, taking turns at going first


@dataclass(frozen=True)
class GcData:
    blobs: int  # half referenced, half not (the manifests' own bytes come on top)

    @property
    def manifests(self) -> int:
        return max(1, self.blobs // 10)

    @property
    def repositories(self) -> int:
        return max(1, self.blobs // 100)

    def describe(self) -> str:
        return (
            f"{self.blobs:,} blobs of ~50 bytes ({self.blobs // 2:,} referenced by "
            f"{self.manifests:,} manifests, a config and {LAYERS} layers each, one tag each; "
            f"{self.blobs - self.manifests * (LAYERS + 1):,} referenced by nothing but a link "
            f"in their repository) in {self.repositories:,} repositories; the manifests' own "
            "bytes are blobs too"
        )


FULL = GcData(100_000)
QUICK = GcData(2_000)


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Image:
    repository: str
    tag: str
    manifest: bytes
    blobs: list[tuple[str, bytes]]  # (digest, content): the config, then the layers

    @property
    def digest(self) -> str:
        return _sha256(self.manifest)


def images(data: GcData) -> Iterator[Image]:
    for n in range(data.manifests):
        config, *layers = [f"image {n} blob {i} ".encode() * 3 for i in range(LAYERS + 1)]
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": {"mediaType": CONFIG_TYPE, "digest": _sha256(config),
                           "size": len(config)},
                "layers": [{"mediaType": LAYER_TYPE, "digest": _sha256(layer),
                            "size": len(layer)} for layer in layers],
            }
        ).encode()  # fmt: skip
        blobs = [(_sha256(blob), blob) for blob in (config, *layers)]
        yield Image(f"gc/repo-{n % data.repositories:05d}", f"t{n}", manifest, blobs)


def orphans(data: GcData) -> Iterator[tuple[str, str, bytes]]:
    """(repository, digest, content) of the blobs no manifest references."""
    for n in range(data.blobs - data.manifests * (LAYERS + 1)):
        blob = f"orphan {n} ".encode() * 4
        yield f"gc/repo-{n % data.repositories:05d}", _sha256(blob), blob


def _batches(items: Iterator[Any], size: int = BATCH) -> Iterator[list[Any]]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


Objects = dict[str, bytes]


def dockyard_objects(data: GcData) -> Iterator[Objects]:
    """Dockyard's layout, written by its own store into memory, a batch at a time."""

    async def batch_of(batch: list[Image | tuple[str, str, bytes]]) -> Objects:
        driver = MemoryDriver()
        store = Store(driver)
        for item in batch:
            if isinstance(item, Image):
                for digest, blob in item.blobs:
                    await driver.put(paths.blob_data(Digest.parse(digest)), blob)
                    await store.blobs.link(item.repository, Digest.parse(digest))
                manifest = parse_manifest(item.manifest, DOCKER_MANIFEST, Digest.parse(item.digest))
                await store.manifests.put(item.repository, manifest, [item.tag], [], [])
            else:
                repository, digest, blob = item
                await driver.put(paths.blob_data(Digest.parse(digest)), blob)
                await store.blobs.link(repository, Digest.parse(digest))
                await store.catalog.add(repository)
        return driver.objects

    for batch in _batches(_all(data)):
        yield asyncio.run(batch_of(batch))


def reference_objects(data: GcData) -> Iterator[Objects]:
    """Distribution's layout (docker/registry/v2/...): blob data, each repository's
    `_layers` links, manifest revisions, and tags (`current` and `index`)."""

    def blob(digest: str) -> str:
        hex_ = digest.removeprefix("sha256:")
        return f"{REFERENCE_ROOT}/blobs/sha256/{hex_[:2]}/{hex_}/data"

    def link(repository: str, kind: str, digest: str) -> str:
        hex_ = digest.removeprefix("sha256:")
        return f"{REFERENCE_ROOT}/repositories/{repository}/{kind}/sha256/{hex_}/link"

    for batch in _batches(_all(data)):
        objects: Objects = {}
        for item in batch:
            if isinstance(item, Image):
                for digest, content in [*item.blobs, (item.digest, item.manifest)]:
                    objects[blob(digest)] = content
                for digest, _ in item.blobs:
                    objects[link(item.repository, "_layers", digest)] = digest.encode()
                manifests = f"{REFERENCE_ROOT}/repositories/{item.repository}/_manifests"
                value = item.digest.encode()
                objects[link(item.repository, "_manifests/revisions", item.digest)] = value
                objects[f"{manifests}/tags/{item.tag}/current/link"] = value
                objects[link(item.repository, f"_manifests/tags/{item.tag}/index", item.digest)] = (
                    value
                )
            else:
                repository, digest, content = item
                objects[blob(digest)] = content
                objects[link(repository, "_layers", digest)] = digest.encode()
        yield objects


def _all(data: GcData) -> Iterator[Image | tuple[str, str, bytes]]:
    yield from images(data)
    yield from orphans(data)


# --- where the objects go: files, or objects in a bucket -----------------------------------


@dataclass
class Files:
    """Writes objects as files below `root` (a few threads: the disk waits, not the CPU)."""

    root: Path
    written: int = 0

    def put(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def write(self, batches: Iterator[Objects]) -> None:
        with ThreadPoolExecutor(4) as pool:
            for objects in batches:
                list(pool.map(lambda item: self.put(*item), objects.items()))
                self.written += len(objects)


def copy_into_bucket(seaweed: SeaweedFS, folder: Path, bucket: str) -> None:
    """Everything below `folder` into `bucket` at the same keys, through SeaweedFS's filer
    (its buckets are filer folders): a Go client, far faster than a PutObject each."""
    target = f"http://127.0.0.1:{seaweed.filer_port}.{seaweed.filer_grpc}/buckets/{bucket}/"
    children = sorted(str(child) for child in folder.iterdir())
    subprocess.run(
        [weed_binary() or "weed", "filer.copy", "-c", "32", *children, target],
        cwd=seaweed.workdir,
        check=True,
        capture_output=True,
    )


# --- the runs -------------------------------------------------------------------------------


@dataclass
class Collection:
    seconds: float
    rss: float  # bytes, peak of the collecting process
    blobs_left: int  # blob data objects stored after it
    pss: float = 0.0  # bytes, peak of the collecting process and its helpers together


@dataclass(frozen=True)
class Collected:
    seconds: float
    rss: float  # the collecting process's peak, GNU time's
    pss: float  # the peak of the proportional set sizes of it and its helpers, summed


def _ratio(ours: float, theirs: float) -> str:
    """A process gone before its first sample has none."""
    return f"{ours / theirs:.2f}x" if theirs else "-"


def _tree_pss(timer: psutil.Process) -> float:
    """The summed PSS (shared pages divided among the processes sharing them) of what
    `timer` (GNU time) runs: the collector and its helper processes (Dockyard's deleting
    processes on the filesystem)."""
    total = 0.0
    for process in timer.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += process.memory_full_info().pss
    return total


def collect(command: list[str], env: dict[str, str] | None, log: Path) -> Collected:
    """Run one collector to its end: seconds, and its peak memory.

    GNU time reports the collecting process's peak RSS (its child's ru_maxrss): the
    bench's own `wait4` would not do, as Linux starts a child's ru_maxrss from its
    parent's RSS when the child execs, and the bench holds the generated data; GNU time's
    RSS is a megabyte or two. The peak of all its processes together is sampled (every
    `PSS_EVERY` seconds): PSS, so pages they share count once.

    Each starts with nothing left to write back (the data just written, the collection
    before it), which would otherwise load the disk of the first one timed."""
    os.sync()
    with open(log, "ab") as output, tempfile.NamedTemporaryFile("r") as peak:
        started = time.perf_counter()
        timed = ["time", "--format", "%M", "--output", peak.name, *command]
        process = subprocess.Popen(timed, env=env, stdout=output, stderr=subprocess.STDOUT)
        timer, pss = psutil.Process(process.pid), 0.0
        while process.poll() is None:
            pss = max(pss, _tree_pss(timer))
            time.sleep(PSS_EVERY)
        seconds = time.perf_counter() - started
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}: see {log}")
        return Collected(seconds, float(peak.read().split()[-1]) * 1024.0, pss)  # KiB


def dockyard_gc_command(server: RegistryProcess) -> list[str]:
    return [sys.executable, "-m", "registry", "gc", "--json", "--config", str(server.config_path)]


@dataclass
class StorageResult:
    storage: str
    # Every timed collection, "dockyard" or "reference", in the order taken.
    timed: list[tuple[str, Collection]]
    build_seconds: float
    objects: dict[str, int]
    rates: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    # The collecting measurements, and how many of them collection work overlapped (a
    # run in progress when it began, or started during it), from the servers' logs.
    collecting_measures: int = 0
    overlapped: int = 0
    runs_started: int = 0  # during the collecting measurements
    runs_ended: int = 0

    @property
    def ours(self) -> list[Collection]:
        return [collection for who, collection in self.timed if who == "dockyard"]

    @property
    def reference(self) -> list[Collection]:
        return [collection for who, collection in self.timed if who == "reference"]

    @property
    def seconds(self) -> tuple[float, float]:
        """The median collection of each: Dockyard's, the reference's."""
        ours = statistics.median(c.seconds for c in self.ours)
        return ours, statistics.median(c.seconds for c in self.reference)

    @property
    def rss(self) -> tuple[float, float]:
        """The highest peak RSS of each."""
        return max(c.rss for c in self.ours), max(c.rss for c in self.reference)

    @property
    def pss(self) -> tuple[float, float]:
        """The highest peak of each's processes together."""
        return max(c.pss for c in self.ours), max(c.pss for c in self.reference)


def _count_files(root: Path) -> int:
    return sum(1 for _ in root.rglob("data"))


def _count_objects(client: Any, bucket: str, prefix: str) -> int:
    count = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        count += sum(1 for item in page.get("Contents", []) if item["Key"].endswith("/data"))
    return count


@dataclass
class Collectors:
    """Runs each registry's collector on its data, as it stands, and counts what it kept."""

    label: str
    workdir: Path
    ours_storage: dict[str, Any]
    reference: ReferenceRegistry
    left: dict[str, Callable[[], int]]  # "dockyard", "reference": the blobs stored now
    cache: Path | None = None  # of Dockyard's last run

    def ours(self) -> Collection:
        """Each run with a cache of its own, empty (collector/known_references.py): the
        first run on a storage reads every manifest. The rate rounds' servers take the
        last one, as a server's runs after its first find the manifests there."""
        time.sleep(1.1)  # past the storage clock's second: everything is older than the grace
        self.cache = Path(tempfile.mkdtemp(prefix="gc-cache-", dir=self.workdir))
        # `dockyard gc` reads this server's configuration: with no grace, everything goes.
        server = serving(
            self.workdir / "dockyard", self.ours_storage, False, self.cache, grace="0s"
        )
        try:
            log = self.workdir / "dockyard-gc.log"
            run = collect(dockyard_gc_command(server), server.env, log)
        finally:
            server.stop()
        print(
            f"bench: gc on {self.label}: dockyard gc {run.seconds:.1f} s, {run.rss / MB:.0f} MB,"
            f" {run.pss / MB:.0f} MB with its helpers"
        )
        return Collection(run.seconds, run.rss, self.left["dockyard"](), run.pss)

    def theirs(self) -> Collection:
        env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        command = ["docker-registry", "garbage-collect", str(self.reference.config_path)]
        run = collect(command, env, self.workdir / "reference-gc.log")
        print(f"bench: gc on {self.label}: reference {run.seconds:.1f} s, {run.rss / MB:.0f} MB")
        return Collection(run.seconds, run.rss, self.left["reference"](), run.pss)


def measure(
    label: str,
    data: GcData,
    workdir: Path,
    rounds: int,
    wrk_seconds: int,
    shared: SharedS3 | None = None,
) -> StorageResult:
    """Build both registries' data on one storage, collect each, then the request rates.

    On the filesystem each collects `FILESYSTEM_COLLECTIONS` times, each time on a fresh
    copy of the data written once, the two taking turns at going first, so that neither
    always runs right after what leaves the disk work to do (the copies' write-back, the
    discards of the other's deletions). On SeaweedFS each collects once, Dockyard first:
    copying the data into the buckets takes minutes."""
    workdir.mkdir(parents=True, exist_ok=True)
    ours_files, reference_files = workdir / "dockyard-data", workdir / "reference" / "data"
    pristine = workdir / "pristine"
    ours_storage: dict[str, Any] = {"filesystem": {"root": str(ours_files)}}
    reference = ReferenceRegistry(workdir / "reference")
    if shared is not None:
        ours_storage = shared.dockyard
        reference = ReferenceRegistry(workdir / "reference", storage=shared.reference)
        client = shared.seaweed.client()
        left = {
            "dockyard": lambda: _count_objects(client, ours_storage["s3"]["bucket"], "blobs/"),
            "reference": lambda: _count_objects(
                client, shared.reference["s3"]["bucket"], f"{REFERENCE_ROOT}/"
            ),
        }
    else:
        left = {
            "dockyard": lambda: _count_files(ours_files / "blobs"),
            "reference": lambda: _count_files(reference_files / REFERENCE_ROOT / "blobs"),
        }
    print(f"bench: gc on {label}: writing {data.blobs:,} blobs into both layouts", flush=True)
    started = time.perf_counter()
    ours_sink, reference_sink = Files(pristine / "dockyard"), Files(pristine / "reference")
    ours_sink.write(dockyard_objects(data))
    reference_sink.write(reference_objects(data))
    if shared is not None:
        copy_into_bucket(shared.seaweed, ours_sink.root, ours_storage["s3"]["bucket"])
        copy_into_bucket(shared.seaweed, reference_sink.root, shared.reference["s3"]["bucket"])
        shutil.rmtree(pristine)
    built = time.perf_counter() - started
    objects = {"dockyard": ours_sink.written, "reference": reference_sink.written}
    print(f"bench: gc on {label}: {objects} objects in {built:.0f} s", flush=True)
    collectors = Collectors(label, workdir, ours_storage, reference, left)
    result = StorageResult(label, [], built, objects)
    if shared is not None:
        result.timed.append(("dockyard", collectors.ours()))
        result.timed.append(("reference", collectors.theirs()))
    else:
        sides = [
            ("dockyard", ours_sink.root, ours_files, collectors.ours),
            ("reference", reference_sink.root, reference_files, collectors.theirs),
        ]
        for turn in range(FILESYSTEM_COLLECTIONS):
            for who, source, files, collector in sides if turn % 2 == 0 else sides[::-1]:
                shutil.rmtree(files, ignore_errors=True)
                shutil.copytree(source, files)
                result.timed.append((who, collector()))
        shutil.rmtree(pristine)
    _check_left(result, data)
    assert collectors.cache is not None
    rate_rounds(result, ours_storage, collectors.cache, workdir, rounds, wrk_seconds, data)
    return result


def _check_left(result: StorageResult, data: GcData) -> None:
    """Both kept exactly the referenced blobs and the manifests."""
    expected = data.manifests * (LAYERS + 2)
    for label, collection in result.timed:
        if collection.blobs_left != expected:
            raise RuntimeError(
                f"{label} kept {collection.blobs_left} blobs on {result.storage}, not {expected}"
            )


def serving(
    workdir: Path,
    storage: dict[str, Any],
    collecting: bool,
    cache: Path,
    grace: str | None = None,
) -> RegistryProcess:
    """A Dockyard server (one worker per CPU) on `storage`; `collecting`: its own
    collector runs a second after the last run ended, so nearly all the time; `cache`:
    `gc.cache_dir`; `grace`: `gc.grace` if not the default (an hour)."""
    gc_settings: dict[str, Any] = {"enabled": collecting, "interval": "1s", "cache_dir": str(cache)}
    if grace is not None:
        gc_settings["grace"] = grace
    config = {"storage": storage, "gc": gc_settings}
    return RegistryProcess(workdir, config, workers=os.cpu_count() or 1).start()


@dataclass(frozen=True)
class RunsLogged:
    """The background runs a server's log shows so far (collector/run.py logs each
    start and end; a failed run is logged by the worker that started it)."""

    started: int
    ended: int

    @classmethod
    def of(cls, log: str) -> RunsLogged:
        started = len(re.findall(r"gc run \w+ started", log))
        ended = len(re.findall(r"gc run \w+: removed|garbage collection failed", log))
        return cls(started, ended)

    @property
    def running(self) -> bool:
        return self.started > self.ended


def overlapped(before: RunsLogged, after: RunsLogged) -> bool:
    """Whether collection work went on during the interval between the two looks: a run
    in progress at its start, or one started within it."""
    return before.running or after.started > before.started


def _await_a_run(server: RegistryProcess, timeout: float = COLLECTING_WAIT) -> None:
    """Until the server's collector is in a run (its first starts `gc.interval` after
    the server did); the measurement then begins with collection work under way."""
    deadline = time.monotonic() + timeout
    while not RunsLogged.of(server.log()).running and time.monotonic() < deadline:
        time.sleep(0.1)


def rate_rounds(
    result: StorageResult,
    storage: dict[str, Any],
    cache: Path,
    workdir: Path,
    rounds: int,
    seconds: int,
    data: GcData,
) -> None:
    """Request rates with the servers' own background collector on and off, alternately,
    in an even number of rounds (at least `rounds`): one idle first, the next collecting
    first, so a drift of the storage over the rounds cancels out.

    The servers keep the default `gc.grace`, as the bench's other figures do: with none,
    every HEAD writes a touch and every manifest GET a pull time. `dockyard gc` removed
    the unreferenced data already, so a background run marks and lists everything and
    deletes nothing, whatever its grace. The servers' runs keep the cache of manifests'
    references `cache` (the last `dockyard gc` left it): they read no manifest, as a
    server's runs after its first."""
    image = next(images(data))
    accept = f'wrk.headers["Accept"] = "{DOCKER_MANIFEST}"'
    paths_ = {
        "manifest_rps": (f"/v2/{image.repository}/manifests/{image.tag}", accept),
        "head_rps": (f"/v2/{image.repository}/blobs/{image.blobs[1][0]}", "HEAD"),
    }
    for round_ in range(rounds + rounds % 2):
        for collecting in (False, True) if round_ % 2 == 0 else (True, False):
            column = "collecting" if collecting else "idle"
            server = serving(workdir / f"{column}-{round_}", storage, collecting, cache)
            try:
                if collecting:
                    _await_a_run(server)
                else:
                    time.sleep(2)  # as long as a collecting server's first run takes to start
                for key, (path, script) in paths_.items():
                    before = RunsLogged.of(server.log())
                    rate = request_rate(server.url + path, script, seconds, workdir)
                    after = RunsLogged.of(server.log())
                    result.rates.setdefault(key, {}).setdefault(column, []).append(rate)
                    print(f"  {result.storage} {key:13} {column:10} {rate:10.1f}", flush=True)
                    if collecting:
                        result.collecting_measures += 1
                        result.overlapped += overlapped(before, after)
                        result.runs_started += after.started - before.started
                        result.runs_ended += after.ended - before.ended
                    elif after.started:
                        raise RuntimeError(f"the idle server collected: see {server.log_path}")
            finally:
                server.stop()


def run(data: GcData, workdir: Path, rounds: int, wrk_seconds: int) -> str:
    """Both storages, then the section of RESULTS.md (with what it has if one fails)."""
    load_before = os.getloadavg()
    results = [measure("filesystem", data, workdir / "fs", rounds, wrk_seconds)]
    shared = SharedS3.start(workdir / "seaweedfs", redirect=False)
    notes = list(shared.notes)
    try:
        results.append(measure("SeaweedFS", data, workdir / "s3", rounds, wrk_seconds, shared))
    except (RuntimeError, subprocess.SubprocessError) as error:
        notes.append(f"SeaweedFS: not measured: {error}")
    finally:
        shared.stop()
    return render(data, results, load_before, notes)


# --- the report -----------------------------------------------------------------------------


WHERE_THE_TIME_GOES = [
    "What stands in the way of the time targets (the gc-profile section below has the "
    "filesystem run's phases, system calls and threads, measured alone on the same "
    "data). On the filesystem the collection is the kernel's work per file and folder: "
    "per unreferenced blob Dockyard removes the data and its folder, its tomb (a hard "
    "link) and the repository's link (one empty file since 2026-12-05, no longer a "
    "folder holding one), where the offline reference removes the data and its folder "
    "only (it leaves the links); every freed block waits for its discard on this SSD "
    "(mounted with `discard`: ext4 issues it inside the unlink or rmdir), and every "
    "folder removal takes its parent's lock. What is left to cut is the usage summaries "
    "rewritten after the sweep (1.4 s of a run, while the deleting processes are idle), "
    "the sweep's listing of every blob's folder (2 s: an open, two reads of the folder "
    "and a stat each), the Python work per link (each run parses every link in two "
    "listings: the mark's and the check after each usage summary's write) and the "
    "tombs. How far "
    "either program is from the other moves with the disk and the CPU: the reference "
    "deletes in one thread and waits out each discard, Dockyard's deleting processes "
    "overlap them. On SeaweedFS the "
    "collecting process waits on SeaweedFS: in a profile of 10,000 blobs (gc-profile, "
    "taken when a fan-out folder cost four) three quarters of the run were the sweep's "
    "DeleteObjects, about 100 ms each for some 120 keys or 60 folders; per fan-out "
    "folder the run now makes three (the doomed "
    "objects, then the tombs: S3 gives no order within one request, then the folders "
    "both emptied), per unreferenced blob one PutObject the offline reference needs not "
    "(its tomb, through obstore: ~0.35 ms of CPU, boto3's ~2 ms), per manifest one "
    "GetObject (its bytes: the mark reads no revision link; a later run on the machine "
    "finds it in its cache, collector/known_references.py).",
]


RATES_FALL = (
    "What stands in the way of the request rate target: the servers' background "
    "collection runs in a child process at nice 19 (collector/niced.py), so it takes "
    "only CPU the workers leave idle, and paced (collector/pacing.py): it works at most "
    "`gc.background_share` of the time, resting between its steps. What it still costs "
    "serving is the storage's side of the work it does (SeaweedFS answering its "
    "requests at normal priority; the kernel's locks on the files and folders both "
    "use) and, each `gc.interval`, starting that process (the bench's interval is 1 s, "
    "a server's default an hour). While it works, a run keeps SeaweedFS about as busy as "
    "it can be, whatever its width: measured with no client, SeaweedFS took 0.21-0.26 "
    "CPU-seconds a second beside a run paced to 0.2 (0.02-0.03 idle), with 8 or 2 "
    "repositories at once alike. So that cost scales with the share alone, and the "
    "default share is 0.1. The rates are medians of a few short rounds on a "
    "shared 2-core machine that also runs the load generator: idle rounds of one run "
    "differ by more than the target's 5 %."
)


def paired_ratio(columns: dict[str, list[float]]) -> float:
    """The median of each round's collecting rate over its idle one: the two of a round
    are measured back to back, so a drift of the machine over the rounds cancels out
    (a ratio of the columns' medians would take it in)."""
    pairs = zip(columns["collecting"], columns["idle"], strict=True)
    return statistics.median(collecting / idle for collecting, idle in pairs)


def _collections(result: StorageResult) -> str:
    names = {"dockyard": "Dockyard", "reference": "the reference"}
    taken = (f"{names[who]} {collection.seconds:.1f} s" for who, collection in result.timed)
    return "the collections, in the order timed: " + ", ".join(taken)


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def render(
    data: GcData,
    results: list[StorageResult],
    load_before: tuple[float, float, float],
    notes: list[str],
) -> str:
    lines = ["## Garbage collection", "", "Written by `python -m bench --only gc`.", ""]
    lines += ["| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in machine(load_before).items()]
    lines += [
        f"| data | {data.describe()} |",
        f"| reference | {version_of(['docker-registry', '--version'])}, "
        "`garbage-collect` with the server stopped (it must be) |",
        "| Dockyard | `dockyard gc` beside its running server (2 workers), `gc.grace: 0s`, "
        "its cache of what manifests reference empty (a first run: it reads them all) |",
        "",
        "| figure | unit | Dockyard | reference | ratio | target |",
        "|---|---|---:|---:|---:|---|",
    ]
    for result in results:
        ours, theirs = result.seconds
        limit = SECONDS_TARGET[result.storage]
        lines.append(
            f"| one collection, {result.storage} | s | {ours:,.1f} | {theirs:,.1f} | "
            f"{ours / theirs:.2f}x | faster, and < {limit:.0f} s: "
            f"{_met(ours < theirs and ours < limit)} |"
        )
    peaks = {  # StorageResult's properties
        "peak RSS of the collecting process": "rss",
        "peak memory of the collection, all its processes (PSS)": "pss",
    }
    for title, peak in peaks.items():
        for result in results:
            ours, theirs = getattr(result, peak)
            lines.append(
                f"| {title}, {result.storage} | MB | {ours / MB:,.0f} | {theirs / MB:,.0f} | "
                f"{_ratio(ours, theirs)} | < 150 MB: {_met(ours < RSS_TARGET)} |"
            )
    lines += [
        "",
        "Request rates of the Dockyard server on that data (64 connections; wrk for the "
        "manifest, hey for HEAD), with the servers' own background collector on "
        "(`gc.interval: 1s`: a run starts a second after the last ended; paced to "
        f"`gc.background_share: {Config().gc.background_share}` of the time, the default; "
        "`gc.grace` the default, an hour: each run marks and lists everything, and finds "
        "nothing to delete, `dockyard gc` having removed it; the cache of what manifests "
        "reference the last `dockyard gc` left, so a run reads no manifest, as a server's "
        "runs after its first) and off, alternately; medians, "
        "and the median of each round's collecting rate over its idle one (the two of a "
        "round measured back to back):",
        "",
        "| storage | figure | req/s idle | req/s collecting | ratio | target |",
        "|---|---|---:|---:|---:|---|",
    ]
    titles = {"manifest_rps": "manifest GET by tag", "head_rps": "HEAD blob"}
    for result in results:
        for key, columns in result.rates.items():
            idle = statistics.median(columns["idle"])
            busy = statistics.median(columns["collecting"])
            ratio = paired_ratio(columns)
            lines.append(
                f"| {result.storage} | {titles[key]} | {idle:,.0f} | {busy:,.0f} | "
                f"{ratio:.2f}x | >= {RATE_TARGET:.2f}x: {_met(ratio >= RATE_TARGET)} |"
            )
    if any(r.seconds[0] >= min(r.seconds[1], SECONDS_TARGET[r.storage]) for r in results):
        lines += ["", *WHERE_THE_TIME_GOES]
    if any(paired_ratio(c) < RATE_TARGET for r in results for c in r.rates.values()):
        lines += ["", RATES_FALL]
    lines += ["", "Notes:"]
    for result in results:
        lines.append(
            f"- {result.storage}: writing the data took {result.build_seconds:.0f} s "
            f"({result.objects['dockyard']:,} objects for Dockyard, "
            f"{result.objects['reference']:,} for the reference); both kept exactly the "
            f"{result.ours[0].blobs_left:,} referenced blobs each time; "
            f"{_collections(result)}; collection work overlapped "
            f"{result.overlapped} of the {result.collecting_measures} collecting "
            f"measurements ({result.runs_started} background runs started and "
            f"{result.runs_ended} ended during them; the servers' logs)"
        )
    lines += [f"- {note}" for note in notes]
    lines += [
        "",
        "Request rates, each column's measurements in the order taken (req/s):",
        "",
        "```",
    ]
    for result in results:
        for key, columns in result.rates.items():
            for column, values in columns.items():
                taken = " ".join(f"{value:.0f}" for value in values)
                lines.append(f"{result.storage:10} {key:13} {column:10} {taken}")
    lines.append("```")
    return "\n".join(lines) + "\n"
