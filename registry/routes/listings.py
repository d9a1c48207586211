"""Listings: the API base (end-1), tags (end-8), referrers (end-12) and `_catalog`."""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from oci.errors import ErrorCode, RegistryError
from oci.manifests import OCI_INDEX
from registry.auth.caller import may_pull
from registry.routes.common import (
    digest_param,
    page,
    pull_target,
    repository,
    store,
    under_upstream_prefix,
)

CATALOG_PAGE = 1000


class ListingResponse(JSONResponse):
    """JSON encoded by orjson: a page of 1,000 tags in ~5 µs, where the standard
    library's encoder took ~45 µs, a fifth of the CPU a tag list cost the server
    (bench/RESULTS.md). Names and tags are validated ASCII, so the bytes are the same."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


async def api_base(request: Request) -> Response:
    return ListingResponse({})


async def list_tags(request: Request) -> Response:
    """A local repository's tags, else the upstream's (a name under its prefix, or no
    local repository's beside a default upstream), else those cached of it."""
    name = repository(request)
    stored = name
    catalog = store(request).catalog
    if under_upstream_prefix(request, name) or not await catalog.exists(name):
        if (pulled := await pull_target(request, name)) is None:
            raise RegistryError(ErrorCode.NAME_UNKNOWN, detail={"name": name})
        cache, target = pulled
        params = {k: v for k, v in request.query_params.items() if k in ("n", "last")}
        if (listed := await cache.tags(target, params)) is not None:
            tags, following = listed
            link = {"Link": f'</v2/{name}/tags/list?{following}>; rel="next"'} if following else {}
            return ListingResponse({"name": name, "tags": tags}, headers=link)
        stored = target.local  # the upstream cannot answer: the tags cached of it
        if not await catalog.exists(stored):
            raise RegistryError(ErrorCode.NAME_UNKNOWN, detail={"name": name})
    tags, headers = page(
        await store(request).manifests.tags(stored), request, f"/v2/{name}/tags/list", None
    )
    return ListingResponse({"name": name, "tags": tags}, headers=headers)


async def list_referrers(request: Request) -> Response:
    name = repository(request)
    subject = digest_param(request.path_params["digest"])
    descriptors = await store(request).manifests.referrers(name, subject)
    headers = {"Content-Type": OCI_INDEX}
    if artifact_type := request.query_params.get("artifactType"):
        descriptors = [d for d in descriptors if d.get("artifactType") == artifact_type]
        headers["OCI-Filters-Applied"] = "artifactType"
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}
    # ASCII with \u escapes: no stored string (a lone surrogate from before manifests
    # were checked for them) can make the encoding fail.
    return Response(json.dumps(index).encode(), headers=headers, media_type=OCI_INDEX)


async def catalog(request: Request) -> Response:
    """Repositories, only those the caller may pull when access control is on."""
    names = [name for name in await store(request).catalog.names() if may_pull(request, name)]
    names, headers = page(names, request, "/v2/_catalog", CATALOG_PAGE)
    return ListingResponse({"repositories": names}, headers=headers)
