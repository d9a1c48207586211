"""Manifest endpoints: GET/HEAD (end-3), PUT with optional `?tag=` (end-7), DELETE (end-9)."""

from __future__ import annotations

import asyncio
import time

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from oci.errors import ErrorCode, RegistryError
from oci.manifests import Descriptor, Manifest, parse_manifest
from oci.references import Digest, is_digest, is_tag, parse_tag
from registry import immutable_tags
from registry.config import ManifestValidationConfig
from registry.events.record import emit
from registry.routes.common import (
    config,
    empty,
    manifest_location,
    pull_target,
    read_limited,
    refresh_usage_after,
    refuse_proxied_writes,
    repository,
    require_delete_enabled,
    store,
    under_upstream_prefix,
)
from storage.manifests import StoredManifest
from storage.store import Store

MAX_TAGS_PER_PUT = 100


def _unknown(reference: str) -> RegistryError:
    return RegistryError(ErrorCode.MANIFEST_UNKNOWN, detail={"reference": reference[:160]})


async def _stored(store: Store, name: str, reference: str) -> StoredManifest | None:
    """The manifest `reference` names in repository `name`, if it is stored there."""
    if is_digest(reference):
        return await store.manifests.get(name, Digest.parse(reference))
    if not is_tag(reference):  # no such tag can exist (as the reference registry answers)
        return None
    digest = await store.manifests.resolve(name, reference)
    return None if digest is None else await store.manifests.get(name, digest)


async def get_manifest(request: Request) -> Response:
    name = repository(request)
    reference = request.path_params["reference"]
    warning = None
    manifest: Manifest | StoredManifest | None = None
    if not under_upstream_prefix(request, name):  # a local pull asks no upstream route
        manifest = await _stored(store(request), name, reference)
    if manifest is None and (pulled := await pull_target(request, name)):
        cache, target = pulled
        name = target.local
        manifest, warning = await cache.manifest(target, reference)
    if manifest is None:
        raise _unknown(reference)
    digest = manifest.digest
    if request.method == "GET":  # HEAD only checks; a conditional GET (304) is a pull too
        store(request).manifests.pulls.record(name, digest)
    etag = f'"{digest}"'
    headers = {
        "Docker-Content-Digest": str(digest),
        "ETag": etag,
        "Content-Type": manifest.media_type,
        "Content-Length": str(len(manifest.raw)),
    }
    if warning:
        headers["Warning"] = warning
    if request.headers.get("if-none-match") == etag:
        del headers["Content-Length"]
        return Response(status_code=304, headers=headers)
    if request.method == "HEAD":
        return Response(headers=headers)
    tag = None if is_digest(reference) else reference
    await emit(
        request,
        "pull",
        name,
        [(digest, tag)],
        media_type=manifest.media_type,
        size=len(manifest.raw),
    )
    return Response(manifest.raw, headers=headers)


def required_blobs(manifest: Manifest, policy: ManifestValidationConfig) -> list[Descriptor]:
    """The blobs of an image manifest that this repository must hold under `policy`."""
    if policy.allow_missing_layers == "all":
        layers: list[Descriptor] = []
    elif policy.allow_missing_layers == "foreign":
        layers = [layer for layer in manifest.layers if not layer.nondistributable]
    else:
        layers = [
            layer for layer in manifest.layers if not (layer.nondistributable and layer.has_urls)
        ]
    return [manifest.config, *layers] if manifest.config is not None else layers


async def _vouched_child(store: Store, name: str, digest: Digest) -> bool:
    return await store.manifests.exists(name, digest) and await store.blobs.vouch(digest)


