"""Manifests: PUT (end-7a/7b), GET/HEAD (end-3), DELETE (end-9) and validation."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.api.helpers import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
    descriptor,
    digest_of,
    error_code,
    image_manifest,
    push_blob,
    push_image,
    put_manifest,
)


@pytest.mark.parametrize("media_type", [OCI_MANIFEST, DOCKER_MANIFEST])
async def test_put_and_get_image_manifest(client: httpx.AsyncClient, media_type: str) -> None:
    digest, raw = await push_image(client, "team/app", "v1", media_type=media_type)
    for reference in ("v1", digest):
        response = await client.get(f"/v2/team/app/manifests/{reference}")
        assert response.status_code == 200
        assert response.content == raw
        assert response.headers["content-type"] == media_type
        assert response.headers["docker-content-digest"] == digest
        assert response.headers["content-length"] == str(len(raw))
        head = await client.head(f"/v2/team/app/manifests/{reference}")
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["content-length"] == str(len(raw))
        assert head.headers["docker-content-digest"] == digest


async def test_put_response_headers(client: httpx.AsyncClient) -> None:
    config, layer = b"{}", b"layer"
    await push_blob(client, "team/app", config)
    await push_blob(client, "team/app", layer)
    raw = image_manifest(config, [layer])
    response = await put_manifest(client, "team/app", "v1", raw, OCI_MANIFEST)
    assert response.status_code == 201
    assert response.headers["location"] == f"/v2/team/app/manifests/{digest_of(raw)}"
    assert response.headers["docker-content-digest"] == digest_of(raw)
    assert "oci-subject" not in response.headers


async def test_bytes_are_stored_exactly(client: httpx.AsyncClient) -> None:
    config, layer = b"{}", b"layer"
    await push_blob(client, "team/app", config)
    await push_blob(client, "team/app", layer)
    document = json.loads(image_manifest(config, [layer]))
    raw = json.dumps(document, indent=7, sort_keys=True).encode() + b"\n\n"
    assert (await put_manifest(client, "team/app", "odd", raw, OCI_MANIFEST)).status_code == 201
    assert (await client.get("/v2/team/app/manifests/odd")).content == raw


async def test_put_by_digest_with_tags(client: httpx.AsyncClient) -> None:
    config, layer = b"{}", b"layer"
    await push_blob(client, "team/app", config)
    await push_blob(client, "team/app", layer)
    raw = image_manifest(config, [layer])
    digest = digest_of(raw)
    response = await client.put(
        f"/v2/team/app/manifests/{digest}?tag=1.2.3&tag=1.2&tag=latest",
        content=raw,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert response.status_code == 201
    assert response.headers.get_list("oci-tag") == ["1.2.3", "1.2", "latest"]
    tags = (await client.get("/v2/team/app/tags/list")).json()["tags"]
    assert tags == ["1.2", "1.2.3", "latest"]
    for tag in tags:
        assert (await client.get(f"/v2/team/app/manifests/{tag}")).content == raw


async def test_put_by_digest_without_tags_is_untagged(client: httpx.AsyncClient) -> None:
    config, layer = b"{}", b"layer"
    await push_blob(client, "team/app", config)
    await push_blob(client, "team/app", layer)
    raw = image_manifest(config, [layer])
    response = await put_manifest(client, "team/app", digest_of(raw), raw, OCI_MANIFEST)
    assert response.status_code == 201
    assert (await client.get("/v2/team/app/tags/list")).json()["tags"] == []
    assert (await client.get(f"/v2/team/app/manifests/{digest_of(raw)}")).content == raw


async def test_put_by_wrong_digest(client: httpx.AsyncClient) -> None:
    config, layer = b"{}", b"layer"
    await push_blob(client, "team/app", config)
    await push_blob(client, "team/app", layer)
    raw = image_manifest(config, [layer])
    wrong = digest_of(b"other")
    response = await put_manifest(client, "team/app", wrong, raw, OCI_MANIFEST)
    assert response.status_code == 400
    assert error_code(response) == "DIGEST_INVALID"
    assert (await client.get(f"/v2/team/app/manifests/{digest_of(raw)}")).status_code == 404


async def test_put_by_sha512_digest(client: httpx.AsyncClient) -> None:
    config, layer = b"{}", b"layer"
    await push_blob(client, "team/app", config)
    await push_blob(client, "team/app", layer)
    raw = image_manifest(config, [layer])
    digest = digest_of(raw, "sha512")
    response = await put_manifest(client, "team/app", digest, raw, OCI_MANIFEST)
    assert response.status_code == 201
    assert response.headers["docker-content-digest"] == digest
    assert (await client.get(f"/v2/team/app/manifests/{digest}")).content == raw


@pytest.mark.parametrize(
    ("index_type", "child_type"), [(OCI_INDEX, OCI_MANIFEST), (DOCKER_LIST, DOCKER_MANIFEST)]
)
async def test_index_of_manifests(
    client: httpx.AsyncClient, index_type: str, child_type: str
) -> None:
    amd64, amd64_raw = await push_image(client, "team/app", amd64_tag := "amd64", "a", child_type)
    arm64, arm64_raw = await push_image(client, "team/app", "arm64", "b", child_type)
    index = {
        "schemaVersion": 2,
        "mediaType": index_type,
        "manifests": [
            {
                **descriptor(child_type, amd64_raw),
                "platform": {"architecture": "amd64", "os": "linux"},
            },
            {
                **descriptor(child_type, arm64_raw),
                "platform": {"architecture": "arm64", "os": "linux"},
            },
        ],
    }
    raw = json.dumps(index).encode()
    response = await put_manifest(client, "team/app", "multi", raw, index_type)
    assert response.status_code == 201, response.text
    got = await client.get("/v2/team/app/manifests/multi")
    assert got.content == raw
    assert got.headers["content-type"] == index_type
    assert amd64_tag and amd64 != arm64


async def test_index_with_unknown_child(client: httpx.AsyncClient) -> None:
    missing = image_manifest(b"{}", [b"x"])
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [descriptor(OCI_MANIFEST, missing)],
    }
    response = await put_manifest(
        client, "team/app", "multi", json.dumps(index).encode(), OCI_INDEX
    )
    assert response.status_code == 400
    assert error_code(response) == "MANIFEST_BLOB_UNKNOWN"


async def test_index_child_from_another_repository(client: httpx.AsyncClient) -> None:
    _, child = await push_image(client, "team/other", "v1")
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [descriptor(OCI_MANIFEST, child)],
    }
    response = await put_manifest(
        client, "team/app", "multi", json.dumps(index).encode(), OCI_INDEX
    )
    assert response.status_code == 400
    assert error_code(response) == "MANIFEST_BLOB_UNKNOWN"


async def test_missing_layer(client: httpx.AsyncClient) -> None:
    await push_blob(client, "team/app", b"{}")
    raw = image_manifest(b"{}", [b"never pushed"])
    response = await put_manifest(client, "team/app", "v1", raw, OCI_MANIFEST)
    assert response.status_code == 400
    assert error_code(response) == "MANIFEST_BLOB_UNKNOWN"
    assert response.json()["errors"][0]["detail"]["digest"] == digest_of(b"never pushed")


async def test_missing_config(client: httpx.AsyncClient) -> None:
    await push_blob(client, "team/app", b"layer")
    raw = image_manifest(b"{}", [b"layer"])
    response = await put_manifest(client, "team/app", "v1", raw, OCI_MANIFEST)
    assert error_code(response) == "MANIFEST_BLOB_UNKNOWN"


async def test_blob_from_another_repository_is_not_enough(client: httpx.AsyncClient) -> None:
    await push_blob(client, "team/other", b"{}")
    await push_blob(client, "team/other", b"layer")
    raw = image_manifest(b"{}", [b"layer"])
    response = await put_manifest(client, "team/app", "v1", raw, OCI_MANIFEST)
    assert error_code(response) == "MANIFEST_BLOB_UNKNOWN"


async def test_foreign_layer_need_not_be_present(client: httpx.AsyncClient) -> None:
    await push_blob(client, "team/app", b"{}")
    foreign = descriptor(
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        b"windows base",
        urls=["https://example.invalid/layer"],
    )
    document = json.loads(image_manifest(b"{}", [], DOCKER_MANIFEST))
    document["layers"] = [foreign]
    response = await put_manifest(
        client, "team/app", "win", json.dumps(document).encode(), DOCKER_MANIFEST
    )
    assert response.status_code == 201


async def test_artifact_with_empty_config(client: httpx.AsyncClient) -> None:
    empty, payload = b"{}", b"sbom contents"
    await push_blob(client, "team/app", empty)
    await push_blob(client, "team/app", payload)
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom.v1",
        "config": descriptor(OCI_EMPTY, empty),
        "layers": [descriptor("application/spdx+json", payload)],
    }
    response = await put_manifest(
        client, "team/app", "sbom", json.dumps(document).encode(), OCI_MANIFEST
    )
    assert response.status_code == 201


async def test_artifact_with_custom_config_type(client: httpx.AsyncClient) -> None:
    config = b'{"kind": "helm"}'
    await push_blob(client, "team/app", config)
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.cncf.helm.config.v1+json", config),
        "layers": [],
    }
    response = await put_manifest(
        client, "team/app", "chart", json.dumps(document).encode(), OCI_MANIFEST
    )
    assert response.status_code == 201


async def test_manifest_without_media_type_field(client: httpx.AsyncClient) -> None:
    await push_blob(client, "team/app", b"{}")
    document = json.loads(image_manifest(b"{}", []))
    del document["mediaType"]
    raw = json.dumps(document).encode()
    response = await put_manifest(client, "team/app", "plain", raw, OCI_MANIFEST)
    assert response.status_code == 201
    assert (await client.get("/v2/team/app/manifests/plain")).headers[
        "content-type"
    ] == OCI_MANIFEST


async def test_content_type_parameters_are_ignored(client: httpx.AsyncClient) -> None:
    await push_blob(client, "team/app", b"{}")
    raw = image_manifest(b"{}", [])
    response = await put_manifest(client, "team/app", "v1", raw, OCI_MANIFEST + "; charset=utf-8")
    assert response.status_code == 201


def _doc(**fields: object) -> bytes:
    return json.dumps({"schemaVersion": 2, **fields}).encode()


VALID_IMAGE = image_manifest(b"{}", [])
INVALID_MANIFESTS = {
    "json": (b"{not json", OCI_MANIFEST, "not valid JSON"),
    "array": (b"[1, 2]", OCI_MANIFEST, "JSON object"),
    "no-config": (_doc(mediaType=OCI_MANIFEST), OCI_MANIFEST, "config"),
    "version": (_doc(mediaType=OCI_MANIFEST, schemaVersion=3), OCI_MANIFEST, "schemaVersion"),
    "type-mismatch": (VALID_IMAGE, OCI_INDEX, "does not match Content-Type"),
    "size": (VALID_IMAGE.replace(b'"size": 2', b'"size": -2'), OCI_MANIFEST, "size"),
    "digest": (VALID_IMAGE.replace(b"sha256:", b"sha256:zz"), OCI_MANIFEST, "digest"),
    "type": (_doc(mediaType="text/plain"), "text/plain", "unsupported"),
    "list": (_doc(mediaType=OCI_INDEX, manifests={}), OCI_INDEX, "manifests"),
    "annotations": (
        _doc(mediaType=OCI_INDEX, manifests=[], annotations={"a": 1}),
        OCI_INDEX,
        "annotations",
    ),
    "version-float": (VALID_IMAGE.replace(b'"schemaVersion": 2', b'"schemaVersion": 2.0'),
                      OCI_MANIFEST, "schemaVersion"),
    "nan": (VALID_IMAGE.replace(b"{", b'{"x": NaN, ', 1), OCI_MANIFEST, "NaN"),
    "infinity": (VALID_IMAGE.replace(b"{", b'{"x": -Infinity, ', 1), OCI_MANIFEST, "Infinity"),
    "long-integer": (VALID_IMAGE.replace(b"{", b'{"x": ' + b"9" * 4301 + b", ", 1),
                     OCI_MANIFEST, "digits"),
    "long-size": (VALID_IMAGE.replace(b'"size": 2', b'"size": ' + b"9" * 4301),
                  OCI_MANIFEST, "digits"),
    "huge-size": (VALID_IMAGE.replace(b'"size": 2', b'"size": 9223372036854775808'),
                  OCI_MANIFEST, "size"),
    "deep": (VALID_IMAGE.replace(b"{", b'{"x": ' + b"[" * 1000 + b"]" * 1000 + b", ", 1),
             OCI_MANIFEST, "nests deeper"),
    "very-deep": (VALID_IMAGE.replace(b"{", b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b", ", 1),
                  OCI_MANIFEST, "nests deeper"),
    "surrogate-annotation": (_doc(mediaType=OCI_INDEX, manifests=[]).replace(
        b"{", b'{"annotations": {"a": "\\ud800"}, ', 1), OCI_INDEX, "surrogate"),
    "surrogate-artifact-type": (VALID_IMAGE.replace(b"{", b'{"artifactType": "a/\\udfff", ', 1),
                                OCI_MANIFEST, "surrogate"),
}  # fmt: skip


@pytest.mark.parametrize(
    ("body", "content_type", "fragment"),
    INVALID_MANIFESTS.values(),
    ids=INVALID_MANIFESTS.keys(),
)
async def test_invalid_manifests(
    client: httpx.AsyncClient, body: bytes, content_type: str, fragment: str
) -> None:
    await push_blob(client, "team/app", b"{}")
    response = await put_manifest(client, "team/app", "bad", body, content_type)
    assert response.status_code == 400
    assert error_code(response) == "MANIFEST_INVALID"
    assert fragment in response.json()["errors"][0]["message"]


@pytest.mark.parametrize(
    "media_type",
    [
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    ],
)
async def test_schema1_refused_with_reason(client: httpx.AsyncClient, media_type: str) -> None:
    raw = json.dumps(
        {"schemaVersion": 1, "name": "team/app", "tag": "old", "fsLayers": []}
    ).encode()
    response = await put_manifest(client, "team/app", "old", raw, media_type)
    assert response.status_code == 400
    assert error_code(response) == "MANIFEST_INVALID"
    assert "schema 1" in response.json()["errors"][0]["message"]


async def test_manifest_too_large(client: httpx.AsyncClient) -> None:
    raw = b'{"schemaVersion": 2, "padding": "' + b"x" * (4 << 20) + b'"}'
    response = await put_manifest(client, "team/app", "big", raw, OCI_MANIFEST)
    assert response.status_code == 413
    assert error_code(response) == "SIZE_INVALID"


async def test_manifest_too_large_without_content_length(client: httpx.AsyncClient) -> None:
    async def body():
        for _ in range(5):
            yield b"x" * (1 << 20)

    response = await client.put(
        "/v2/team/app/manifests/big", content=body(), headers={"Content-Type": OCI_MANIFEST}
    )
    assert response.status_code == 413


@pytest.mark.parametrize("tag", ["-lead", ".dot", "a" * 129, "has space", "ünï"])
async def test_invalid_tag(client: httpx.AsyncClient, tag: str) -> None:
    raw = image_manifest(b"{}", [])
    response = await put_manifest(client, "team/app", tag, raw, OCI_MANIFEST)
    assert response.status_code == 400
    assert error_code(response) == "TAG_INVALID"


async def test_invalid_query_tag(client: httpx.AsyncClient) -> None:
    await push_blob(client, "team/app", b"{}")
    raw = image_manifest(b"{}", [])
    response = await client.put(
        f"/v2/team/app/manifests/{digest_of(raw)}?tag=ok&tag=-bad",
        content=raw,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert response.status_code == 400
    assert error_code(response) == "TAG_INVALID"
    assert (await client.get("/v2/team/app/manifests/ok")).status_code == 404


async def test_too_many_query_tags(client: httpx.AsyncClient) -> None:
    raw = image_manifest(b"{}", [])
    query = "&".join(f"tag=t{i}" for i in range(101))
    response = await client.put(f"/v2/team/app/manifests/{digest_of(raw)}?{query}", content=raw)
    assert response.status_code == 414


async def test_retag_moves_tag(client: httpx.AsyncClient) -> None:
    first, _ = await push_image(client, "team/app", "latest", "one")
    second, _ = await push_image(client, "team/app", "latest", "two")
    assert first != second
    response = await client.head("/v2/team/app/manifests/latest")
    assert response.headers["docker-content-digest"] == second
    assert (await client.get(f"/v2/team/app/manifests/{first}")).status_code == 200


@pytest.mark.parametrize("reference", [".INVALID_MANIFEST_NAME", "-lead", "a" * 129, "ünï"])
async def test_invalid_tag_is_an_unknown_manifest(
    client: httpx.AsyncClient, reference: str
) -> None:
    """As the reference registry answers, and the spec's v1.1.1 suite wants."""
    await push_image(client, "team/app", "v1")
    for method in ("GET", "HEAD"):
        response = await client.request(method, f"/v2/team/app/manifests/{reference}")
        assert response.status_code == 404
    assert error_code(await client.get(f"/v2/team/app/manifests/{reference}")) == (
        "MANIFEST_UNKNOWN"
    )


