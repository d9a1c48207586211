"""Blob endpoints: GET/HEAD with Range (end-2) and DELETE (end-10)."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from oci.errors import ErrorCode, RegistryError
from registry.events.record import emit
from registry.routes.common import (
    digest_param,
    empty,
    header_number,
    pull_target,
    refresh_usage_after,
    refuse_proxied_writes,
    repository,
    require_delete_enabled,
    store,
    under_upstream_prefix,
)

_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) of a single-range `Range` header; None to send everything."""
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if not match or match.groups() == ("", ""):
        return None  # Multiple or malformed ranges: RFC 9110 lets us ignore them.
    first, last = (header_number(group) if group else None for group in match.groups())
    if first is None:  # the last `last` bytes ("-0" asks for none)
        start, end = max(size - last, 0) if last else size, size - 1
    else:  # "500-0" (end before start) is invalid: answered 416, as the spec's suite wants
        start, end = first, size - 1 if last is None else min(last, size - 1)
        if last is not None and last < first:
            end = -1
    if start >= size or start > end:
        raise RegistryError(
            ErrorCode.SIZE_INVALID,
            f"range {header[:64]!r} not satisfiable for {size} bytes",
            status=416,
            headers={"Content-Range": f"bytes */{size}"},
        )
    return start, end


async def get_blob(request: Request) -> Response:
    name = repository(request)
    digest = digest_param(request.path_params["digest"])
    size = None
    if not under_upstream_prefix(request, name):
        size = await store(request).blobs.vouched_size(digest, name)
    # A HEAD is how a push asks whether to upload: a new local repository of a mirrored
    # name must not be told it holds what only the default upstream has.
    fallback = request.method == "GET"
    if size is None and (pulled := await pull_target(request, name, fallback)):
        cache, target = pulled
        name = target.local
        ranged = "range" in request.headers
        cached = await cache.blob(target, digest, request.method, ranged)
        if isinstance(cached, Response):
            return cached
        size = cached
        if size is None:
            size = await store(request).blobs.vouched_size(digest, name)
    if size is None:
        raise RegistryError(ErrorCode.BLOB_UNKNOWN, detail={"digest": str(digest)})
    etag = f'"{digest}"'
    headers = {
        "Docker-Content-Digest": str(digest),
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Cache-Control": "max-age=31536000",
        "Content-Type": "application/octet-stream",
    }
    if request.headers.get("if-none-match") == etag:
        return empty(304, headers)
    if request.method == "GET" and (url := await store(request).blobs.redirect_url(digest)):
        # Storage serves the bytes, Range requests included: clients resend the header.
        return RedirectResponse(
            url, status_code=307, headers={"Docker-Content-Digest": str(digest)}
        )
    byte_range = _byte_range(request.headers.get("range"), size)
    status, start, length = 200, 0, size
    if byte_range is not None:
        status, start, length = 206, byte_range[0], byte_range[1] - byte_range[0] + 1
        headers["Content-Range"] = f"bytes {byte_range[0]}-{byte_range[1]}/{size}"
    headers["Content-Length"] = str(length)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers)
    body = store(request).blobs.reader(digest, start, length)
    return StreamingResponse(body, status_code=status, headers=headers)


async def delete_blob(request: Request) -> Response:
    name = repository(request)
    refuse_proxied_writes(request, name)
    digest = digest_param(request.path_params["digest"])
    require_delete_enabled(request)
    if not await store(request).manifests.unlink_blob(name, digest):
        raise RegistryError(ErrorCode.BLOB_UNKNOWN, detail={"digest": str(digest)})
    await emit(request, "delete", name, [(digest, None)])
    response = empty(202)
    response.background = refresh_usage_after(request, name)
    return response