async def _check_references(
    store: Store, name: str, manifest: Manifest, policy: ManifestValidationConfig
) -> tuple[list[Descriptor], tuple[Descriptor, ...]]:
    """The blobs and child manifests the manifest names must be in this repository,
    each vouched for (see collector/): none of them is collected within the grace.
    Returns those it checked."""
    blobs = required_blobs(manifest, policy)
    children = () if policy.allow_missing_manifests else manifest.children
    blob_sizes = asyncio.gather(*(store.blobs.vouched_size(b.digest, name) for b in blobs))
    present = asyncio.gather(*(_vouched_child(store, name, c.digest) for c in children))
    for blob, size in zip(blobs, await blob_sizes, strict=True):
        if size is None:
            raise RegistryError(
                ErrorCode.MANIFEST_BLOB_UNKNOWN,
                f"blob {blob.digest} is not in repository {name}",
                detail={"digest": str(blob.digest)},
            )
    for child, found in zip(children, await present, strict=True):
        if not found:
            raise RegistryError(
                ErrorCode.MANIFEST_BLOB_UNKNOWN,
                f"manifest {child.digest} is not in repository {name}",
                detail={"digest": str(child.digest)},
            )
    return blobs, children


async def put_manifest(request: Request) -> Response:
    name = repository(request)
    refuse_proxied_writes(request, name)
    reference = request.path_params["reference"]
    query_tags = [parse_tag(tag) for tag in request.query_params.getlist("tag")]
    if len(query_tags) > MAX_TAGS_PER_PUT:
        raise RegistryError(
            ErrorCode.UNSUPPORTED, f"at most {MAX_TAGS_PER_PUT} tags per request", status=414
        )
    if is_digest(reference):
        expected: Digest | None = Digest.parse(reference)
        tags = query_tags
    else:
        expected, tags = None, [parse_tag(reference), *query_tags]
    raw = await read_limited(request, config(request).uploads.manifest_max_bytes)
    digest = Digest.of(raw, expected.algorithm if expected else "sha256")
    if expected is not None and digest != expected:
        raise RegistryError(
            ErrorCode.DIGEST_INVALID,
            f"manifest has digest {digest}, not {expected}",
            detail={"digest": str(expected)},
        )
    manifest = parse_manifest(raw, request.headers.get("content-type"), digest)
    policy = config(request).validation.manifests
    blobs, children = await _check_references(store(request), name, manifest, policy)
    tags = list(dict.fromkeys(tags))
    rules = config(request).immutable_tags
    immutable = await immutable_tags.check_push(rules, store(request), name, tags, digest)
    await store(request).manifests.put(name, manifest, tags, blobs, children, immutable)
    targets = [(digest, tag) for tag in tags] or [(digest, None)]
    await emit(request, "push", name, targets, media_type=manifest.media_type, size=len(raw))
    headers = {"Location": manifest_location(name, digest), "Docker-Content-Digest": str(digest)}
    if manifest.subject is not None:
        headers["OCI-Subject"] = str(manifest.subject)
    response = empty(201, headers)
    response.background = refresh_usage_after(request, name, pushed_at=time.time())
    for tag in query_tags:
        response.headers.append("OCI-Tag", tag)
    return response


async def delete_reference(request: Request, name: str, reference: str) -> BackgroundTask:
    """Delete a tag, or a manifest with every tag on it: the one delete path of the API
    and the web UI (immutable tags, referencing manifests refused, the event stored).
    Returns the usage refresh to run after the response."""
    refuse_proxied_writes(request, name)
    require_delete_enabled(request)
    manifests = store(request).manifests
    rules = config(request).immutable_tags
    if is_digest(reference):
        digest: Digest | None = Digest.parse(reference)
        tag = None
        await immutable_tags.check_delete(rules, store(request), name, digest)
        deleted = await manifests.delete(name, digest)
    else:
        tag = parse_tag(reference)
        await immutable_tags.check_untag(rules, store(request), name, tag)
        digest = await manifests.resolve(name, tag)
        deleted = await manifests.untag(name, tag)
    if not deleted:
        raise _unknown(reference)
    await emit(request, "delete", name, [(digest, tag)])  # no digest: a half-written tag
    return refresh_usage_after(request, name)


async def delete_manifest(request: Request) -> Response:
    reference = request.path_params["reference"]
    response = empty(202)
    response.background = await delete_reference(request, repository(request), reference)
    return response
