"""The pull-through cache in-process: an upstream Dockyard reached through a transport
that records, refuses or corrupts its requests; the cache over every storage driver."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from oci.references import Digest
from proxy import blob_fill
from proxy import cache as cache_module
from registry.cli_storage import _run_check
from registry.config import Config
from storage import paths
from storage.driver import StorageDriver
from storage.store import Store
from tests.api.helpers import OCI_MANIFEST, digest_of, push_blob, push_image
from tests.ops.test_metrics import sample
from tests.proxy.conftest import CacheFactory, UpstreamTransport, upstream_config
from tests.proxy.test_blob_fill import held_up
from tests.support.auth import basic, write_users
from tests.support.drivers import keys_asked, twin


def layer_digests(manifest: bytes) -> list[str]:
    document = json.loads(manifest)
    return [document["config"]["digest"], *(layer["digest"] for layer in document["layers"])]


async def pull(client: httpx.AsyncClient, name: str, reference: str) -> tuple[str, bytes]:
    """GET the manifest and every blob; returns the manifest's digest and bytes."""
    response = await client.get(
        f"/v2/{name}/manifests/{reference}", headers={"Accept": OCI_MANIFEST}
    )
    assert response.status_code == 200, response.text
    for digest in layer_digests(response.content):
        blob = await client.get(f"/v2/{name}/blobs/{digest}")
        assert blob.status_code == 200, blob.text
        assert digest_of(blob.content) == digest
    return response.headers["Docker-Content-Digest"], response.content


async def test_pull_through_a_prefix_serves_the_upstreams_bytes_then_the_cache(
    upstream: httpx.AsyncClient, transport: UpstreamTransport, open_cache: CacheFactory
) -> None:
    digest, manifest = await push_image(upstream, "library/app", "1", seed="first")
    cache = open_cache()
    assert await pull(cache, "hub/library/app", "1") == (digest, manifest)
    assert transport.count("GET", "/blobs/") == 2

    fetched = len(transport.requests)
    assert await pull(cache, "hub/library/app", "1") == (digest, manifest)
    assert await pull(cache, "hub/library/app", digest) == (digest, manifest)
    assert len(transport.requests) == fetched  # the tag is young: no upstream request at all

    tags = await cache.get("/v2/_catalog")
    assert tags.json()["repositories"] == ["hub/library/app"]


