"""The pull-through cache figures: docker pulls through a Dockyard that caches the
reference registry (`proxy.upstreams`), against pulls straight from that registry.
Recorded as "dockyard" (through the cache) and "reference" (direct)."""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from bench import images
from bench.auth import Credentials
from bench.figures import Sizes, timed
from bench.servers import Server
from tests.support.dockerd import DockerDaemon
from tests.support.server import RegistryProcess

PREFIX = "upstream"
_BLOB_GET = re.compile(r'"GET /v2/bench/proxied/blobs/(sha256:[0-9a-f]{64}) HTTP/[0-9.]+" 200 ')

Record = Callable[[str, str, float], None]


class ProxyFigures:
    def __init__(
        self, workdir: Path, reference: Server, sizes: Sizes, credentials: Credentials | None
    ) -> None:
        self.workdir = workdir
        self.reference = reference
        self.sizes = sizes
        upstream = {"prefix": PREFIX, "url": reference.url}
        if credentials is not None:  # the cache itself has no auth
            upstream |= {"username": credentials.user, "password": credentials.password}
        self.cache = RegistryProcess(
            workdir / "cache", {"proxy": {"upstreams": [upstream]}}, workers=os.cpu_count() or 1
        ).start()
        self.notes: list[str] = []

    def stop(self) -> None:
        self.cache.stop()

    def _image(self, dockerd: DockerDaemon, tag: str) -> tuple[str, str]:
        """A fresh random image pushed to the reference registry only; returns its names
        there and through the cache (both absent from the daemon)."""
        source = f"bench/proxied:{tag}"
        sizes = self.sizes
        images.build_random_image(
            dockerd, source, self.workdir / "ctx", sizes.image_layers, sizes.image_layer_bytes
        )
        direct = f"{self.reference.host}/bench/proxied:{tag}"
        dockerd.run("tag", source, direct)
        dockerd.run("push", direct)
        images.remove_images(dockerd, [source, direct])
        return direct, f"{self.cache.host}/{PREFIX}/bench/proxied:{tag}"

    def round(self, round_: int, dockerd: DockerDaemon, record: Record) -> None:
        direct, through = self._image(dockerd, f"r{round_}")
        pulls = {"reference": direct, "dockyard": through}
        order = ["dockyard", "reference"] if round_ % 2 == 0 else ["reference", "dockyard"]
        for key in ("proxy_cold", "proxy_warm"):  # the first pull through the cache fills it
            for label in order:
                record(key, label, timed(lambda: dockerd.run("pull", pulls[label])))  # noqa: B023
                images.remove_images(dockerd, [pulls[label]])
        direct, through = self._image(dockerd, f"c{round_}")
        pulls = {"reference": direct, "dockyard": through}
        logged = self.reference.log_path.read_text(errors="replace")
        for label in order:
            commands = [["pull", pulls[label]]] * self.sizes.concurrency
            record("proxy_pulls", label, timed(lambda: images.run_all(dockerd, commands)))  # noqa: B023
            images.remove_images(dockerd, [pulls[label]])
            if label == "dockyard":
                log = self.reference.log_path.read_text(errors="replace")[len(logged) :]
                fetched = Counter(_BLOB_GET.findall(log))
                self.notes.append(
                    f"round {round_ + 1}: {self.sizes.concurrency} concurrent cold pulls through "
                    f"the cache ({self.cache.workers} workers) fetched each of "
                    f"{len(fetched)} blobs from the upstream at most "
                    f"{max(fetched.values(), default=0)} time(s)"
                )
            logged = self.reference.log_path.read_text(errors="replace")
