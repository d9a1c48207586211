"""Blob upload endpoints: start/mount/single POST (end-4, end-11), PATCH (end-5),
PUT (end-6), status (end-13) and cancel (end-14)."""

from __future__ import annotations

import contextlib
import re

from starlette.requests import Request
from starlette.responses import Response

from oci.errors import ErrorCode, RegistryError
from oci.references import Digest, parse_name
from registry.events.record import emit
from registry.routes.common import (
    blob_location,
    config,
    content_length,
    digest_param,
    empty,
    has_body,
    header_number,
    refuse_proxied_writes,
    repository,
    store,
    upload_location,
)
from storage.driver import StorageError
from storage.uploads import Upload

_CONTENT_RANGE = re.compile(r"(?:bytes[ =])?([0-9]+)-([0-9]+)")


def _progress_headers(upload: Upload) -> dict[str, str]:
    return {
        "Location": upload_location(upload.name, upload.id),
        "Range": f"0-{max(upload.offset - 1, 0)}",
        "Docker-Upload-UUID": upload.id,
    }


def _created(name: str, digest: Digest) -> Response:
    return empty(
        201, {"Location": blob_location(name, digest), "Docker-Content-Digest": str(digest)}
    )


def _check_range(request: Request, upload: Upload) -> int | None:
    """Length the Content-Range announces, after checking it continues the upload."""
    header = request.headers.get("content-range")
    if header is None:
        return None
    match = _CONTENT_RANGE.fullmatch(header.strip())
    if not match:
        raise RegistryError(ErrorCode.BLOB_UPLOAD_INVALID, f"invalid Content-Range {header[:64]!r}")
    start, end = header_number(match[1]), header_number(match[2])
    if start != upload.offset or end < start:
        raise RegistryError(
            ErrorCode.BLOB_UPLOAD_INVALID,
            f"chunk {start}-{end} does not continue the upload at offset {upload.offset}",
            status=416,
            headers=_progress_headers(upload),
        )
    length = end - start + 1
    declared = content_length(request)
    if declared is not None and declared != length:
        raise RegistryError(
            ErrorCode.SIZE_INVALID,
            f"Content-Range spans {length} bytes, Content-Length is {declared}",
        )
    return length


async def start_upload(request: Request) -> Response:
    name = repository(request)
    refuse_proxied_writes(request, name)
    query = request.query_params
    uploads = store(request).uploads
    if mount := query.get("mount"):
        digest = digest_param(mount)
        source = query.get("from")
        blobs = store(request).blobs
        size = await blobs.vouched_size(digest, parse_name(source) if source else None)
        if size is not None:
            await blobs.link(name, digest)
            await emit(request, "mount", name, [(digest, None)], size=size, from_repository=source)
            return _created(name, digest)
    if "digest" in query:
        digest = digest_param(query["digest"])
        upload = await uploads.start(name, digest.algorithm)
        try:
            await uploads.finish(upload, digest, request.stream(), content_length(request))
        except Exception:
            # Its client never learnt of the session: free what it holds, if anything is
            # left (a failed digest check has already removed it), and report the failure.
            with contextlib.suppress(RegistryError, StorageError):
                await uploads.cancel(upload)
            raise
        return _created(name, digest)
    upload = await uploads.start(name, query.get("digest-algorithm", "sha256"))
    headers = _progress_headers(upload)
    if minimum := config(request).uploads.chunk_min_length:
        headers["OCI-Chunk-Min-Length"] = str(minimum)
    return empty(202, headers)


async def _upload(request: Request) -> Upload:
    return await store(request).uploads.get(repository(request), request.path_params["upload_id"])


async def upload_status(request: Request) -> Response:
    return empty(204, _progress_headers(await _upload(request)))


async def patch_upload(request: Request) -> Response:
    upload = await _upload(request)
    expected = _check_range(request, upload)
    if expected is None:
        expected = content_length(request)
    after = await store(request).uploads.append(upload, request.stream())
    received = after.offset - upload.offset
    if expected is not None and received != expected:
        raise RegistryError(
            ErrorCode.SIZE_INVALID,
            f"received {received} bytes, expected {expected}",
            headers=_progress_headers(after),
        )
    return empty(202, _progress_headers(after))


async def finish_upload(request: Request) -> Response:
    digest = digest_param(request.query_params.get("digest"))
    upload = await _upload(request)
    chunks, expected = None, None
    if has_body(request):
        expected = _check_range(request, upload)
        if expected is None:
            expected = content_length(request)
        chunks = request.stream()
    await store(request).uploads.finish(upload, digest, chunks, expected)
    return _created(upload.name, digest)


async def cancel_upload(request: Request) -> Response:
    await store(request).uploads.cancel(await _upload(request))
    return empty(204)