async def test_a_young_tag_is_served_without_reading_when_it_was_confirmed(
    driver: StorageDriver,
    upstream: httpx.AsyncClient,
    transport: UpstreamTransport,
    open_cache: CacheFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The tag's confirmation time is remembered by the process that wrote or read it: a
    warm pull by tag reads no object for it (on S3 a GetObject a pull, on the filesystem
    a thread hop); another process reads it once."""
    digest, manifest = await push_image(upstream, "library/app", "1", seed="first")
    cache = open_cache()
    await pull(cache, "hub/library/app", "1")
    await cache.app.state.proxy.stored()  # type: ignore[attr-defined]
    reads = keys_asked(driver, "read_versioned", monkeypatch)  # on S3 leases too
    checked = paths.proxy_checked("hub/library/app", "1")
    for _ in range(3):
        assert await pull(cache, "hub/library/app", "1") == (digest, manifest)
    assert checked not in reads
    other = open_cache()  # another process on the same storage
    for _ in range(3):
        assert await pull(other, "hub/library/app", "1") == (digest, manifest)
    assert reads.count(checked) == 1
    assert transport.count("HEAD", "/manifests/") == 0


async def test_a_cached_manifest_whose_bytes_are_gone_is_fetched_again(
    driver: StorageDriver,
    upstream: httpx.AsyncClient,
    transport: UpstreamTransport,
    open_cache: CacheFactory,
) -> None:
    """Bytes moved aside (`dockyard check --repair` does that with corrupt ones) leave a
    revision without content: the cache fetches the manifest again rather than 404."""
    digest, manifest = await push_image(upstream, "library/app", "1", seed="first")
    first = open_cache()
    await pull(first, "hub/library/app", "1")
    await first.app.state.proxy.stored()  # type: ignore[attr-defined]
    await driver.delete(paths.blob_data(Digest.parse(digest)))
    transport.requests.clear()
    for reference in ("1", digest):
        cache = open_cache()  # a process that holds no copy of the bytes in memory
        assert await pull(cache, "hub/library/app", reference) == (digest, manifest)
        await cache.app.state.proxy.stored()  # type: ignore[attr-defined]
    assert transport.count("GET", "/manifests/") == 1  # stored again by the first


async def test_a_tag_older_than_its_ttl_is_checked_with_one_head(
    upstream: httpx.AsyncClient, transport: UpstreamTransport, open_cache: CacheFactory
) -> None:
    digest, manifest = await push_image(upstream, "library/app", "1", seed="first")
    cache = open_cache(upstream_config(tag_ttl=0))
    await pull(cache, "hub/library/app", "1")
    transport.requests.clear()

    assert await pull(cache, "hub/library/app", "1") == (digest, manifest)
    assert transport.requests == [("HEAD", "/v2/library/app/manifests/1")]


async def test_a_moved_tag_is_served_at_its_new_digest_after_the_ttl(
    upstream: httpx.AsyncClient, transport: UpstreamTransport, open_cache: CacheFactory
) -> None:
    first, _ = await push_image(upstream, "library/app", "1", seed="first")
    young = open_cache(upstream_config(tag_ttl="1h"))
    old = open_cache(upstream_config(tag_ttl=0))  # same storage, another replica's setting
    assert (await pull(young, "hub/library/app", "1"))[0] == first
    second, manifest = await push_image(upstream, "library/app", "1", seed="second")

    assert (await pull(young, "hub/library/app", "1"))[0] == first  # trusted within the ttl
    assert await pull(old, "hub/library/app", "1") == (second, manifest)
    await old.app.state.proxy.stored()  # type: ignore[attr-defined]  # served while stored
    assert (await pull(young, "hub/library/app", "1"))[0] == second  # the stored tag moved


@pytest.mark.parametrize("failure", ["down", "slow", "rate limited", "server error"])
async def test_a_failing_upstream_gets_cached_tags_served_stale_and_uncached_refused(
    upstream: httpx.AsyncClient,
    transport: UpstreamTransport,
    open_cache: CacheFactory,
    failure: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    digest, manifest = await push_image(upstream, "library/app", "1", seed="first")
    await push_image(upstream, "library/app", "2", seed="second")
    cache = open_cache(upstream_config(tag_ttl=0))
    await pull(cache, "hub/library/app", "1")
    if failure in ("down", "slow"):
        setattr(transport, failure, True)
    else:
        transport.status = 429 if failure == "rate limited" else 500

    stale = await cache.get("/v2/hub/library/app/manifests/1")
    assert stale.status_code == 200
    assert stale.content == manifest
    assert stale.headers["Warning"].startswith('110 dockyard "stale: upstream hub')
    assert "serving hub/library/app:1 stale" in caplog.text
    assert (await pull(cache, "hub/library/app", digest))[0] == digest

    uncached = await cache.get("/v2/hub/library/app/manifests/2")
    error = uncached.json()["errors"][0]
    assert "upstream hub (http://upstream.test)" in error["message"]
    if failure == "rate limited":
        assert (uncached.status_code, error["code"]) == (429, "TOOMANYREQUESTS")
        assert uncached.headers["Retry-After"] == "7"
    else:
        assert (uncached.status_code, error["code"]) == (424, "UNAVAILABLE")  # docker shows 4xx
        cause = {"down": "unreachable", "slow": "no answer within the timeout"}
        assert cause.get(failure, "answered 500") in error["message"]


async def test_content_the_upstream_does_not_have_is_unknown(
    upstream: httpx.AsyncClient, open_cache: CacheFactory
) -> None:
    cache = open_cache()
    missing = await cache.get("/v2/hub/library/none/manifests/1")
    assert missing.status_code == 404
    assert missing.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert "not found at upstream hub" in missing.json()["errors"][0]["message"]
    blob = await cache.get(f"/v2/hub/library/none/blobs/{digest_of(b'nothing')}")
    assert blob.status_code == 404
    assert blob.json()["errors"][0]["code"] == "BLOB_UNKNOWN"


async def test_a_corrupted_blob_breaks_the_download_and_is_not_cached(
    upstream: httpx.AsyncClient, transport: UpstreamTransport, open_cache: CacheFactory
) -> None:
    _, manifest = await push_image(upstream, "library/app", "1", seed="first")
    layer = layer_digests(manifest)[1]
    cache = open_cache()
    transport.corrupt = True
    # the response is left unfinished (a cut connection on a real server, as the e2e
    # test checks), which httpx's ASGI transport reports with an AssertionError
    with pytest.raises(AssertionError):
        await cache.get(f"/v2/hub/library/app/blobs/{layer}")
    store = cache.app.state.store  # type: ignore[attr-defined]
    assert await store.blobs.size(Digest.parse(layer)) is None
    assert await store.uploads.purge(float("inf"), dry_run=True) == []  # no session left

    transport.corrupt = False
    fixed = await cache.get(f"/v2/hub/library/app/blobs/{layer}")
    assert digest_of(fixed.content) == layer


async def test_concurrent_cold_pulls_fetch_each_blob_once(
    upstream: httpx.AsyncClient, transport: UpstreamTransport, open_cache: CacheFactory
) -> None:
    digest, manifest = await push_image(upstream, "library/app", "1", seed="first")
    cache = open_cache()
    pulled = await asyncio.gather(*(pull(cache, "hub/library/app", "1") for _ in range(20)))
    assert set(pulled) == {(digest, manifest)}
    for blob in layer_digests(manifest):
        assert transport.count("GET", f"/blobs/{blob}") == 1
    assert transport.count("GET", "/manifests/") == 1


async def test_a_fetched_manifest_is_served_while_it_is_stored(
    upstream: httpx.AsyncClient,
    transport: UpstreamTransport,
    open_cache: CacheFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    digest, manifest = await push_image(upstream, "library/app", "1", seed="first")
    cache = open_cache()
    store: Store = cache.app.state.store  # type: ignore[attr-defined]
    storing, stores_go = held_up(monkeypatch, store.manifests, "put")
    path = "/v2/hub/library/app/manifests"
    for reference in ("1", digest):  # docker asks by tag, then by digest
        response = await asyncio.wait_for(
            cache.get(f"{path}/{reference}", headers={"Accept": OCI_MANIFEST}), 30
        )
        assert response.status_code == 200
        assert (response.headers["Docker-Content-Digest"], response.content) == (digest, manifest)
    assert storing.is_set()
    assert await store.manifests.resolve("hub/library/app", "1") is None  # not stored yet
    assert transport.count("GET", "/manifests/") == 1
    stores_go.set()
    await cache.app.state.proxy.stored()  # type: ignore[attr-defined]
    assert await store.manifests.resolve("hub/library/app", "1") == Digest.parse(digest)
    transport.down = True  # served from the store now
    response = await cache.get(f"{path}/1", headers={"Accept": OCI_MANIFEST})
    assert (response.headers["Docker-Content-Digest"], response.content) == (digest, manifest)


async def test_a_blob_stored_by_another_process_before_the_lease_is_taken_is_not_fetched(
    upstream: httpx.AsyncClient,
    transport: UpstreamTransport,
    open_cache: CacheFactory,
    driver: StorageDriver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    layer = os.urandom(1 << 20)
    digest = await push_blob(upstream, "library/app", layer)
    path = f"/v2/hub/library/app/blobs/{digest}"
    first, second = open_cache(), open_cache()  # two processes on one storage
    take = cache_module.take_lease
    raced = False

    async def racing_take(*args: Any, **kwargs: Any) -> Any:
        """The first process looked in the store and found nothing; before it takes the
        lease, the second fetches and stores the whole blob and lets the lease go."""
        nonlocal raced
        if not raced:
            raced = True
            assert (await second.get(path)).content == layer
            lease = paths.proxy_filling(Digest.parse(digest))
            for _ in range(3000):  # the fill commits after its client had every byte
                if not await driver.exists(lease):
                    break
                await asyncio.sleep(0.01)
        return await take(*args, **kwargs)

    monkeypatch.setattr(cache_module, "take_lease", racing_take)
    assert (await first.get(path)).content == layer
    assert raced
    assert transport.count("GET", f"/blobs/{digest}") == 1


async def test_pushes_and_deletes_into_a_proxied_namespace_are_refused(
    open_cache: CacheFactory,
) -> None:
    cache = open_cache()
    layer = b"a layer"
    for method, path in [
        ("POST", f"/v2/hub/team/app/blobs/uploads/?digest={digest_of(layer)}"),
        ("PUT", "/v2/hub/team/app/manifests/1"),
        ("DELETE", "/v2/hub/team/app/manifests/1"),
        ("DELETE", f"/v2/hub/team/app/blobs/{digest_of(layer)}"),
    ]:
        response = await cache.request(method, path, content=layer)
        assert response.status_code == 403, (method, path)
        error = response.json()["errors"][0]
        assert error["code"] == "DENIED"
        assert "pull-through cache of http://upstream.test" in error["message"]
    # beside it, local repositories take pushes as before
    digest, manifest = await push_image(cache, "team/app", "1", seed="local")
    assert await pull(cache, "team/app", "1") == (digest, manifest)


async def test_mirror_mode_sends_unknown_names_to_the_default_upstream(
    upstream: httpx.AsyncClient, transport: UpstreamTransport, open_cache: CacheFactory
) -> None:
    digest, manifest = await push_image(upstream, "library/app", "1", seed="hub")
    _, upstream_mine = await push_image(upstream, "library/mine", "1", seed="upstream's")
    cache = open_cache(upstream_config(default=True, registry="docker.io"))
    assert await pull(cache, "library/app", "1") == (digest, manifest)
    assert await pull(cache, "app", "1") == (digest, manifest)  # docker.io: library/
    # cached under the prefix: a prefix pull needs nothing more from upstream
    transport.requests.clear()
    assert await pull(cache, "hub/library/app", "1") == (digest, manifest)
    assert transport.requests == []
    # a push to a new local repository of a mirrored name is not told it holds the
    # upstream's blobs (it would skip uploading them), and is served as it is afterwards
    config_blob = layer_digests(upstream_mine)[0]
    head = await cache.head(f"/v2/library/mine/blobs/{config_blob}")
    assert head.status_code == 404
    local, local_manifest = await push_image(cache, "library/mine", "1", seed="local")
    assert await pull(cache, "library/mine", "1") == (local, local_manifest)


async def test_ns_selects_the_upstream_of_that_registry(
    upstream: httpx.AsyncClient, open_cache: CacheFactory
) -> None:
    digest, _ = await push_image(upstream, "library/app", "1", seed="hub")
    cache = open_cache(upstream_config(registry="docker.io"))
    without = await cache.get("/v2/library/app/manifests/1")
    assert without.status_code == 404  # no default upstream: a local name
    other = await cache.get("/v2/library/app/manifests/1?ns=ghcr.io")
    assert other.status_code == 404
    response = await cache.get("/v2/library/app/manifests/1?ns=docker.io")
    assert response.status_code == 200
    assert response.headers["Docker-Content-Digest"] == digest


async def test_repositories_outside_the_globs_are_not_fetched(
    upstream: httpx.AsyncClient, transport: UpstreamTransport, open_cache: CacheFactory
) -> None:
    await push_image(upstream, "library/app", "1")
    await push_image(upstream, "other/app", "1")
    cache = open_cache(upstream_config(repositories=["library/*"]))
    assert (await cache.get("/v2/hub/library/app/manifests/1")).status_code == 200
    refused = await cache.get("/v2/hub/other/app/manifests/1")
    assert refused.status_code == 403
    assert "not among the repositories mirrored" in refused.json()["errors"][0]["message"]
    assert transport.count("GET", "/v2/other/") == 0


async def test_cache_counts_hits_misses_bytes_and_errors_in_the_scrape(
    upstream: httpx.AsyncClient, transport: UpstreamTransport, open_cache: CacheFactory
) -> None:
    _, manifest = await push_image(upstream, "library/app", "1")
    cache = open_cache(upstream_config(prefix="counted"))
    names = {
        "hit": ("registry_proxy_requests_total", {"result": "hit"}),
        "miss": ("registry_proxy_requests_total", {"result": "miss"}),
        "bytes": ("registry_proxy_upstream_bytes_total", {}),
        "error": ("registry_proxy_upstream_errors_total", {}),
    }

    def counted() -> dict[str, float]:
        return {
            what: sample(name, upstream="counted", **labels)
            for what, (name, labels) in names.items()
        }

    before = counted()

    def delta(what: str) -> float:
        return counted()[what] - before[what]

    await pull(cache, "counted/library/app", "1")
    assert delta("miss") == 3  # the manifest and two blobs
    blobs = [await upstream.get(f"/v2/library/app/blobs/{d}") for d in layer_digests(manifest)]
    assert delta("bytes") == len(manifest) + sum(len(blob.content) for blob in blobs)
    await pull(cache, "counted/library/app", "1")
    assert delta("hit") == 3
    transport.down = True
    await cache.get("/v2/counted/library/app/manifests/2")
    assert delta("error") == 1


async def test_cached_content_has_push_and_pull_times(
    upstream: httpx.AsyncClient, open_cache: CacheFactory
) -> None:
    digest, _ = await push_image(upstream, "library/app", "1")
    cache = open_cache()
    await pull(cache, "hub/library/app", "1")
    await cache.app.state.proxy.stored()  # type: ignore[attr-defined]  # served while stored
    store = cache.app.state.store  # type: ignore[attr-defined]
    await store.manifests.pulls.close()  # the pull is recorded in the background
    assert await store.manifests.pulls.last_pulled("hub/library/app", Digest.parse(digest))
    summary = await store.usage.summary("hub/library/app")
    assert summary.last_push is not None


async def test_tags_are_listed_from_the_upstream_or_from_the_cache_when_it_is_down(
    upstream: httpx.AsyncClient, transport: UpstreamTransport, open_cache: CacheFactory
) -> None:
    for tag in ("1", "2", "3"):
        await push_image(upstream, "library/app", tag, seed=tag)
    cache = open_cache()
    listed = await cache.get("/v2/hub/library/app/tags/list")
    assert listed.json() == {"name": "hub/library/app", "tags": ["1", "2", "3"]}
    first = await cache.get("/v2/hub/library/app/tags/list?n=2")
    assert first.json()["tags"] == ["1", "2"]
    assert first.headers["Link"] == '</v2/hub/library/app/tags/list?n=2&last=2>; rel="next"'
    assert (await cache.get("/v2/hub/library/other/tags/list")).status_code == 404

    await pull(cache, "hub/library/app", "2")
    await cache.app.state.proxy.stored()  # type: ignore[attr-defined]  # served while stored
    transport.down = True
    cached = await cache.get("/v2/hub/library/app/tags/list")
    assert cached.json() == {"name": "hub/library/app", "tags": ["2"]}


async def test_a_client_that_stops_reading_does_not_hold_up_the_fill(
    upstream: httpx.AsyncClient, open_cache: CacheFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blob_fill, "_READER_PATIENCE", 0.01)
    layer = os.urandom(4 << 20)  # more pieces than the reader's queue holds
    digest = await push_blob(upstream, "library/app", layer)
    cache = open_cache()
    proxy = cache.app.state.proxy  # type: ignore[attr-defined]
    target = await proxy.target("hub/library/app", None)
    response = await proxy.blob(target, Digest.parse(digest), "GET")
    assert response is not None  # its body is never read, as by a stalled client
    fill = proxy._fills[(target.local, Digest.parse(digest))]
    await asyncio.wait_for(fill.task, 60)  # the fill went on without its reader
    stored = await cache.get(f"/v2/hub/library/app/blobs/{digest}")
    assert stored.content == layer


async def test_in_maintenance_mode_only_cached_content_is_served(
    upstream: httpx.AsyncClient, transport: UpstreamTransport, open_cache: CacheFactory
) -> None:
    digest, manifest = await push_image(upstream, "library/app", "1", seed="first")
    _, other = await push_image(upstream, "library/app", "2", seed="second")
    cache = open_cache(upstream_config(tag_ttl=0))
    await pull(cache, "hub/library/app", "1")
    await cache.app.state.store.maintenance.switch_on("moving storage")  # type: ignore[attr-defined]
    transport.requests.clear()

    stale = await cache.get("/v2/hub/library/app/manifests/1")
    assert stale.content == manifest
    assert "the registry is read-only: moving storage" in stale.headers["Warning"]
    assert await pull(cache, "hub/library/app", digest) == (digest, manifest)
    for path in ("manifests/2", f"blobs/{layer_digests(other)[1]}"):
        refused = await cache.get(f"/v2/hub/library/app/{path}")
        assert refused.status_code == 405
        assert "not cached, and the registry is read-only: moving storage" in refused.text
    assert transport.requests == []  # nothing fetched: it could not be stored


async def test_access_rules_apply_to_proxied_names_before_any_upstream_request(
    upstream: httpx.AsyncClient,
    transport: UpstreamTransport,
    open_cache: CacheFactory,
    tmp_path: Path,
) -> None:
    digest, _ = await push_image(upstream, "library/app", "1")
    users = write_users(tmp_path / "htpasswd", {"alice": "alice-pw", "bob": "bob-pw"})
    rules = [{"repositories": ["hub/library/*"], "users": ["alice"], "actions": ["pull"]}]
    cache = open_cache(auth={"mode": "basic", "htpasswd": str(users), "rules": rules})
    path = "/v2/hub/library/app/manifests/1"
    assert (await cache.get(path)).status_code == 401
    assert (await cache.get(path, headers=basic("bob", "bob-pw"))).status_code == 403
    assert transport.requests == []
    allowed = await cache.get(path, headers=basic("alice", "alice-pw"))
    assert allowed.headers["Docker-Content-Digest"] == digest


async def test_check_counts_no_unpulled_layer_of_a_cached_manifest_missing(
    upstream: httpx.AsyncClient, open_cache: CacheFactory, driver: StorageDriver
) -> None:
    await push_image(upstream, "library/app", "1")
    cache = open_cache()
    assert (await cache.get("/v2/hub/library/app/manifests/1")).status_code == 200
    await push_image(cache, "team/app", "1")  # a local repository, checked as before
    await driver.delete(paths.blob_data(Digest.parse(digest_of(b"layer of x"))))

    config = Config(proxy={"upstreams": [upstream_config()]})
    report = await _run_check(Store(twin(driver)), config, repair=False, parallelism=2)
    assert {(problem.kind, problem.repository) for problem in report.problems} == {
        ("dangling-link", "team/app"),
        ("missing-reference", "team/app"),
    }


async def test_a_local_pull_beside_a_default_upstream_asks_the_catalog_nothing(
    driver: StorageDriver,
    transport: UpstreamTransport,
    open_cache: CacheFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A mirror's fallback asks the catalog whether a name is a local repository: on S3 a
    request of its own. A pull that finds its manifest and blobs locally needs not."""
    cache = open_cache(upstream_config(default=True))
    await push_image(cache, "team/app", "1", seed="local")
    asked = keys_asked(driver, "exists", monkeypatch)
    await pull(cache, "team/app", "1")
    assert paths.catalog_marker("team/app") not in asked
    # what the local repository lacks is still its own: unknown, and nothing fetched
    assert (await cache.get("/v2/team/app/manifests/2")).status_code == 404
    assert paths.catalog_marker("team/app") in asked
    assert transport.requests == []


async def test_a_local_tag_list_beside_a_default_upstream_asks_the_catalog_once(
    driver: StorageDriver,
    upstream: httpx.AsyncClient,
    transport: UpstreamTransport,
    open_cache: CacheFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await push_image(upstream, "library/app", "up", seed="upstream")
    cache = open_cache(upstream_config(default=True))
    await push_image(cache, "team/app", "1", seed="local")
    asked = keys_asked(driver, "exists", monkeypatch)
    listed = await cache.get("/v2/team/app/tags/list")
    assert listed.json() == {"name": "team/app", "tags": ["1"]}
    assert asked == [paths.catalog_marker("team/app")]
    assert transport.requests == []
    # a name that is no local repository's still goes to the default upstream
    mirrored = await cache.get("/v2/library/app/tags/list")
    assert mirrored.json() == {"name": "library/app", "tags": ["up"]}
    transport.down = True
    assert (await cache.get("/v2/library/other/tags/list")).status_code == 404
