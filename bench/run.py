"""The benchmark run: both servers, every figure, alternately A/B, round after round."""

from __future__ import annotations

import argparse
import os
import shutil
import time
from collections import defaultdict
from pathlib import Path

from bench import auth, costs, figures, gc, images, report, ui
from bench.arguments import COMPARED, chosen_groups, results_files
from bench.auth import Credentials
from bench.client import RegistryClient
from bench.figures import (
    BlobData,
    ListingFixture,
    NoAnswerError,
    Sizes,
    curl_download_rate,
    request_rate,
    timed,
)
from bench.proxy import ProxyFigures
from bench.s3 import SharedS3
from bench.servers import (
    PeakMemory,
    ReferenceRegistry,
    Server,
    report_if_died,
    report_problems,
    start_dockyard,
)
from tests.support.dockerd import DockerDaemon, DockerUnavailableError

WORKDIR = Path(__file__).resolve().parent / "work"
UPLOADS = "bench/upload"

Results = dict[str, dict[str, list[float]]]


class Bench:
    def __init__(self, sizes: Sizes, workdir: Path, credentials: Credentials | None) -> None:
        self.sizes = sizes
        self.credentials = credentials
        self.authorization = credentials.header if credentials else None
        self.workdir = workdir
        self.results: Results = defaultdict(lambda: defaultdict(list))
        self.servers: dict[str, Server] = {}
        self.fixtures: dict[str, ListingFixture] = {}
        self.last_blob: dict[str, str] = {}
        self.notes: list[str] = []

    def order(self, round_: int) -> list[str]:
        labels = ["dockyard", "reference"]
        return labels if round_ % 2 == 0 else labels[::-1]

    def record(self, key: str, label: str, value: float) -> None:
        self.results[key][label].append(value)
        print(f"  {key:13} {label:9} {value:12.1f}", flush=True)

    # --- blobs ---------------------------------------------------------------------------

    def blob_round(self, round_: int, blob: BlobData) -> None:
        sizes, megabytes = self.sizes, self.sizes.blob / 1e6
        for key in ("upload", "chunked"):
            for label in self.order(round_):
                client = RegistryClient(self.servers[label].host, self.authorization)
                digest = blob.fresh()
                if key == "upload":
                    seconds = timed(lambda: client.upload_monolithic(UPLOADS, blob.view, digest))  # noqa: B023
                else:
                    seconds = timed(
                        lambda: client.upload_chunked(UPLOADS, blob.view, digest, sizes.chunk)  # noqa: B023
                    )
                client.close()
                self.last_blob[label] = digest
                self.record(key, label, megabytes / seconds)
        tail = f"{sizes.blob - sizes.range_tail}-{sizes.blob - 1}"
        for key, byte_range, expected in (
            ("download", None, sizes.blob),
            ("range", tail, sizes.range_tail),
        ):
            for label in self.order(round_):
                client = RegistryClient(self.servers[label].host, self.authorization)
                received = 0

                def fetch(c: RegistryClient = client, r: str | None = byte_range) -> None:
                    nonlocal received
                    received = c.download(UPLOADS, self.last_blob[label], r)  # noqa: B023

                seconds = timed(fetch)
                client.close()
                if received != expected:
                    raise RuntimeError(f"{label} sent {received} bytes, not {expected}")
                self.record(key, label, expected / 1e6 / seconds)
        fresh = {}
        for label in self.order(round_):  # uploaded, then at once downloaded
            client = RegistryClient(self.servers[label].host, self.authorization)
            fresh[label] = blob.fresh()
            client.upload_monolithic(UPLOADS, blob.view, fresh[label])
            client.close()
            url = f"{self.servers[label].url}/v2/{UPLOADS}/blobs/{fresh[label]}"
            self.record("fresh", label, curl_download_rate(url, sizes.blob, 1, self.authorization))
        for label in self.order(round_):
            url = f"{self.servers[label].url}/v2/{UPLOADS}/blobs/{fresh[label]}"
            rate = curl_download_rate(url, sizes.blob, sizes.concurrency, self.authorization)
            self.record("downloads", label, rate)

    # --- request rates -------------------------------------------------------------------

    def rate_round(self, round_: int) -> None:
        for key in ("manifest_rps", "head_rps", "tags_rps", "catalog_rps"):
            for label in self.order(round_):
                server = self.servers[label]
                url, script = self.fixtures[label].urls(server.url)[key]
                try:
                    rate = request_rate(
                        url, script, self.sizes.wrk_seconds, self.workdir, self.authorization
                    )
                except NoAnswerError:
                    self.notes.append(
                        f"round {round_ + 1}: {label} answered no {key} request within "
                        f"{self.sizes.wrk_seconds} s (64 connections): not recorded"
                    )
                    continue
                self.record(key, label, rate)

    # --- docker --------------------------------------------------------------------------

    def docker_login(self, dockerd: DockerDaemon) -> None:
        if self.credentials is None:
            return
        for server in self.servers.values():
            dockerd.run(
                "login", "-u", self.credentials.user, "--password-stdin", server.host,
                input=self.credentials.password.encode(),
            )  # fmt: skip

    def docker_round(self, round_: int, dockerd: DockerDaemon) -> None:
        sizes = self.sizes
        source = f"bench/app:r{round_}"
        images.build_random_image(
            dockerd, source, self.workdir / "ctx", sizes.image_layers, sizes.image_layer_bytes
        )
        tags = {
            label: f"{server.host}/bench/app:r{round_}" for label, server in self.servers.items()
        }
        for label in self.order(round_):
            dockerd.run("tag", source, tags[label])
            self.record("push", label, timed(lambda: dockerd.run("push", tags[label])))  # noqa: B023
        images.remove_images(dockerd, [source, *tags.values()])
        for label in self.order(round_):
            self.record("pull", label, timed(lambda: dockerd.run("pull", tags[label])))  # noqa: B023
            images.remove_images(dockerd, [tags[label]])
        for label in self.order(round_):
            commands = [["pull", tags[label]]] * sizes.concurrency
            self.record("pulls", label, timed(lambda: images.run_all(dockerd, commands)))  # noqa: B023
            images.remove_images(dockerd, [tags[label]])
        sources = [f"bench/many{i}:r{round_}" for i in range(sizes.concurrency)]
        images.build_many(dockerd, sources, self.workdir, 2, sizes.push_layer_bytes)
        for label in self.order(round_):
            host = self.servers[label].host
            targets = [f"{host}/{source}" for source in sources]
            for source, target in zip(sources, targets, strict=True):
                dockerd.run("tag", source, target)
            commands = [["push", target] for target in targets]
            self.record("pushes", label, timed(lambda: images.run_all(dockerd, commands)))  # noqa: B023
            images.remove_images(dockerd, targets)
        images.remove_images(dockerd, sources)


