"""Helpers every endpoint module shares: request parsing, pagination, locations."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from oci.errors import ErrorCode, RegistryError
from oci.references import Digest, parse_name
from registry.config import Config
from storage.store import Store

if TYPE_CHECKING:  # the cache's modules load only with an upstream (proxy.build_proxy)
    from proxy.cache import PullThrough
    from proxy.routing import Target

_MAX_PAGE = 10_000


def store(request: Request) -> Store:
    return request.app.state.store


def config(request: Request) -> Config:
    return request.app.state.config


def proxy(request: Request) -> PullThrough | None:
    """The pull-through cache, when `proxy.upstreams` configures one."""
    return request.app.state.proxy


def under_upstream_prefix(request: Request, name: str) -> bool:
    """Whether `name` is in an upstream's namespace. Any other name's pull looks in
    storage first and asks `pull_target` only when it misses: a mirror's fallback must
    ask the catalog whether the name is a local repository, a storage call a local
    pull that finds what it asks for does not need."""
    cache = proxy(request)
    return cache is not None and cache.routes.owner(name) is not None


async def pull_target(
    request: Request, name: str, fallback: bool = True
) -> tuple[PullThrough, Target] | None:
    """The pull-through cache and where it takes a pull of `name`; None: a local pull.
    `fallback` False: names under no prefix stay local (see `proxy.routing`)."""
    cache = proxy(request)
    if cache is None or not cache.routes.may_go_upstream(name, fallback):
        return None
    ns = request.query_params.get("ns") if request.scope["query_string"] else None
    target = await cache.target(name, ns, fallback)
    return (cache, target) if target else None


def refuse_proxied_writes(request: Request, name: str) -> None:
    """Pushes and deletes into an upstream's namespace are refused (DENIED)."""
    if cache := proxy(request):
        cache.routes.refuse_writes(name)


def refresh_usage_after(
    request: Request, name: str, pushed_at: float | None = None
) -> BackgroundTask:
    """A background task for a response: rewrite the repository's usage summary once the
    response is sent (storage.usage says why it is safe to do it then)."""
    return BackgroundTask(store(request).usage.refresh_after_request, name, pushed_at)


def repository(request: Request) -> str:
    return parse_name(request.path_params["name"])


def digest_param(value: str | None) -> Digest:
    if not value:
        raise RegistryError(ErrorCode.DIGEST_INVALID, "a digest is required")
    return Digest.parse(value)


def require_delete_enabled(request: Request) -> None:
    if not config(request).storage.delete.enabled:
        raise RegistryError(ErrorCode.UNSUPPORTED, "deletion is disabled on this registry")


def content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not re.fullmatch(r"[0-9]{1,19}", value):  # str.isdigit() also takes "²"
        raise RegistryError(ErrorCode.SIZE_INVALID, f"invalid Content-Length {value[:32]!r}")
    return int(value)


def header_number(digits: str) -> int:
    """The value of a run of ASCII digits from a header, capped just above any size a
    blob can have (int64), so a number of thousands of digits costs no `int()` of it."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 19 else 1 << 63


def has_body(request: Request) -> bool:
    return (content_length(request) or 0) > 0 or "chunked" in request.headers.get(
        "transfer-encoding", ""
    ).lower()


async def read_limited(request: Request, limit: int) -> bytes:
    """The whole (small) body, refusing more than `limit` bytes with 413."""
    too_large = RegistryError(ErrorCode.SIZE_INVALID, f"body larger than {limit} bytes", status=413)
    declared = content_length(request)
    if declared is not None and declared > limit:
        raise too_large
    parts: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise too_large
        parts.append(chunk)
    body = b"".join(parts)
    if declared is not None and declared != len(body):
        raise RegistryError(
            ErrorCode.SIZE_INVALID, f"received {len(body)} bytes, Content-Length said {declared}"
        )
    return body


def page(
    items: list[str], request: Request, path: str, default_n: int | None
) -> tuple[list[str], dict[str, str]]:
    """Apply `n` and `last` to a sorted list; returns the page and its Link header."""
    raw_n = request.query_params.get("n")
    last = request.query_params.get("last")
    n = default_n
    if raw_n is not None:
        if not re.fullmatch(r"[0-9]{1,9}", raw_n):
            raise RegistryError(ErrorCode.PAGINATION_NUMBER_INVALID, f"invalid n {raw_n[:32]!r}")
        n = min(int(raw_n), _MAX_PAGE)
    if last:
        items = [item for item in items if item > last]
    if n is None or len(items) <= n:
        return items, {}
    selected = items[:n]
    if not selected:
        return [], {}
    return selected, {"Link": f'<{path}?n={n}&last={selected[-1]}>; rel="next"'}


def blob_location(name: str, digest: Digest) -> str:
    return f"/v2/{name}/blobs/{digest}"


def upload_location(name: str, upload_id: str) -> str:
    return f"/v2/{name}/blobs/uploads/{upload_id}"


def manifest_location(name: str, digest: Digest) -> str:
    return f"/v2/{name}/manifests/{digest}"


def empty(status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(status_code=status, headers=headers)
