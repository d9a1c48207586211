"""The pull-through cache with real clients and real upstreams on loopback: the
reference registry (anonymous) and a Dockyard in token mode, each holding images the
test pushed; docker (by prefix, and as dockerd's registry mirror), skopeo."""

from __future__ import annotations

import concurrent.futures
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.servers import ReferenceRegistry
from tests.e2e.test_docker import pushed_digest
from tests.e2e.test_skopeo import layout_digest, referenced_digests, skopeo
from tests.support.auth import write_users
from tests.support.containerd import Containerd, ContainerdUnavailableError
from tests.support.dockerd import DockerDaemon
from tests.support.required import require_tool, unavailable
from tests.support.server import RegistryProcess

pytestmark = pytest.mark.e2e

MIRROR_USER, MIRROR_PASSWORD = "mirror", "mirror-Secret-1"
ACCEPT = "application/vnd.docker.distribution.manifest.v2+json"


IMAGES = ["dockyard-proxy-test:1", "dockyard-proxy-test:2"]


@pytest.fixture(scope="module")
def archive(dockerd: DockerDaemon, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two different images (busybox FROM scratch) saved, and removed from the daemon."""
    workdir = tmp_path_factory.mktemp("images")
    for tag in IMAGES:
        dockerd.build_image(tag, workdir / tag.replace(":", "-"))
    dockerd.run("save", "--output", str(workdir / "images.tar"), *IMAGES)
    dockerd.run("rmi", *IMAGES)
    return workdir / "images.tar"


@pytest.fixture
def images(dockerd: DockerDaemon, archive: Path) -> Iterator[list[str]]:
    """The two images, loaded into the daemon for the test to push."""
    dockerd.run("load", "--input", str(archive))
    yield IMAGES
    dockerd.run("rmi", "--force", *IMAGES, check=False)


def forget_images(dockerd: DockerDaemon) -> None:
    """Remove the images from the daemon, so that pulls download every layer."""
    dockerd.run("rmi", "--force", *IMAGES)


@pytest.fixture
def reference(tmp_path: Path) -> Iterator[ReferenceRegistry]:
    require_tool("docker-registry")
    server = ReferenceRegistry(tmp_path / "reference").start()
    yield server
    server.stop()


@pytest.fixture
def local_tags(dockerd: DockerDaemon) -> Iterator[list[str]]:
    tags: list[str] = []
    yield tags
    dockerd.run("rmi", "--force", *tags, check=False)


@pytest.fixture
def published(
    dockerd: DockerDaemon, images: list[str], reference: ReferenceRegistry, local_tags: list[str]
) -> str:
    """The first image pushed to the reference registry as team/app:1; its digest."""
    return push(dockerd, images[0], f"{reference.host}/team/app:1", local_tags)


def push(dockerd: DockerDaemon, image: str, destination: str, local_tags: list[str]) -> str:
    """Push a local image to `destination` (host/name:tag); returns its digest."""
    local_tags.append(destination)
    dockerd.run("tag", image, destination)
    digest = pushed_digest(dockerd.run("push", destination).stdout)
    dockerd.run("rmi", destination)
    return digest


def docker_pull(dockerd: DockerDaemon, reference: str, local_tags: list[str]) -> str:
    """Pull `reference`; returns the digest docker reports."""
    local_tags.append(reference)
    output = dockerd.run("pull", reference).stdout
    match = re.search(r"Digest: (sha256:[0-9a-f]{64})", output)
    assert match, output
    assert ": Pull complete" in output, output  # layers came through the cache
    dockerd.run("rmi", reference)
    return match[1]


def start_cache(workdir: Path, *upstreams: dict[str, Any], workers: int = 2) -> RegistryProcess:
    return RegistryProcess(workdir, {"proxy": {"upstreams": list(upstreams)}}, workers).start()


def blob_path(root: Path, digest: str) -> Path:
    """Where a blob lies on disk under a Dockyard or reference registry storage root."""
    algorithm, encoded = digest.split(":")
    return root / "blobs" / algorithm / encoded[:2] / encoded / "data"


def test_docker_pulls_through_prefixes_of_an_anonymous_and_a_token_upstream(
    dockerd: DockerDaemon,
    archive: Path,
    images: list[str],
    reference: ReferenceRegistry,
    local_tags: list[str],
    tmp_path: Path,
) -> None:
    users = write_users(tmp_path / "htpasswd", {MIRROR_USER: MIRROR_PASSWORD})
    rules = [{"repositories": ["**"], "users": [MIRROR_USER], "actions": ["pull", "push"]}]
    auth = {"mode": "token", "htpasswd": str(users), "rules": rules}
    with RegistryProcess(tmp_path / "private", {"auth": auth}) as private:
        public_digest = push(dockerd, images[0], f"{reference.host}/team/app:1", local_tags)
        login = ["login", "--username", MIRROR_USER, "--password-stdin", private.host]
        dockerd.run(*login, input=f"{MIRROR_PASSWORD}\n".encode())
        try:
            private_digest = push(dockerd, images[1], f"{private.host}/team/app:1", local_tags)
        finally:
            dockerd.run("logout", private.host)
        forget_images(dockerd)
        credentials = {"username": MIRROR_USER, "password": MIRROR_PASSWORD}
        with start_cache(
            tmp_path / "cache",
            {"prefix": "public", "url": reference.url},
            {"prefix": "private", "url": private.url, **credentials},
        ) as cache:
            public = f"{cache.host}/public/team/app:1"
            assert docker_pull(dockerd, public, local_tags) == public_digest
            assert docker_pull(dockerd, f"{cache.host}/private/team/app:1", local_tags) == (
                private_digest
            )
            assert docker_pull(dockerd, public, local_tags) == public_digest  # from the cache

            # pushing into the upstream's namespace is refused; beside it, local pushes work
            dockerd.run("load", "--input", str(archive))
            refused = f"{cache.host}/public/team/app:2"
            local_tags.append(refused)
            dockerd.run("tag", images[1], refused)
            pushed = dockerd.run("push", refused, check=False)
            assert pushed.returncode != 0
            assert f"public/team/app is a pull-through cache of {reference.url}" in (
                pushed.stdout + pushed.stderr
            )
            dockerd.run("rmi", refused)
            own = push(dockerd, images[1], f"{cache.host}/team/own:1", local_tags)
            forget_images(dockerd)
            assert docker_pull(dockerd, f"{cache.host}/team/own:1", local_tags) == own


def test_dockerd_with_registry_mirrors_pulls_bare_names_through_the_default(
    dockerd: DockerDaemon,
    images: list[str],
    reference: ReferenceRegistry,
    local_tags: list[str],
    tmp_path: Path,
) -> None:
    digest = push(dockerd, images[0], f"{reference.host}/library/mirrored:1", local_tags)
    hub = {"prefix": "hub", "url": reference.url, "default": True, "registry": "docker.io"}
    # a short directory: the daemon's sockets must fit in a socket path (108 bytes)
    workdir = Path(tempfile.mkdtemp(prefix="dy-mirror-"))
    with start_cache(tmp_path / "cache", hub) as cache:
        mirrored = DockerDaemon(workdir, registry_mirrors=[cache.url])
        try:
            mirrored.start()
            pulled = mirrored.run("pull", "mirrored:1").stdout
            assert f"Digest: {digest}" in pulled
        finally:
            mirrored.stop()
            shutil.rmtree(workdir, ignore_errors=True)
        assert re.search(
            r'"GET /v2/library/mirrored/manifests/(1|sha256:[0-9a-f]{64}) HTTP', cache.log()
        )
        catalog = httpx.get(f"{cache.url}/v2/_catalog").json()
        assert catalog["repositories"] == ["hub/library/mirrored"]


def test_skopeo_copies_through_the_cache_with_the_upstreams_digests(
    published: str, reference: ReferenceRegistry, tmp_path: Path
) -> None:
    digest = published
    with start_cache(tmp_path / "cache", {"prefix": "ref", "url": reference.url}) as cache:
        layout = tmp_path / "layout"
        skopeo(
            "copy", "--src-tls-verify=false",
            f"docker://{cache.host}/ref/team/app:1", f"oci:{layout}:copied",
        )  # fmt: skip
        copied = layout_digest(layout, "copied")
        # an OCI layout holds the manifest converted to OCI: compare docker's own
        through = httpx.get(f"{cache.url}/v2/ref/team/app/manifests/1", headers={"Accept": ACCEPT})
        direct = httpx.get(f"{reference.url}/v2/team/app/manifests/1", headers={"Accept": ACCEPT})
        assert through.content == direct.content
        assert through.headers["Docker-Content-Digest"] == digest
        assert copied  # skopeo read every blob and checked its digest


def test_an_upstream_that_stops_leaves_cached_content_pullable(
    published: str,
    dockerd: DockerDaemon,
    images: list[str],
    reference: ReferenceRegistry,
    local_tags: list[str],
    tmp_path: Path,
) -> None:
    digest = published
    push(dockerd, images[1], f"{reference.host}/team/app:2", local_tags)
    forget_images(dockerd)
    upstream = {"prefix": "ref", "url": reference.url, "tag_ttl": "0s", "timeout": "5s"}
    with start_cache(tmp_path / "cache", upstream) as cache:
        tagged = f"{cache.host}/ref/team/app:1"
        assert docker_pull(dockerd, tagged, local_tags) == digest
        reference.stop()

        assert docker_pull(dockerd, tagged, local_tags) == digest
        assert docker_pull(dockerd, f"{cache.host}/ref/team/app@{digest}", local_tags) == digest
        stale = httpx.get(f"{cache.url}/v2/ref/team/app/manifests/1", headers={"Accept": ACCEPT})
        assert stale.status_code == 200
        assert stale.headers["Warning"].startswith(
            f'110 dockyard "stale: upstream ref ({reference.url})'
        )
        assert "serving ref/team/app:1 stale from the cache" in cache.log()

        uncached = httpx.get(f"{cache.url}/v2/ref/team/app/manifests/2")
        assert uncached.status_code == 424
        message = uncached.json()["errors"][0]["message"]
        assert message.startswith(f"upstream ref ({reference.url}): unreachable")
        failed = dockerd.run("pull", f"{cache.host}/ref/team/app:2", check=False)
        assert failed.returncode != 0
        assert f"upstream ref ({reference.url}): unreachable" in failed.stderr  # docker says why


def test_a_moved_upstream_tag_is_served_at_its_new_digest_after_the_ttl(
    published: str,
    dockerd: DockerDaemon,
    archive: Path,
    images: list[str],
    reference: ReferenceRegistry,
    local_tags: list[str],
    tmp_path: Path,
) -> None:
    first = published
    forget_images(dockerd)
    upstream = {"prefix": "ref", "url": reference.url, "tag_ttl": "0s"}
    with start_cache(tmp_path / "cache", upstream) as cache:
        tagged = f"{cache.host}/ref/team/app:1"
        assert docker_pull(dockerd, tagged, local_tags) == first
        dockerd.run("load", "--input", str(archive))
        second = push(dockerd, images[1], f"{reference.host}/team/app:1", local_tags)
        forget_images(dockerd)
        assert second != first
        assert docker_pull(dockerd, tagged, local_tags) == second


def test_a_corrupted_upstream_blob_breaks_the_download_and_is_not_cached(
    published: str, reference: ReferenceRegistry, tmp_path: Path
) -> None:
    manifest = httpx.get(f"{reference.url}/v2/team/app/manifests/1", headers={"Accept": ACCEPT})
    layer = referenced_digests(manifest.content)[1]  # busybox: about a megabyte
    stored = blob_path(reference.workdir / "data/docker/registry/v2", layer)
    original = stored.read_bytes()
    stored.write_bytes(original[:1000] + bytes([original[1000] ^ 0xFF]) + original[1001:])
    with start_cache(tmp_path / "cache", {"prefix": "ref", "url": reference.url}) as cache:
        url = f"{cache.url}/v2/ref/team/app/blobs/{layer}"
        with pytest.raises(httpx.RemoteProtocolError):  # cut short: never a whole wrong body
            httpx.get(url)
        assert not blob_path(cache.workdir / "data", layer).exists()
        copy = subprocess.run(
            [require_tool("skopeo"), "copy", "--src-tls-verify=false",
             f"docker://{cache.host}/ref/team/app:1", f"dir:{tmp_path / 'copy'}"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert copy.returncode != 0
        assert not blob_path(cache.workdir / "data", layer).exists()
        assert "does not match it" in cache.log()

        stored.write_bytes(original)
        assert httpx.get(url).content == original  # had before the fill commits it
        assert httpx.get(url).content == original  # waits for that fill (its lease)
        assert blob_path(cache.workdir / "data", layer).read_bytes() == original


@pytest.mark.parametrize("workers", [1, 2])
def test_concurrent_cold_pulls_fetch_each_blob_from_the_upstream_once(
    workers: int, published: str, reference: ReferenceRegistry, tmp_path: Path
) -> None:
    manifest = httpx.get(f"{reference.url}/v2/team/app/manifests/1", headers={"Accept": ACCEPT})
    blobs = referenced_digests(manifest.content)
    before = reference.log_path.read_text()
    # concurrent requests of one process share a fetch; processes wait for the one that
    # holds the fetch's lease in the storage
    upstream = {"prefix": "ref", "url": reference.url}
    with start_cache(tmp_path / "cache", upstream, workers=workers) as cache:

        def copy(index: int) -> str:
            layout = tmp_path / f"layout-{index}"
            skopeo(
                "copy", "--src-tls-verify=false", "--preserve-digests",
                f"docker://{cache.host}/ref/team/app:1", f"dir:{layout}",
            )  # fmt: skip
            return (layout / "manifest.json").read_text()

        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            copied = list(pool.map(copy, range(20)))
    assert set(copied) == {manifest.text}
    log = reference.log_path.read_text().removeprefix(before)
    for blob in blobs:
        fetched = re.findall(rf'"GET /v2/team/app/blobs/{blob} HTTP', log)
        assert len(fetched) == 1, (blob, len(fetched))


def test_ctr_pulls_through_the_upstream_its_ns_names(
    dockerd: DockerDaemon,
    images: list[str],
    reference: ReferenceRegistry,
    local_tags: list[str],
    tmp_path: Path,
) -> None:
    digest = push(dockerd, images[0], f"{reference.host}/library/mirrored:1", local_tags)
    # not the default: only containerd's ?ns=docker.io sends bare names to it
    hub = {"prefix": "hub", "url": reference.url, "registry": "docker.io"}
    workdir = Path(tempfile.mkdtemp(prefix="dy-ctr-"))  # short: the socket path must fit
    with start_cache(tmp_path / "cache", hub) as cache:
        hosts = workdir / "hosts" / "docker.io"
        hosts.mkdir(parents=True)
        (hosts / "hosts.toml").write_text(
            'server = "https://registry-1.docker.io"\n'
            f'[host."http://{cache.host}"]\n  capabilities = ["pull", "resolve"]\n'
        )
        containerd = Containerd(workdir)
        try:
            try:
                containerd.start()
            except ContainerdUnavailableError as error:
                unavailable(f"containerd cannot start: {error}")
            containerd.ctr(
                "content", "fetch", "--plain-http", "--hosts-dir", str(workdir / "hosts"),
                "docker.io/library/mirrored:1",
            )  # fmt: skip
            listed = containerd.ctr("images", "list", "--quiet").stdout
            assert "docker.io/library/mirrored:1" in listed
            images_listed = containerd.ctr("images", "list").stdout
            assert digest in images_listed
        finally:
            containerd.stop()
            shutil.rmtree(workdir, ignore_errors=True)
        assert re.search(r'"GET /v2/library/mirrored/manifests/\S+\?ns=docker.io HTTP', cache.log())