def main(args: argparse.Namespace) -> int:
    groups = chosen_groups(args)
    sizes = figures.QUICK if args.quick else figures.FULL
    if args.rounds:
        sizes = Sizes(**{**sizes.__dict__, "rounds": args.rounds})
    table_path, results_path = results_files(args, Path(__file__).parent)
    if groups & set(COMPARED):
        compare(args, groups, sizes, table_path)
    if "ui" in groups:  # in process, on the filesystem, or SeaweedFS for the S3 variants
        requests, s3 = 10 if args.quick else 50, args.variant.startswith("s3")
        write(results_path, "ui", ui.run(WORKDIR / "ui", requests, s3))
    if "gc" in groups:  # on the filesystem and SeaweedFS, whatever the variant
        data = gc.GcData(args.gc_blobs) if args.gc_blobs else gc.QUICK if args.quick else gc.FULL
        shutil.rmtree(WORKDIR, ignore_errors=True)
        try:
            text = gc.run(data, WORKDIR / "gc", sizes.rounds, sizes.wrk_seconds)
        finally:
            shutil.rmtree(WORKDIR, ignore_errors=True)
        write(results_path, "gc", text)
    if "costs" in groups:
        if args.variant != "filesystem":
            print(f"bench: costs are measured on the filesystem only, not {args.variant}")
            return 0
        shutil.rmtree(WORKDIR, ignore_errors=True)
        try:
            write(results_path, "costs", costs.run(sizes, WORKDIR))
        finally:
            shutil.rmtree(WORKDIR, ignore_errors=True)
    return 0


def write(results_path: Path | None, section: str, text: str) -> None:
    """Into its section of the results file (the other sections stay), or to the screen."""
    if results_path is not None:
        report.write_section(results_path, section, text)
    else:
        print(text)