async def test_unknown_manifest(client: httpx.AsyncClient) -> None:
    await push_image(client, "team/app", "v1")
    for reference in ("nope", digest_of(b"nothing")):
        for method in ("GET", "HEAD"):
            response = await client.request(method, f"/v2/team/app/manifests/{reference}")
            assert response.status_code == 404
        assert (
            error_code(await client.get(f"/v2/team/app/manifests/{reference}"))
            == "MANIFEST_UNKNOWN"
        )


async def test_manifest_of_another_repository_is_unknown(client: httpx.AsyncClient) -> None:
    digest, _ = await push_image(client, "team/app", "v1")
    assert (await client.get(f"/v2/team/other/manifests/{digest}")).status_code == 404


async def test_if_none_match(client: httpx.AsyncClient) -> None:
    digest, _ = await push_image(client, "team/app", "v1")
    response = await client.get(
        "/v2/team/app/manifests/v1", headers={"If-None-Match": f'"{digest}"'}
    )
    assert response.status_code == 304


async def test_delete_by_tag_removes_only_the_tag(client: httpx.AsyncClient) -> None:
    digest, _ = await push_image(client, "team/app", "v1")
    await client.put(
        f"/v2/team/app/manifests/{digest}?tag=v2",
        content=(await client.get(f"/v2/team/app/manifests/{digest}")).content,
        headers={"Content-Type": OCI_MANIFEST},
    )
    response = await client.delete("/v2/team/app/manifests/v1")
    assert response.status_code == 202
    assert (await client.get("/v2/team/app/manifests/v1")).status_code == 404
    assert (await client.get("/v2/team/app/manifests/v2")).status_code == 200
    assert (await client.get(f"/v2/team/app/manifests/{digest}")).status_code == 200
    response = await client.delete("/v2/team/app/manifests/v1")
    assert response.status_code == 404
    assert error_code(response) == "MANIFEST_UNKNOWN"


