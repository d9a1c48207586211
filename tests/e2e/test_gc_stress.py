"""The collector against real servers (issue 11 §4): a 2-worker `dockyard serve` (and, on
S3, two replicas on one bucket) serving pushes, re-pushes, mounts, deletes and pulls while
collectors run in a tight loop (the servers' own, every second, and `dockyard gc`
processes; in the kill variant `dockyard gc` processes alone, half of them killed with -9
at a step of their sweep). Afterwards every manifest that
got a 201 and was not deleted pulls whole with every digest verified, and, after one more
run past the grace, storage holds exactly the blobs those manifests reference. Two
replicas with only their own collectors: one run at a time, and the same invariant."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import math
import os
import random
import re
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from collector.cli import PAUSE_ENV, PAUSED
from collector.known_references import FILE_NAME, default_cache_dir
from registry.config import S3Config
from registry.drivers import s3_settings
from storage import paths
from storage.driver import StorageDriver
from storage.filesystem import FilesystemDriver
from storage.s3 import S3Driver
from storage.stale_tombs import STALE_AFTER
from tests.support.processes import kill_process_group
from tests.support.seaweedfs import SeaweedFS, unique_prefix
from tests.support.server import ROOT, RegistryProcess
from tests.support.storage_clock import set_back

pytestmark = pytest.mark.e2e

GRACE = 2.0
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
BASES = [f"base layer {n} ".encode() * 500 for n in range(3)]  # shared by every image
ROUNDS = 40
CLIENTS = 3
SWEEP_STEPS = ["entombed", "checked", "deleted"]  # collector/sweep.py's hook steps
# A killed run's tombs make uploads of their blobs answer 503 until they are
# `stale_tomb_after` (2 min) old and the killed run's lease (1 min) has expired: then the
# API removes them. The test does not wait that out (`expire_what_it_left`); a few
# kills, then clean runs, and clients that retry for 5 minutes all the same.
MAX_KILLS = 3
RETRIES = 600  # tries 0.5 s apart


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Client(threading.Thread):
    """Pushes, re-pushes, mounts, deletes and pulls in repositories of its own, recording
    which manifests were answered 201 and not deleted since (`alive`)."""

    def __init__(self, number: int, servers: list[RegistryProcess], seed: int) -> None:
        super().__init__(daemon=True)
        self.number, self.servers = number, servers
        self.random = random.Random(seed)
        self.alive: dict[tuple[str, str], bytes] = {}  # (repository, digest) -> manifest
        self.pushed: dict[tuple[str, str], tuple[bytes, list[bytes]]] = {}  # ever, its blobs
        self.retries = 0
        self.error: BaseException | None = None

    def url(self) -> str:
        return self.random.choice(self.servers).url

    def push_blob(self, http: httpx.Client, name: str, data: bytes) -> None:
        digest = sha256(data)
        if http.head(f"{self.url()}/v2/{name}/blobs/{digest}").status_code == 200:
            return
        source = f"team{(self.number + 1) % CLIENTS}/app"
        mount = http.post(f"{self.url()}/v2/{name}/blobs/uploads/?mount={digest}&from={source}")
        if mount.status_code == 201:
            return
        for _ in range(RETRIES):
            answer = http.post(
                f"{self.url()}/v2/{name}/blobs/uploads/?digest={digest}", content=data
            )
            if answer.status_code == 201:
                return
            assert answer.status_code == 503, answer.text  # being collected: retry
            self.retries += 1
            time.sleep(0.5)
        raise AssertionError(f"upload of {digest} kept failing")

    def image(self, unique: bytes) -> tuple[bytes, list[bytes]]:
        """Blobs of a new image: a config, two shared base layers and a layer of its own."""
        config = json.dumps({"image": unique.decode()}).encode()
        return config, [*self.random.sample(BASES, 2), unique * 50]

    def push_image(
        self, http: httpx.Client, name: str, tag: str, config: bytes, layers: list[bytes]
    ) -> None:
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": sha256(config), "size": len(config)},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                            "digest": sha256(layer), "size": len(layer)} for layer in layers],
            }
        ).encode()  # fmt: skip
        for _ in range(RETRIES):
            for blob in (config, *layers):
                self.push_blob(http, name, blob)
            answer = http.put(
                f"{self.url()}/v2/{name}/manifests/{tag}",
                content=manifest,
                headers={"Content-Type": MANIFEST},
            )
            if answer.status_code == 201:
                self.alive[(name, sha256(manifest))] = manifest
                self.pushed[(name, sha256(manifest))] = (config, layers)
                return
            assert answer.status_code in (400, 503), answer.text  # a blob went: push again
            assert answer.json()["errors"][0]["code"] in ("MANIFEST_BLOB_UNKNOWN", "UNAVAILABLE")
            self.retries += 1
            if answer.status_code == 503:  # being collected: retry
                time.sleep(0.5)
        raise AssertionError(f"push of {name}:{tag} kept failing")

    def run(self) -> None:
        try:
            with httpx.Client(timeout=60) as http:
                for round_ in range(ROUNDS):
                    self.step(http, round_)
                    time.sleep(self.random.uniform(0, 0.3))  # spread over many runs
        except BaseException as error:  # reported by the test
            self.error = error

    def step(self, http: httpx.Client, round_: int) -> None:
        name = f"team{self.number}/{self.random.choice(['app', 'tool'])}"
        action = self.random.random()
        unique = f"client {self.number} round {round_} ".encode()
        if action < 0.5 or not self.alive:
            self.push_image(http, name, f"v{round_ % 4}", *self.image(unique))
        elif action < 0.65:  # push an image again (maybe one deleted meanwhile), as it was
            (repository, _), (config, layers) = self.random.choice(list(self.pushed.items()))
            self.push_image(http, repository, "again", config, layers)
        elif action < 0.85:  # delete a manifest
            (repository, digest) = self.random.choice(list(self.alive))
            answer = http.delete(f"{self.url()}/v2/{repository}/manifests/{digest}")
            assert answer.status_code == 202, answer.text
            del self.alive[(repository, digest)]
        else:  # delete a tag (the manifest stays) and pull something
            http.delete(f"{self.url()}/v2/{name}/manifests/v{round_ % 4}")
            (repository, digest) = self.random.choice(list(self.alive))
            pull(http, self.url(), repository, digest)


def pull(http: httpx.Client, url: str, repository: str, digest: str) -> None:
    """The manifest and every blob it names, each verified against its digest."""
    answer = http.get(f"{url}/v2/{repository}/manifests/{digest}", headers={"Accept": MANIFEST})
    assert answer.status_code == 200, (repository, digest, answer.text)
    assert sha256(answer.content) == digest
    document = answer.json()
    for item in [document["config"], *document["layers"]]:
        blob = http.get(f"{url}/v2/{repository}/blobs/{item['digest']}", follow_redirects=True)
        assert blob.status_code == 200, (repository, item["digest"], blob.text)
        assert sha256(blob.content) == item["digest"]


def gc_process(config: Path, pause_at: str | None = None) -> subprocess.Popen[bytes]:
    """`dockyard gc --json`; with `pause_at`, it stops at that step of its run (see
    collector/cli.py) to be killed there."""
    env = {**os.environ, PAUSE_ENV: pause_at} if pause_at else None
    return subprocess.Popen(
        [sys.executable, "-m", "registry", "gc", "--json", "--config", str(config)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        process_group=0,
    )


def reached_pause(collector: subprocess.Popen[bytes], timeout: float = 120) -> bool:
    """Whether the collector stopped at its pause (False: its run ended first)."""
    assert collector.stderr is not None
    watchdog = threading.Timer(timeout, kill_process_group, [collector])
    watchdog.start()
    try:
        return any(line.startswith(PAUSED.encode()) for line in collector.stderr)
    finally:
        watchdog.cancel()


def expire_what_it_left(storage: dict[str, Any]) -> None:
    """A killed run's lease expires after a minute, its tombs after `stale_tomb_after`,
    by the storage's clock; meanwhile every other run is skipped. On the filesystem that
    clock is the files' times: the test sets them back past both, so the next runs take
    the lease over and the API and the next runs clear the tombs as they would minutes
    later. S3's clock cannot be set back: the test frees the lease (its holder is dead)
    and removes the tombs, as the API would two minutes later (that clearing on S3 is
    tests/collector/test_lease.py's)."""
    if "filesystem" not in storage:
        asyncio.run(_free_lease(_driver(storage), with_tombs=True))
        return
    root = Path(storage["filesystem"]["root"])
    set_back([root / paths.gc_lease(), *root.glob("blobs/*/*/*/tomb-*")], STALE_AFTER + 1)


def stored_blobs(driver: StorageDriver) -> set[str]:
    async def scan() -> set[str]:
        try:
            keys = [info.key for info in await driver.scan("blobs") if info.key.endswith("/data")]
        finally:
            await driver.close()
        return {f"{key.split('/')[1]}:{key.split('/')[3]}" for key in keys}

    return asyncio.run(scan())


@pytest.fixture(params=["filesystem", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "s3":
        seaweedfs: SeaweedFS = request.getfixturevalue("seaweedfs")
        return seaweedfs.storage_config(request.getfixturevalue("s3_bucket"), unique_prefix())
    return {"filesystem": {"root": str(tmp_path / "data")}}


def _driver(storage: dict[str, Any]) -> StorageDriver:
    if "s3" in storage:
        return S3Driver(s3_settings(S3Config(**storage["s3"])))
    return FilesystemDriver(storage["filesystem"]["root"])


def start(servers: list[RegistryProcess]) -> list[RegistryProcess]:
    for server in servers:
        server.start()
    return servers


def clients_on(servers: list[RegistryProcess]) -> list[Client]:
    clients = [Client(n, servers, seed=n) for n in range(CLIENTS)]
    for client in clients:
        client.start()
    return clients


def assert_nothing_broken(
    servers: list[RegistryProcess], storage: dict[str, Any], clients: list[Client]
) -> None:
    """The invariant after the clients finished: every manifest answered 201 and not
    deleted pulls whole; one more run past the grace leaves exactly the blobs they
    reference; the servers, restarted, serve them all."""
    for client in clients:
        client.join()
        assert client.error is None, repr(client.error)
    with httpx.Client(timeout=60) as http:
        for client in clients:
            for repository, digest in client.alive:
                pull(http, servers[0].url, repository, digest)
    # A killed run's last lease frees itself after 60 s; no collector runs now, so the
    # test frees it rather than wait.
    for server in servers:
        server.stop()
    asyncio.run(_free_lease(_driver(storage)))
    time.sleep(GRACE * 1.2 + 1.1)
    out, err = gc_process(servers[0].config_path).communicate(timeout=300)
    assert json.loads(out.splitlines()[-1])["summary"]["skipped"] is None, err.decode()
    referenced = set()
    for client in clients:
        for (_, digest), manifest in client.alive.items():
            document = json.loads(manifest)
            referenced |= {digest, document["config"]["digest"]}
            referenced |= {layer["digest"] for layer in document["layers"]}
    assert stored_blobs(_driver(storage)) == referenced
    for server in start(servers):
        with httpx.Client(timeout=60) as http:
            for client in clients:
                for repository, digest in client.alive:
                    pull(http, server.url, repository, digest)


@pytest.mark.parametrize("kill", [False, True], ids=["clean", "kill-9"])
def test_collectors_in_a_tight_loop_never_break_a_stored_image(
    tmp_path: Path, storage: dict[str, Any], kill: bool
) -> None:
    # In the kill variant only `dockyard gc` processes collect, so that some reach the
    # sweep step they stop at (the servers' own would hold the lease most of the time).
    gc_settings = {"enabled": not kill, "interval": "1s", "grace": f"{GRACE}s"}
    config = {"storage": storage, "gc": gc_settings}
    replicas = 2 if "s3" in storage else 1
    servers = [RegistryProcess(tmp_path / f"r{n}", config, workers=2) for n in range(replicas)]
    try:
        clients = clients_on(start(servers))
        runs, killed, removed = 0, 0, 0
        chooser = random.Random(7)
        while any(client.is_alive() for client in clients):
            # Half the runs in the kill variant, up to MAX_KILLS, stop at a step of their
            # sweep (tombs written; a folder's tombs checked; its blobs deleted) and die.
            chosen = kill and killed < MAX_KILLS and chooser.random() < 0.5
            pause_at = chooser.choice(SWEEP_STEPS) if chosen else None
            collector = gc_process(servers[0].config_path, pause_at)
            if pause_at is not None and reached_pause(collector):
                kill_process_group(collector)
                collector.wait()
                expire_what_it_left(storage)
                killed += 1
            else:
                out, err = collector.communicate(timeout=120)
                assert collector.returncode in (0, 3), err.decode()
                summary = json.loads(out.splitlines()[-1])["summary"]
                removed += summary["blobs"] + summary["links"] + summary["repositories"]
            runs += 1
        assert killed >= 1 or not kill, "no run reached a sweep step to be killed at"
        assert_nothing_broken(servers, storage, clients)
        assert cached_manifests() > 0  # the runs after the first read few manifests
        retried = sum(client.retries for client in clients)
        print(f"{runs} gc runs ({killed} killed mid-sweep), {removed} removed, {retried} retries")
    finally:
        for server in servers:
            server.stop()


def cached_manifests() -> int:
    """Manifests the runs keep in their local cache (collector/known_references.py): runs
    that found them there did not read them, and the invariant held all the same."""
    path = default_cache_dir() / FILE_NAME
    with contextlib.closing(sqlite3.connect(path)) as cache:
        return cache.execute("SELECT count(*) FROM manifests").fetchone()[0]


LOGGED_RUN = re.compile(r"gc run (\w+)(?: started|: removed )")


def logged_runs(servers: list[RegistryProcess]) -> list[tuple[float, float, str]]:
    """(start, end, who) of every collection the servers' JSON logs show, by start; a
    run still going has no end yet (infinity)."""
    seen: dict[str, dict[str, float]] = {}
    for server in servers:
        assert "garbage collection failed" not in server.log()
        for line in server.log().splitlines():
            entry = json.loads(line) if line.startswith("{") else {}
            if entry.get("logger") != "dockyard.gc":
                continue
            found = LOGGED_RUN.match(entry["message"])
            if found is None:
                continue
            stamp = datetime.fromisoformat(entry["time"]).timestamp()
            phase = "start" if entry["message"].endswith(" started") else "end"
            seen.setdefault(found[1], {})[phase] = stamp
    return sorted((run["start"], run.get("end", math.inf), who) for who, run in seen.items())


def test_two_replicas_each_with_a_collector_run_one_at_a_time(
    tmp_path: Path, storage: dict[str, Any]
) -> None:
    """Two 2-worker replicas on one storage, each worker with its own collector every
    second and nothing else collecting: the runs the logs show never overlap (each logs
    its start after taking the lease and its end before letting it go), and the
    invariant holds. The runs work without rests (`background_share: 1`), so the four
    collectors try for the lease while one holds it far more often than paced runs,
    which rest nine tenths of each run (up to two minutes on S3), would."""
    config = {
        "storage": storage,
        "gc": {"enabled": True, "interval": "1s", "grace": f"{GRACE}s", "background_share": 1},
        "log": {"format": "json"},
    }
    servers = [RegistryProcess(tmp_path / f"r{n}", config, workers=2) for n in range(2)]
    try:
        clients = clients_on(start(servers))
        for client in clients:
            client.join()
        # The collectors run at the lowest CPU priority (collector/niced.py): on a busy
        # machine few may have run while the clients pushed, so wait for five (bounded).
        deadline = time.monotonic() + 300
        while len(runs := logged_runs(servers)) < 5 and time.monotonic() < deadline:
            time.sleep(1)
        assert len(runs) >= 5, runs
        for (_, end, before), (start_, _, after) in itertools.pairwise(runs):
            assert start_ >= end, f"run {after} started before {before} ended"
        assert_nothing_broken(servers, storage, clients)
    finally:
        for server in servers:
            server.stop()


async def _free_lease(driver: StorageDriver, with_tombs: bool = False) -> None:
    """Delete the collector's lease (its holder is dead) and, `with_tombs`, every tomb."""
    try:
        keys = [paths.gc_lease()]
        if with_tombs:
            keys += [info.key for info in await driver.scan("blobs") if "/tomb-" in info.key]
        await driver.delete_many(keys)
    finally:
        await driver.close()
