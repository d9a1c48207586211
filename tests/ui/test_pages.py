"""What the web UI's pages show, read through the API's store (auth off: anyone sees all)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from types import SimpleNamespace

import httpx
import pytest

from registry.app import create_app
from registry.config import Config
from storage.memory import MemoryDriver
from tests.api.helpers import (
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
    descriptor,
    digest_of,
    push_blob,
    push_image,
    push_referrer,
    put_manifest,
)
from tests.collector.support import age, run_gc
from ui import web


class CountingDriver(MemoryDriver):
    """Counts reads of usage summaries."""

    def __init__(self) -> None:
        super().__init__()
        self.summary_reads = 0

    async def get(self, key: str) -> bytes:
        if key.endswith("/_summary"):
            self.summary_reads += 1
        return await super().get(key)


@pytest.fixture
def driver() -> CountingDriver:
    return CountingDriver()


def make_client(config: Config, driver: MemoryDriver) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(config, driver))
    return httpx.AsyncClient(transport=transport, base_url="http://registry.test")


@pytest.fixture
async def client(driver: CountingDriver) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(Config(ui={"page_size": 10}), driver) as made:
        yield made


def linked_repositories(html: str) -> list[str]:
    return re.findall(r'<a href="/ui/repositories/([^"?]+)">', html)


async def test_the_list_reads_only_the_summaries_of_the_page_it_shows(client, driver) -> None:
    names = [f"team/app{i:02}" for i in range(25)]
    for name in names:
        await push_image(client, name, "1", seed=name)
    driver.summary_reads = 0
    first = await client.get("/ui/")
    assert linked_repositories(first.text) == names[:10]
    assert driver.summary_reads == 10
    assert "25 repositories" in first.text and "page 1 of 3" in first.text
    last = await client.get("/ui/", params={"page": 3})
    assert linked_repositories(last.text) == names[20:]
    assert re.search(r"<td>1</td><td>[0-9.]+ (B|KiB)</td><td>20\d\d-", first.text)


async def test_search_by_substring_or_glob_and_sort_by_last_push(client) -> None:
    for name in ("team/web", "team/api", "tools/web", "team/deep/web"):
        await push_image(client, name, "1", seed=name)
    assert linked_repositories((await client.get("/ui/", params={"q": "WEB"})).text) == [
        "team/deep/web",
        "team/web",
        "tools/web",
    ]
    glob = await client.get("/ui/", params={"q": "team/*"})
    assert linked_repositories(glob.text) == ["team/api", "team/web"]
    newest = await client.get("/ui/", params={"sort": "push"})
    assert linked_repositories(newest.text)[0] == "team/deep/web"


async def test_repository_page_tags_filter_pages_and_untagged_tab(client) -> None:
    digest, raw = await push_image(client, "team/app", "v1")
    for tag in ("v2", "latest"):
        await put_manifest(client, "team/app", tag, raw, OCI_MANIFEST)
    untagged, _ = await push_image(client, "team/app", "gone", seed="other")
    await client.delete("/v2/team/app/manifests/gone")
    page = await client.get("/ui/repositories/team/app")
    assert page.status_code == 200
    assert re.findall(r'class="tag"><a href="[^"]+">([^<]+)<', page.text) == ["latest", "v1", "v2"]
    assert "docker pull registry.test/team/app:v1" in page.text
    assert f"docker pull registry.test/team/app@{digest}" in page.text
    assert f'data-copy="{digest}"' in page.text
    filtered = await client.get("/ui/repositories/team/app", params={"filter": "v"})
    assert re.findall(r'class="tag"><a href="[^"]+">([^<]+)<', filtered.text) == ["v1", "v2"]
    tab = await client.get("/ui/repositories/team/app", params={"tab": "untagged"})
    assert untagged in tab.text.replace("/ui/images/team/app/", "")
    assert digest not in tab.text


async def test_an_index_lists_its_platforms_linking_to_their_manifests(client) -> None:
    children = []
    for platform in ("amd64", "arm64"):
        digest, raw = await push_image(client, "team/multi", f"only-{platform}", seed=platform)
        children.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": len(raw),
                "platform": {"os": "linux", "architecture": platform},
            }
        )
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children})
    assert (
        await put_manifest(client, "team/multi", "1", index.encode(), OCI_INDEX)
    ).status_code == 201
    repository = await client.get("/ui/repositories/team/multi")
    assert "linux/amd64, linux/arm64" in repository.text
    page = await client.get("/ui/images/team/multi/1")
    assert "index" in page.text
    for child in children:
        assert f'href="/ui/images/team/multi/{child["digest"]}"' in page.text
    assert (await client.get(f"/ui/images/team/multi/{children[1]['digest']}")).status_code == 200


async def test_referrers_grouped_by_type_and_an_artifact_s_files_downloadable(client) -> None:
    digest, raw = await push_image(client, "team/app", "1")
    await push_blob(client, "team/app", b"{}")
    await push_blob(client, "team/app", b"signed")
    title = {"org.opencontainers.image.title": "app.sig"}
    artifact_manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.dev.cosign.signature",
            "config": descriptor(OCI_EMPTY, b"{}"),
            "layers": [descriptor("application/octet-stream", b"signed", annotations=title)],
            "subject": descriptor(OCI_MANIFEST, raw),
            "annotations": {"dev.signer": "ci@example"},
        }
    ).encode()
    signature = digest_of(artifact_manifest)
    response = await put_manifest(client, "team/app", signature, artifact_manifest, OCI_MANIFEST)
    assert response.status_code == 201
    await push_referrer(client, "team/app", raw, "application/spdx+json", b"{}sbom")
    page = (await client.get(f"/ui/images/team/app/{digest}")).text
    groups = re.findall(r'<h3 class="artifact-type">([^<]+)</h3>', page)
    assert groups == ["application/spdx+json", "application/vnd.dev.cosign.signature"]
    assert "<dt>dev.signer</dt><dd>ci@example</dd>" in page
    artifact = (await client.get(f"/ui/images/team/app/{signature}")).text
    assert "artifact (application/vnd.dev.cosign.signature)" in artifact
    link = re.search(r'<a href="(/ui/files/team/app/[^"]+)" download>app.sig</a>', artifact)
    assert link, artifact
    download = await client.get(link[1].replace("&amp;", "&"))
    assert download.content == b"signed"
    assert download.headers["content-disposition"] == 'attachment; filename="app.sig"'
    assert f'href="/ui/images/team/app/{digest}"' in artifact  # its subject


async def test_registry_page_shows_version_gc_retention_and_usage_on_demand(driver) -> None:
    config = Config(
        retention={"policies": [{"repositories": ["ci/**"], "keep_last": 3}]},
        gc={"interval": "2h"},
    )
    async with make_client(config, driver) as client:
        await push_image(client, "ci/app", "1")
        page = (await client.get("/ui/registry")).text
        assert "Dockyard 0.1.0" in page
        assert "No collection recorded." in page
        assert "every 2h" in page
        assert "<strong>ci/**</strong>:" in page and "keep the last 3 tags" in page
        assert "Count it now" in page
        counted = (await client.get("/ui/registry", params={"usage": "count"})).text
        assert re.search(r"[0-9.]+ (B|KiB) in 1 repository", counted)


async def test_ui_disabled_leaves_no_ui(driver) -> None:
    async with make_client(Config(ui={"enabled": False}), driver) as client:
        response = await client.get("/ui/")
        assert response.status_code == 404
        assert response.json()["errors"][0]["code"] == "UNSUPPORTED"


async def test_untagged_manifests_come_newest_first_a_page_at_a_time(client) -> None:
    pushed = []
    for number in range(12):
        digest, _ = await push_image(client, "ci/app", f"build-{number}", seed=str(number))
        await client.delete(f"/v2/ci/app/manifests/build-{number}")
        pushed.append(digest)
    listed = []
    for page in (1, 2):
        html = (
            await client.get("/ui/repositories/ci/app", params={"tab": "untagged", "page": page})
        ).text
        listed += re.findall(r'<a href="/ui/images/ci/app/(sha256:[0-9a-f]+)">', html)
    assert listed == pushed[::-1]
    assert "page 1 of 2" not in html and "page 2 of 2" in html


async def test_deleting_a_manifest_says_what_goes_with_it_and_what_refuses(client) -> None:
    digest, raw = await push_image(client, "team/app", "1")
    await put_manifest(client, "team/app", "latest", raw, OCI_MANIFEST)
    sbom, _, _ = await push_referrer(client, "team/app", raw, "application/spdx+json", b"sbom")
    confirm = (await client.get(f"/ui/delete/team/app/{digest}")).text
    assert re.findall(r'<strong class="tag">([^<]+)</strong>', confirm) == ["1", "latest"]
    assert re.search(rf'class="referrer">application/spdx\+json <code>{sbom[:19]}', confirm)
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest, "size": len(raw)}],
        }
    ).encode()
    await put_manifest(client, "team/app", "multi", index, OCI_INDEX)
    token = re.search(r'name="csrf" value="([^"]+)"', confirm)[1]
    refused = await client.post(f"/ui/delete/team/app/{digest}", data={"csrf": token})
    assert refused.status_code == 405
    assert f"is referenced by manifest {digest_of(index)}" in refused.text
    assert (await client.get(f"/v2/team/app/manifests/{digest}")).status_code == 200


async def test_registry_page_shows_the_last_collection_and_what_it_freed(
    client, monkeypatch
) -> None:
    run = SimpleNamespace(
        finished=1_764_550_800.0,  # 2025-12-01 01:00 UTC
        duration=2.5,
        bytes_freed=3 << 20,
        manifests=4,
        tags=5,
        blobs=6,
        repositories=1,
        error=None,
    )

    async def last(store: object) -> SimpleNamespace:
        return run

    monkeypatch.setattr(web, "last_run", last)
    page = (await client.get("/ui/registry")).text
    assert "2025-12-01 01:00 UTC (2.5 s)" in page
    assert "3.0 MiB: 4 manifests, 5 tags, 6 blobs, 1 emptied repositories" in page


async def test_registry_page_shows_the_record_a_real_run_stored(
    client: httpx.AsyncClient, driver: CountingDriver
) -> None:
    await push_blob(client, "team/app", b"nobody references me")
    await age(driver)
    await run_gc(driver)
    page = (await client.get("/ui/registry")).text
    assert "0 manifests, 0 tags, 1 blobs, 1 emptied repositories" in page
