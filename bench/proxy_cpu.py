"""Where a cold pull through the cache spends its CPU: `python -m bench.proxy_cpu [PULLS]`.

No docker: a ~200 MB image of 5 random layers is pushed to the reference registry,
then pulled as docker does (the manifest, the config, the layers 3 at a time) through a
one-worker cache, cold then warm, and straight from the reference. Prints each pull's
timeline (when each layer's first and last bytes came) and the CPU seconds of the
cache's event-loop thread and of its other threads (hashing, disk writes) per pull:
CPU time, unlike wall time, holds on a loaded machine. For the profile in
bench/RESULTS-proxy.md."""

from __future__ import annotations

import concurrent.futures
import hashlib
import http.client
import json
import os
import shutil
import sys
import time
from pathlib import Path

import psutil

from bench.servers import ReferenceRegistry
from tests.support.server import RegistryProcess

WORKDIR = Path(__file__).resolve().parent / "work" / "proxy_cpu"
LAYERS, LAYER_BYTES = 5, 40 << 20
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
CONFIG = "application/vnd.docker.container.image.v1+json"


def _connection(host: str) -> http.client.HTTPConnection:
    address, port = host.split(":")
    return http.client.HTTPConnection(address, int(port), timeout=120)


def _request(host: str, method: str, path: str, body: bytes | None = None) -> bytes:
    connection = _connection(host)
    headers = {"Accept": MANIFEST, "Content-Type": MANIFEST if "manifests" in path else ""}
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    data = response.read()
    assert response.status < 300, (response.status, data[:200])
    location = response.getheader("Location") or ""
    connection.close()
    return location.encode() if method == "POST" else data


def _push_blob(host: str, name: str, data: bytes) -> dict[str, object]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    location = _request(host, "POST", f"/v2/{name}/blobs/uploads/").decode()
    _request(host, "PUT", f"{location}{'&' if '?' in location else '?'}digest={digest}", data)
    return {"size": len(data), "digest": digest}


def push_image(host: str, name: str, tag: str) -> None:
    layers = [
        {"mediaType": LAYER, **_push_blob(host, name, os.urandom(LAYER_BYTES))}
        for _ in range(LAYERS)
    ]
    config = {"mediaType": CONFIG, **_push_blob(host, name, os.urandom(64).hex().encode())}
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST, "config": config, "layers": layers}
    _request(host, "PUT", f"/v2/{name}/manifests/{tag}", json.dumps(manifest).encode())


def _download(host: str, name: str, digest: str, start: float) -> tuple[float, float]:
    connection = _connection(host)
    connection.request("GET", f"/v2/{name}/blobs/{digest}")
    response = connection.getresponse()
    buffer, first = bytearray(1 << 20), None
    while response.readinto(buffer):
        first = first or time.monotonic() - start
    connection.close()
    return first or 0.0, time.monotonic() - start


def pull(host: str, name: str, tag: str) -> str:
    """Pull as docker does; returns the timeline: [first-last byte] of each layer."""
    start = time.monotonic()
    manifest = json.loads(_request(host, "GET", f"/v2/{name}/manifests/{tag}"))
    _download(host, name, manifest["config"]["digest"], start)
    digests = [layer["digest"] for layer in manifest["layers"]]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        spans = list(pool.map(lambda digest: _download(host, name, digest, start), digests))
    layers = " ".join(f"[{first:.2f}-{last:.2f}]" for first, last in spans)
    return f"total {time.monotonic() - start:.2f} s, layers {layers}"


def _thread_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of the processes' main threads and of their other threads (those
    that ended too: the process's total counts them)."""
    main = others = 0.0
    for process in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        times = process.cpu_times()
        total = times.user + times.system
        for thread in process.threads():
            if thread.id == process.pid:
                main += thread.user_time + thread.system_time
                others += total - (thread.user_time + thread.system_time)
    return main, others


def main(pulls: int) -> None:
    shutil.rmtree(WORKDIR, ignore_errors=True)
    reference = ReferenceRegistry(WORKDIR / "reference").start()
    try:
        for index in range(pulls):
            push_image(reference.host, "bench/image", str(index))
        upstream = {"prefix": "up", "url": reference.url}
        with RegistryProcess(WORKDIR / "cache", {"proxy": {"upstreams": [upstream]}}) as cache:
            print(f"load average {os.getloadavg()[0]:.1f}")
            for label in ("cold", "warm"):
                before = _thread_cpu(cache.process.pid)  # type: ignore[union-attr]
                for index in range(pulls):
                    print(label, pull(cache.host, "up/bench/image", str(index)))
                after = _thread_cpu(cache.process.pid)  # type: ignore[union-attr]
                loop, others = ((b - a) / pulls for a, b in zip(before, after, strict=True))
                print(f"{label}: cache CPU per pull {loop:.3f} s event loop, {others:.3f} s other")
            for index in range(pulls):
                print("direct", pull(reference.host, "bench/image", str(index)))
    finally:
        reference.stop()
        shutil.rmtree(WORKDIR, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
