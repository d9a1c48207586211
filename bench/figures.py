"""What is measured: each figure, how, and the target its ratio is held to."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.client import MANIFEST_ACCEPT, RegistryClient, image_manifest

MiB = 1 << 20
MB = 1e6


@dataclass(frozen=True)
class Sizes:
    blob: int
    chunk: int
    range_tail: int
    wrk_seconds: int
    repositories: int
    tags: int
    image_layers: int
    image_layer_bytes: int
    concurrency: int
    push_layer_bytes: int
    rounds: int


# An even number of rounds: each server goes first as often as second.
FULL = Sizes(512 * MiB, 16 * MiB, 64 * MiB, 10, 1000, 1000, 5, 40 * MiB, 20, 5 * MiB, 4)
QUICK = Sizes(64 * MiB, 16 * MiB, 16 * MiB, 2, 100, 100, 5, 4 * MiB, 4, 1 * MiB, 1)


@dataclass(frozen=True)
class Figure:
    key: str
    title: str
    unit: str
    higher_is_better: bool


FIGURES = [
    Figure("upload", "monolithic upload (POST + PUT)", "MB/s", True),
    Figure("chunked", "chunked upload, 16 MiB PATCHes", "MB/s", True),
    Figure("download", "blob download (Python client)", "MB/s", True),
    Figure("fresh", "blob download with curl right after its upload", "MB/s", True),
    Figure("downloads", "20 concurrent downloads of one blob (curl), in all", "MB/s", True),
    Figure("range", "Range download of the last 64 MiB", "MB/s", True),
    Figure("manifest_rps", "manifest GET by tag, 64 connections (wrk)", "req/s", True),
    Figure("head_rps", "HEAD blob, 64 connections (hey)", "req/s", True),
    Figure("tags_rps", "tag list (1,000 tags), 64 connections", "req/s", True),
    Figure("catalog_rps", "_catalog (1,000 repositories), 64 connections", "req/s", True),
    Figure("push", "docker push, ~200 MB in 5 layers", "s", False),
    Figure("pull", "docker pull, ~200 MB in 5 layers", "s", False),
    Figure("pulls", "20 concurrent docker pulls of one image", "s", False),
    Figure("pushes", "20 concurrent docker pushes of different images", "s", False),
    Figure("proxy_cold", "docker pull through the cache, cold (vs direct)", "s", False),
    Figure("proxy_warm", "docker pull through the cache, warm (vs direct)", "s", False),
    Figure("proxy_pulls", "20 concurrent cold pulls through the cache", "s", False),
]

# The targets, all in one place: the ratio Dockyard/reference each figure must reach
# (>= where higher is better, else <=), by storage variant (issue 15). Figures a
# variant does not name here have no target there.
_EVERYWHERE = {
    "upload": 1.0, "chunked": 1.0, "download": 1.0, "fresh": 1.0, "downloads": 1.0,
    "range": 1.0, "catalog_rps": 5.0, "push": 1.0, "pull": 1.0, "pulls": 1.0, "pushes": 1.0,
    "proxy_cold": 1.1, "proxy_warm": 1.0, "proxy_pulls": 1.2,
}  # fmt: skip
_ON_DISK = {**_EVERYWHERE, "manifest_rps": 8.0, "head_rps": 8.0, "tags_rps": 8.0}
_ON_S3 = {**_EVERYWHERE, "manifest_rps": 3.0, "head_rps": 3.0, "tags_rps": 3.0}
TARGETS: dict[str, dict[str, float]] = {
    "filesystem": _ON_DISK,
    "auth": _ON_DISK,  # the filesystem, basic auth on both servers
    "s3": _ON_S3,  # its blob download streams through Dockyard: >= 1.0x as everywhere
    "s3-redirect": _ON_S3,
}
RSS_PER_WORKER_TARGET_MB = 100  # peak resident memory of the largest Dockyard process


def target(figure: Figure, variant: str) -> float | None:
    return TARGETS.get(variant, {}).get(figure.key)


def curl_download_rate(
    url: str, expected: int, count: int = 1, authorization: str | None = None
) -> float:
    """MB/s of `count` simultaneous curl downloads of `url`, in all (curl: a client that
    keeps up with either server, where Python's own tops out near 1 GB/s). Follows a
    redirect to storage; curl sends no Authorization header to another host."""
    command = ["curl", "-sS", "-L", "-o", "/dev/null", "-w", "%{http_code} %{size_download}"]
    command[-1] += " %{time_total}"  # from curl's start: no process start-up counted
    if authorization:
        command += ["-H", f"Authorization: {authorization}"]
    downloads = [
        subprocess.Popen([*command, url], stdout=subprocess.PIPE, text=True) for _ in range(count)
    ]
    answers = [download.communicate()[0].split() for download in downloads]
    if any(answer[:2] != ["200", str(expected)] for answer in answers):
        raise RuntimeError(f"curl {url}: {answers[:3]} (status, bytes, s), not 200 {expected}")
    return expected * count / MB / max(float(answer[2]) for answer in answers)


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


class BlobData:
    """Random bytes in memory; each upload changes a counter at the front so every
    upload is a new blob to the server."""

    def __init__(self, size: int) -> None:
        self.data = bytearray(os.urandom(size))
        self.view = memoryview(self.data)
        self._counter = 0

    def fresh(self) -> str:
        self._counter += 1
        self.data[:8] = self._counter.to_bytes(8, "big")
        return "sha256:" + hashlib.sha256(self.view).hexdigest()


class ListingFixture:
    """Small image, 1,000 tags in one repository, 1,000 repositories: built once per server."""

    SMALL = "bench/small"
    TAGS = "bench/tags"

    def __init__(self, host: str, sizes: Sizes, authorization: str | None = None) -> None:
        self.host = host
        self.authorization = authorization
        config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers"}}'
        layer = os.urandom(2048)
        client = RegistryClient(host, authorization)
        self.config_digest = client.push_small_blob(self.SMALL, config)
        self.layer_digest = client.push_small_blob(self.SMALL, layer)
        self.manifest = image_manifest(config, layer)
        client.put_manifest(self.SMALL, "latest", self.manifest)
        # Mounted before the parallel tag pushes: the reference writes a link in place,
        # so a mount racing a manifest PUT of the same repository can fail there.
        client.mount(self.TAGS, self.config_digest, self.SMALL)
        client.mount(self.TAGS, self.layer_digest, self.SMALL)
        client.close()
        self._parallel(
            [(self.TAGS, f"t{i:04d}") for i in range(sizes.tags)]
            + [(f"bench/repo-{i:04d}", "latest") for i in range(sizes.repositories)]
        )

    def _parallel(self, targets: list[tuple[str, str]], threads: int = 8) -> None:
        def work(share: list[tuple[str, str]]) -> None:
            client = RegistryClient(self.host, self.authorization)
            mounted = {self.TAGS}
            for name, tag in share:
                if name not in mounted:
                    client.mount(name, self.config_digest, self.SMALL)
                    client.mount(name, self.layer_digest, self.SMALL)
                    mounted.add(name)
                client.put_manifest(name, tag, self.manifest)
            client.close()

        with ThreadPoolExecutor(threads) as pool:
            for future in [pool.submit(work, targets[i::threads]) for i in range(threads)]:
                future.result()

    def urls(self, url: str) -> dict[str, tuple[str, str]]:
        """wrk target per figure: (URL, Lua script)."""
        auth = (
            f'wrk.headers["Authorization"] = "{self.authorization}"\n' if self.authorization else ""
        )
        accept = f'wrk.headers["Accept"] = "{MANIFEST_ACCEPT}"'
        return {
            "manifest_rps": (f"{url}/v2/{self.SMALL}/manifests/latest", auth + accept),
            "head_rps": (f"{url}/v2/{self.SMALL}/blobs/{self.layer_digest}", HEAD),
            "tags_rps": (f"{url}/v2/{self.TAGS}/tags/list", auth),
            "catalog_rps": (f"{url}/v2/_catalog?n=1000", auth),
        }


HEAD = "HEAD"  # wrk 4.1 waits for a body after a HEAD answer: hey sends those instead
_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")
_ERRORS = re.compile(r"Non-2xx or 3xx responses: \d+|Error distribution:")
_HEY_STATUS = re.compile(r"\[(\d{3})\]\s+\d+ responses")


def request_rate(
    url: str, script: str, seconds: int, workdir: Path, authorization: str | None = None
) -> float:
    """Requests per second over `seconds` with 64 connections; refuses error answers."""
    if script == HEAD:
        command = ["hey", "-z", f"{seconds}s", "-c", "64", "-m", "HEAD", url]
        if authorization:
            command[1:1] = ["-H", f"Authorization: {authorization}"]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        statuses = set(_HEY_STATUS.findall(output))
        if statuses != {"200"} or _ERRORS.search(output):
            raise RuntimeError(f"hey {url}: answers {sorted(statuses)}\n{output[-500:]}")
        return _rate(output)
    script_path = workdir / f"wrk-{abs(hash(script))}.lua"
    script_path.write_text(script + "\n")
    # A slow answer counts (wrk's default timeout of 2 s would drop it unseen).
    command = ["wrk", "-t2", "-c64", f"-d{seconds}s", f"--timeout={seconds}s"]
    command += ["-s", str(script_path), url]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    if errors := _ERRORS.findall(output):
        raise RuntimeError(f"wrk {url}: {'; '.join(errors)}")
    return _rate(output)


class NoAnswerError(RuntimeError):
    """Not one request answered in the whole measurement."""


def _rate(output: str) -> float:
    match = _RATE.search(output)
    if not match:
        raise RuntimeError(f"no request rate measured:\n{output[-1000:]}")
    if float(match[1]) == 0:
        raise NoAnswerError(f"no request answered:\n{output[-1000:]}")
    return float(match[1])