async def test_delete_by_digest_removes_manifest_and_its_tags(client: httpx.AsyncClient) -> None:
    digest, raw = await push_image(client, "team/app", "v1")
    await client.put(
        f"/v2/team/app/manifests/{digest}?tag=v2&tag=v3",
        content=raw,
        headers={"Content-Type": OCI_MANIFEST},
    )
    other, _ = await push_image(client, "team/app", "keep", "other")
    response = await client.delete(f"/v2/team/app/manifests/{digest}")
    assert response.status_code == 202
    for reference in ("v1", "v2", "v3", digest):
        assert (await client.get(f"/v2/team/app/manifests/{reference}")).status_code == 404
    assert (await client.get("/v2/team/app/tags/list")).json()["tags"] == ["keep"]
    assert (await client.get(f"/v2/team/app/manifests/{other}")).status_code == 200
    assert (await client.delete(f"/v2/team/app/manifests/{digest}")).status_code == 404


async def test_delete_manifest_disabled(app, client: httpx.AsyncClient) -> None:
    digest, _ = await push_image(client, "team/app", "v1")
    app.state.config.storage.delete.enabled = False
    for reference in ("v1", digest):
        response = await client.delete(f"/v2/team/app/manifests/{reference}")
        assert response.status_code == 405
        assert error_code(response) == "UNSUPPORTED"
    assert (await client.get("/v2/team/app/manifests/v1")).status_code == 200


async def test_manifest_is_pullable_as_blob_only_when_pushed_as_blob(
    client: httpx.AsyncClient,
) -> None:
    digest, _ = await push_image(client, "team/app", "v1")
    assert (await client.get(f"/v2/team/app/blobs/{digest}")).status_code == 404
