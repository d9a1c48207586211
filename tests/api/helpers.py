"""Small builders for API tests: blobs, manifests and images pushed through the API."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx
from starlette.types import ASGIApp

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest_of(data), "size": len(data), **extra}


async def push_blob(client: httpx.AsyncClient, name: str, data: bytes) -> str:
    digest = digest_of(data)
    response = await client.post(f"/v2/{name}/blobs/uploads/?digest={digest}", content=data)
    assert response.status_code == 201, response.text
    return digest


def image_manifest(
    config: bytes,
    layers: list[bytes],
    media_type: str = OCI_MANIFEST,
    **extra: Any,
) -> bytes:
    docker = media_type == DOCKER_MANIFEST
    document = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": descriptor(DOCKER_CONFIG if docker else OCI_CONFIG, config),
        "layers": [descriptor(DOCKER_LAYER if docker else OCI_LAYER, layer) for layer in layers],
        **extra,
    }
    return json.dumps(document).encode()


async def push_image(
    client: httpx.AsyncClient,
    name: str,
    reference: str,
    seed: str = "x",
    media_type: str = OCI_MANIFEST,
    **extra: Any,
) -> tuple[str, bytes]:
    """Push config, one layer and a manifest; returns the manifest digest and bytes."""
    config = json.dumps({"seed": seed}).encode()
    layer = f"layer of {seed}".encode()
    await push_blob(client, name, config)
    await push_blob(client, name, layer)
    manifest = image_manifest(config, [layer], media_type, **extra)
    response = await put_manifest(client, name, reference, manifest, media_type)
    assert response.status_code == 201, response.text
    return digest_of(manifest), manifest


async def put_manifest(
    client: httpx.AsyncClient, name: str, reference: str, body: bytes, media_type: str
) -> httpx.Response:
    return await client.put(
        f"/v2/{name}/manifests/{reference}", content=body, headers={"Content-Type": media_type}
    )


async def push_referrer(
    client: httpx.AsyncClient,
    name: str,
    subject: bytes,
    artifact_type: str | None,
    payload: bytes,
    annotations: dict[str, str] | None = None,
    config_type: str = OCI_EMPTY,
) -> tuple[str, bytes, httpx.Response]:
    await push_blob(client, name, b"{}")
    await push_blob(client, name, payload)
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(config_type, b"{}"),
        "layers": [descriptor("application/octet-stream", payload)],
        "subject": descriptor(OCI_MANIFEST, subject),
    }
    if artifact_type:
        document["artifactType"] = artifact_type
    if annotations:
        document["annotations"] = annotations
    raw = json.dumps(document).encode()
    response = await put_manifest(client, name, digest_of(raw), raw, OCI_MANIFEST)
    assert response.status_code == 201, response.text
    return digest_of(raw), raw, response


def error_code(response: httpx.Response) -> str:
    """The first error code of a spec error body (asserting its shape on the way)."""
    body = response.json()
    assert isinstance(body["errors"], list) and body["errors"]
    assert isinstance(body["errors"][0]["message"], str)
    return body["errors"][0]["code"]


async def raw_request(
    app: ASGIApp,
    method: str,
    path: str,
    query: str = "",
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """Send a request exactly as given: clients normalise `..` away and always send a
    truthful Content-Length; attackers and broken clients don't."""
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:
            return {"type": "http.disconnect"}
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    raw_headers = [(b"host", b"registry.test")]
    raw_headers += [(k.encode(), v.encode("latin-1")) for k, v in (headers or {}).items()]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(),
        "query_string": query.encode(), "root_path": "", "headers": raw_headers,
        "client": ("127.0.0.1", 1), "server": ("registry.test", 80), "state": {},
    }  # fmt: skip
    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
