"""`validation.manifests`: what a pushed manifest may name that its repository lacks."""

from __future__ import annotations

import json

import httpx
import pytest
from starlette.applications import Starlette

from tests.api.helpers import (
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    descriptor,
    digest_of,
    error_code,
    image_manifest,
    push_blob,
    push_image,
    put_manifest,
)

NONDISTRIBUTABLE = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
URLS = ["https://store.example.com/blobs/sha256/0"]


def _image(layers: list[dict[str, object]]) -> bytes:
    document = json.loads(image_manifest(b"{}", []))
    document["layers"] = layers
    return json.dumps(document).encode()


# What the spec's newest conformance suite pushes with SPARSE on: an image without one
# of its ordinary layers (and an index without one of its platforms, below).
SPARSE = _image([descriptor(OCI_LAYER, b"present"), descriptor(OCI_LAYER, b"never pushed")])
FOREIGN = _image([descriptor(NONDISTRIBUTABLE, b"windows base")])
FOREIGN_WITH_URLS = _image([descriptor(NONDISTRIBUTABLE, b"windows base", urls=URLS)])


@pytest.mark.parametrize(
    ("policy", "accepted"),
    [("none", [FOREIGN_WITH_URLS]),
     ("foreign", [FOREIGN_WITH_URLS, FOREIGN]),
     ("all", [FOREIGN_WITH_URLS, FOREIGN, SPARSE])],
)  # fmt: skip
async def test_allow_missing_layers(
    app: Starlette, client: httpx.AsyncClient, policy: str, accepted: list[bytes]
) -> None:
    app.state.config.validation.manifests.allow_missing_layers = policy
    await push_blob(client, "team/app", b"{}")
    await push_blob(client, "team/app", b"present")
    for raw in (FOREIGN_WITH_URLS, FOREIGN, SPARSE):
        response = await put_manifest(client, "team/app", digest_of(raw), raw, OCI_MANIFEST)
        if raw in accepted:
            assert response.status_code == 201, response.text
            fetched = await client.get(f"/v2/team/app/manifests/{digest_of(raw)}")
            assert fetched.content == raw
        else:
            assert response.status_code == 400
            assert error_code(response) == "MANIFEST_BLOB_UNKNOWN"


async def test_the_config_is_always_required(app: Starlette, client: httpx.AsyncClient) -> None:
    app.state.config.validation.manifests.allow_missing_layers = "all"
    response = await put_manifest(client, "team/app", "v1", _image([]), OCI_MANIFEST)
    assert response.status_code == 400
    assert error_code(response) == "MANIFEST_BLOB_UNKNOWN"


@pytest.mark.parametrize("allowed", [False, True])
async def test_allow_missing_manifests(
    app: Starlette, client: httpx.AsyncClient, allowed: bool
) -> None:
    app.state.config.validation.manifests.allow_missing_manifests = allowed
    present, raw = await push_image(client, "team/app", "amd64")
    missing = descriptor(OCI_MANIFEST, b"an arm64 image never pushed")
    missing["platform"] = {"os": "linux", "architecture": "arm64"}
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [descriptor(OCI_MANIFEST, raw), missing],
        }
    ).encode()
    assert digest_of(raw) == present
    response = await put_manifest(client, "team/app", "sparse-index", index, OCI_INDEX)
    if allowed:
        assert response.status_code == 201, response.text
        assert (await client.get("/v2/team/app/manifests/sparse-index")).content == index
    else:
        assert response.status_code == 400
        assert error_code(response) == "MANIFEST_BLOB_UNKNOWN"
