"""Tag list (end-8), `_catalog`, referrers (end-12) and the API base (end-1)."""

from __future__ import annotations

import json
import os

import httpx
import pytest

from oci.references import Digest
from storage import paths
from storage.driver import StorageDriver
from storage.filesystem import FilesystemDriver
from tests.api.helpers import (
    OCI_INDEX,
    OCI_MANIFEST,
    descriptor,
    digest_of,
    error_code,
    image_manifest,
    push_blob,
    push_image,
    push_referrer,
    put_manifest,
)


async def test_api_base(client: httpx.AsyncClient) -> None:
    for method in ("GET", "HEAD"):
        response = await client.request(method, "/v2/")
        assert response.status_code == 200
        assert response.headers["docker-distribution-api-version"] == "registry/2.0"
    response = await client.get("/v2/")
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {}


async def test_every_response_carries_api_version(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/team/app/manifests/missing")
    assert response.status_code == 404
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"


async def test_unknown_endpoint_and_method(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/team/app/unknown/thing")
    assert response.status_code == 404
    assert error_code(response) == "UNSUPPORTED"
    response = await client.post("/v2/team/app/manifests/v1")
    assert response.status_code == 405
    assert error_code(response) == "UNSUPPORTED"


async def tag_all(client: httpx.AsyncClient, name: str, tags: list[str]) -> None:
    digest, raw = await push_image(client, name, tags[0])
    for tag in tags[1:]:
        assert (await put_manifest(client, name, tag, raw, OCI_MANIFEST)).status_code == 201
    assert digest


async def test_tags_sorted(client: httpx.AsyncClient) -> None:
    await tag_all(client, "team/app", ["b", "a", "C", "latest", "1.0"])
    response = await client.get("/v2/team/app/tags/list")
    assert response.json() == {"name": "team/app", "tags": ["1.0", "C", "a", "b", "latest"]}
    assert "link" not in response.headers


async def test_tags_pagination_walks_all(client: httpx.AsyncClient) -> None:
    tags = [f"t{i:02d}" for i in range(7)]
    await tag_all(client, "team/app", tags)
    seen: list[str] = []
    url = "/v2/team/app/tags/list?n=3"
    for _ in range(5):
        response = await client.get(url)
        page = response.json()["tags"]
        seen += page
        if "link" not in response.headers:
            break
        assert len(page) == 3
        url = response.headers["link"].split(";")[0].strip("<>")
    assert seen == tags


async def test_tags_last(client: httpx.AsyncClient) -> None:
    await tag_all(client, "team/app", ["a", "b", "c", "d"])
    response = await client.get("/v2/team/app/tags/list?last=b")
    assert response.json()["tags"] == ["c", "d"]
    response = await client.get("/v2/team/app/tags/list?n=1&last=b")
    assert response.json()["tags"] == ["c"]
    assert response.headers["link"] == '</v2/team/app/tags/list?n=1&last=c>; rel="next"'


async def test_tags_n_zero(client: httpx.AsyncClient) -> None:
    await tag_all(client, "team/app", ["a", "b"])
    response = await client.get("/v2/team/app/tags/list?n=0")
    assert response.json()["tags"] == []
    assert "link" not in response.headers


@pytest.mark.parametrize("n", ["-1", "x", "1e3"])
async def test_tags_invalid_n(client: httpx.AsyncClient, n: str) -> None:
    await tag_all(client, "team/app", ["a"])
    response = await client.get(f"/v2/team/app/tags/list?n={n}")
    assert response.status_code == 400
    assert error_code(response) == "PAGINATION_NUMBER_INVALID"


async def test_tags_of_unknown_repository(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/team/nothing/tags/list")
    assert response.status_code == 404
    assert error_code(response) == "NAME_UNKNOWN"


async def test_tags_of_repository_with_only_blobs(client: httpx.AsyncClient) -> None:
    await push_blob(client, "team/blobs", b"data")
    response = await client.get("/v2/team/blobs/tags/list")
    assert response.json() == {"name": "team/blobs", "tags": []}


async def test_catalog(client: httpx.AsyncClient) -> None:
    for name in ("zeta", "alpha/one", "alpha/two", "mid"):
        await push_image(client, name, "v1")
    response = await client.get("/v2/_catalog")
    assert response.json() == {"repositories": ["alpha/one", "alpha/two", "mid", "zeta"]}
    response = await client.get("/v2/_catalog?n=2")
    assert response.json() == {"repositories": ["alpha/one", "alpha/two"]}
    assert response.headers["link"] == '</v2/_catalog?n=2&last=alpha/two>; rel="next"'
    response = await client.get("/v2/_catalog?n=2&last=alpha/two")
    assert response.json() == {"repositories": ["mid", "zeta"]}
    assert "link" not in response.headers


async def assert_lists_only_the_pushed_image(client: httpx.AsyncClient) -> None:
    """`_catalog` and the tag list show team/app:v1 alone."""
    response = await client.get("/v2/_catalog")
    assert response.status_code == 200
    assert response.json() == {"repositories": ["team/app"]}
    response = await client.get("/v2/team/app/tags/list")
    assert response.status_code == 200
    assert response.json() == {"name": "team/app", "tags": ["v1"]}


async def test_entries_naming_no_repository_or_tag_are_left_out(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    """Entries placed by hand under the catalog and a repository's tags: listing them
    would show names no request can use."""
    await push_image(client, "team/app", "v1")
    await driver.put(paths.catalog_marker("Team/App"), b"")  # upper case: no valid name
    await driver.put(paths.tag_link("team/app", "-v2"), b"")  # a tag never starts with -
    await assert_lists_only_the_pushed_image(client)


@pytest.mark.parametrize("driver", ["filesystem"], indirect=True)
async def test_entries_not_utf8_on_a_filesystem_are_left_out(
    client: httpx.AsyncClient, driver: FilesystemDriver
) -> None:
    """A folder whose name is not UTF-8 (made by hand) lists as a string with
    surrogates, which JSON cannot encode: it used to make the listing a 500."""
    await push_image(client, "team/app", "v1")
    for folder in (paths.catalog_dir(), paths.tags_dir("team/app")):
        os.mkdir(os.fsencode(driver.path(folder)) + b"/caf\xe9")
    await assert_lists_only_the_pushed_image(client)


async def test_catalog_empty(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v2/_catalog")).json() == {"repositories": []}


async def test_referrers(client: httpx.AsyncClient) -> None:
    subject_digest, subject = await push_image(client, "team/app", "v1")
    sbom, sbom_raw, response = await push_referrer(
        client,
        "team/app",
        subject,
        "application/vnd.example.sbom.v1",
        b"sbom",
        {"org.example": "yes"},
    )
    assert response.headers["oci-subject"] == subject_digest
    sig, sig_raw, _ = await push_referrer(
        client, "team/app", subject, None, b"sig", config_type="application/vnd.example.sig.config"
    )
    response = await client.get(f"/v2/team/app/referrers/{subject_digest}")
    assert response.status_code == 200
    assert response.headers["content-type"] == OCI_INDEX
    index = response.json()
    assert index["schemaVersion"] == 2 and index["mediaType"] == OCI_INDEX
    by_digest = {entry["digest"]: entry for entry in index["manifests"]}
    assert by_digest[sbom] == {
        "mediaType": OCI_MANIFEST,
        "digest": sbom,
        "size": len(sbom_raw),
        "artifactType": "application/vnd.example.sbom.v1",
        "annotations": {"org.example": "yes"},
    }
    # Without artifactType the config media type stands in.
    assert by_digest[sig]["artifactType"] == "application/vnd.example.sig.config"
    assert len(sig_raw) == by_digest[sig]["size"]


async def test_referrers_filter(client: httpx.AsyncClient) -> None:
    subject_digest, subject = await push_image(client, "team/app", "v1")
    sbom, _, _ = await push_referrer(
        client, "team/app", subject, "application/vnd.example.sbom.v1", b"1"
    )
    await push_referrer(client, "team/app", subject, "application/vnd.example.sig.v1", b"2")
    response = await client.get(
        f"/v2/team/app/referrers/{subject_digest}?artifactType=application/vnd.example.sbom.v1"
    )
    assert response.headers["oci-filters-applied"] == "artifactType"
    assert [entry["digest"] for entry in response.json()["manifests"]] == [sbom]


async def test_referrers_of_missing_subject(client: httpx.AsyncClient) -> None:
    """A referrer may be pushed before its subject exists."""
    ghost = b'{"not": "pushed"}'
    referrer, _, _ = await push_referrer(client, "team/app", ghost, "application/x", b"p")
    response = await client.get(f"/v2/team/app/referrers/{digest_of(ghost)}")
    assert [entry["digest"] for entry in response.json()["manifests"]] == [referrer]


async def test_referrers_empty_is_200(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/v2/team/none/referrers/{digest_of(b'x')}")
    assert response.status_code == 200
    assert response.json()["manifests"] == []
    assert "oci-filters-applied" not in response.headers


async def test_referrers_invalid_digest(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/team/app/referrers/sha256:nothex")
    assert response.status_code == 400
    assert error_code(response) == "DIGEST_INVALID"


async def test_deleting_referrer_removes_it_from_the_list(client: httpx.AsyncClient) -> None:
    subject_digest, subject = await push_image(client, "team/app", "v1")
    referrer, _, _ = await push_referrer(client, "team/app", subject, "application/x", b"p")
    assert (await client.delete(f"/v2/team/app/manifests/{referrer}")).status_code == 202
    response = await client.get(f"/v2/team/app/referrers/{subject_digest}")
    assert response.json()["manifests"] == []


async def test_referrers_are_per_repository(client: httpx.AsyncClient) -> None:
    subject_digest, subject = await push_image(client, "team/app", "v1")
    await push_referrer(client, "team/app", subject, "application/x", b"p")
    response = await client.get(f"/v2/team/other/referrers/{subject_digest}")
    assert response.json()["manifests"] == []


async def test_index_referrer_without_artifact_type(client: httpx.AsyncClient) -> None:
    subject_digest, subject = await push_image(client, "team/app", "v1")
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [],
        "subject": descriptor(OCI_MANIFEST, subject),
    }
    raw = json.dumps(index).encode()
    assert (await put_manifest(client, "team/app", "idx", raw, OCI_INDEX)).status_code == 201
    entry = (await client.get(f"/v2/team/app/referrers/{subject_digest}")).json()["manifests"][0]
    assert entry["mediaType"] == OCI_INDEX
    assert "artifactType" not in entry


async def test_referrer_with_lone_surrogate_is_refused(client: httpx.AsyncClient) -> None:
    subject_digest, subject = await push_image(client, "team/app", "v1")
    sbom, _, _ = await push_referrer(client, "team/app", subject, "application/vnd.x", b"1")
    for field in ('"artifactType": "application/\\ud800"', '"annotations": {"a": "\\ud800"}'):
        document = json.loads(image_manifest(b"{}", [b"2"]))
        document["subject"] = descriptor(OCI_MANIFEST, subject)
        raw = json.dumps(document).encode().replace(b"{", b"{" + field.encode() + b", ", 1)
        await push_blob(client, "team/app", b"2")
        response = await put_manifest(client, "team/app", digest_of(raw), raw, OCI_MANIFEST)
        assert response.status_code == 400
        assert error_code(response) == "MANIFEST_INVALID"
    response = await client.get(f"/v2/team/app/referrers/{subject_digest}")
    assert response.status_code == 200
    assert [entry["digest"] for entry in response.json()["manifests"]] == [sbom]


async def test_one_stored_referrer_never_breaks_the_listing(
    client: httpx.AsyncClient, driver: StorageDriver
) -> None:
    """An entry stored before manifests were checked for lone surrogates still lists."""
    subject_digest, subject = await push_image(client, "team/app", "v1")
    sbom, _, _ = await push_referrer(client, "team/app", subject, "application/vnd.x", b"1")
    old = digest_of(b"stored by an older version")
    entry = {"mediaType": OCI_MANIFEST, "digest": old, "size": 9, "artifactType": "a/\ud800"}
    key = paths.referrer_entry("team/app", Digest.parse(subject_digest), Digest.parse(old))
    await driver.put(key, json.dumps(entry).encode())
    revision = {"mediaType": OCI_MANIFEST, "subject": subject_digest}  # listed only with it
    await driver.put(
        paths.revision_link("team/app", Digest.parse(old)), json.dumps(revision).encode()
    )
    response = await client.get(f"/v2/team/app/referrers/{subject_digest}")
    assert response.status_code == 200
    assert sorted(entry["digest"] for entry in response.json()["manifests"]) == sorted([sbom, old])


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/v2", "/v2/"),
        ("/v2/_catalog/?n=1", "/v2/_catalog?n=1"),
        ("/v2/team/app/tags/list/", "/v2/team/app/tags/list"),
    ],
)
async def test_slash_redirect_is_relative(
    client: httpx.AsyncClient, path: str, location: str
) -> None:
    """The Host header is the client's to forge: a redirect never names it."""
    response = await client.get(path, headers={"Host": "evil.example"})
    assert response.status_code == 307
    assert response.headers["location"] == location