def compare(
    args: argparse.Namespace, groups: set[str], sizes: Sizes, results_path: Path | None
) -> None:
    """Dockyard against the reference registry: the figures of `groups`."""
    credentials = None
    if args.variant == "auth":
        if reason := auth.unsupported_reason():
            print(f"bench: variant auth skipped: {reason}")
            return
        credentials = Credentials()

    shutil.rmtree(WORKDIR, ignore_errors=True)
    WORKDIR.mkdir(parents=True)
    bench = Bench(sizes, WORKDIR, credentials)
    htpasswd = credentials.write_htpasswd(WORKDIR / "htpasswd") if credentials else None
    started = time.time()
    load_before = os.getloadavg()
    dockerd: DockerDaemon | None = None
    proxy: ProxyFigures | None = None
    shared_s3: SharedS3 | None = None
    bound = report.upload_bound(WORKDIR)
    try:
        if args.variant in ("s3", "s3-redirect"):
            shared_s3 = SharedS3.start(WORKDIR / "seaweedfs", args.variant == "s3-redirect")
            bench.notes += shared_s3.notes
        dockyard_storage = shared_s3.dockyard if shared_s3 else None
        reference_storage = shared_s3.reference if shared_s3 else None
        bench.servers["dockyard"] = start_dockyard(WORKDIR / "dockyard", htpasswd, dockyard_storage)
        bench.servers["reference"] = ReferenceRegistry(
            WORKDIR / "reference", htpasswd, reference_storage
        ).start()
        print("bench: servers up; preparing listings", flush=True)
        for label, server in bench.servers.items():
            bench.fixtures[label] = ListingFixture(server.host, sizes, bench.authorization)
        bench.notes += report.check_listings(bench.servers, bench.authorization)
        if credentials:
            bench.notes.append("basic auth on both servers, one bcrypt htpasswd file")
        if left_out := [group for group in COMPARED if group not in groups]:
            bench.notes.append(f"figures left out: {', '.join(left_out)} (--only)")
        if groups & {"docker", "proxy"}:
            try:
                dockerd = DockerDaemon(WORKDIR / "dockerd").start()
                bench.docker_login(dockerd)
            except DockerUnavailableError as error:
                bench.notes.append(f"docker figures left out: {error}")
        if "proxy" in groups:
            reference = bench.servers["reference"]
            proxy = ProxyFigures(WORKDIR / "proxy", reference, sizes, credentials)
        blob = BlobData(sizes.blob) if "blobs" in groups else None
        with PeakMemory(bench.servers) as memory:
            if blob is not None:
                bench.blob_round(0, blob)  # warm-up, not recorded
                bench.results.clear()
            for round_ in range(sizes.rounds):
                print(f"bench: round {round_ + 1}/{sizes.rounds}", flush=True)
                if blob is not None:
                    bench.blob_round(round_, blob)
                if "rates" in groups:
                    bench.rate_round(round_)
                if dockerd is not None and "docker" in groups:
                    bench.docker_round(round_, dockerd)
                if dockerd is not None and proxy is not None:
                    proxy.round(round_, dockerd, bench.record)
        environment = report.environment(load_before, bound)
    except BaseException:
        for label, server in bench.servers.items():
            report_problems(label, server)
        raise
    finally:
        if proxy is not None:
            proxy.stop()
            bench.notes += proxy.notes
        if dockerd is not None:
            dockerd.stop()
        for label, server in bench.servers.items():
            report_if_died(label, server)
            server.stop()
        if shared_s3 is not None:
            shared_s3.stop()
        shutil.rmtree(WORKDIR, ignore_errors=True)  # gigabytes of blobs and images
    elapsed = time.time() - started
    busiest = max(load_before[0], os.getloadavg()[0])
    if busiest > (os.cpu_count() or 1) / 2:
        bench.notes.append(
            f"taken on a shared, busy machine (load average up to {busiest:.1f} on "
            f"{os.cpu_count()} CPUs): absolute figures are noisy, the A/B alternation keeps "
            "the ratios meaningful"
        )
    table = report.render(
        bench.results, memory, environment, bench.notes, sizes, elapsed, args.variant
    )
    write(results_path, "comparison", table)
    print(report.summary_line(bench.results, memory))
