"""What a request needs: derived from its method and path by the app's own routes.

Matching with the router's routes (not a second set of regexes) means the
access check always agrees with the endpoint that will actually run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import QueryParams
from starlette.routing import BaseRoute, Match
from starlette.types import Scope as AsgiScope

from registry.auth.scopes import CATALOG, Scope
from registry.routes import blobs, listings, manifests, uploads

PULL, PUSH, DELETE = "pull", "push", "delete"

ENDPOINT_ACTIONS: dict[Callable[..., Any], str] = {
    listings.list_tags: PULL,
    listings.list_referrers: PULL,
    manifests.get_manifest: PULL,
    manifests.put_manifest: PUSH,
    manifests.delete_manifest: DELETE,
    uploads.start_upload: PUSH,
    uploads.upload_status: PUSH,
    uploads.patch_upload: PUSH,
    uploads.finish_upload: PUSH,
    uploads.cancel_upload: PUSH,
    blobs.get_blob: PULL,
    blobs.delete_blob: DELETE,
}


@dataclass(frozen=True)
class Requirement:
    """`scope` None: only a signed-in caller is needed (the API base, unknown paths)."""

    scope: Scope | None
    catalog: bool = False
    starts_upload: bool = False
    mount_from: str | None = None  # repository a cross-repository mount reads from


def requirement(scope: AsgiScope, routes: Sequence[BaseRoute]) -> Requirement:
    for route in routes:
        match, child = route.matches(scope)
        if match is not Match.FULL:
            continue
        endpoint = child["endpoint"]
        if endpoint is listings.catalog:
            return Requirement(CATALOG, catalog=True)
        action = ENDPOINT_ACTIONS.get(endpoint)
        if action is None:
            return Requirement(None)
        name = child["path_params"]["name"]
        needed = Scope("repository", name, frozenset({action}))
        if endpoint is uploads.start_upload:
            source = QueryParams(scope.get("query_string", b"")).get("from")
            return Requirement(needed, starts_upload=True, mount_from=source)
        return Requirement(needed)
    return Requirement(None)
