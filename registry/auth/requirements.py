"""What a request needs: derived from its method and path by the app's own routes.

Matching with the router's own route patterns (not a second set of regexes)
means the access check always agrees with the endpoint that will actually run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import QueryParams
from starlette.routing import BaseRoute, Route
from starlette.types import Scope as AsgiScope

from oci.errors import RegistryError
from oci.references import parse_name
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


def route_path(scope: AsgiScope) -> str:
    """The path the router matches (below any `root_path` the app is mounted at)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class RouteTable:
    """The app's routes by method, in the router's order, for matching paths cheaply.

    Only a route accepting the method can fully match, and the first full match
    is the one the router will run. Repository names use the `path` convertor,
    which leaves the matched text as it is.
    """

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self._by_method: dict[str, list[tuple[re.Pattern[str], Callable[..., Any]]]] = {}
        for route in routes:
            if isinstance(route, Route):
                for method in route.methods or ():
                    entry = (route.path_regex, route.endpoint)
                    self._by_method.setdefault(method, []).append(entry)

    def requirement(self, scope: AsgiScope) -> Requirement:
        path = route_path(scope)
        for regex, endpoint in self._by_method.get(scope["method"], ()):
            match = regex.match(path)
            if match is None:
                continue
            if endpoint is listings.catalog:
                return Requirement(CATALOG, catalog=True)
            action = ENDPOINT_ACTIONS.get(endpoint)
            if action is None:
                return Requirement(None)
            # Names go into the challenge header: only valid ones (else NAME_INVALID here).
            needed = Scope("repository", parse_name(match["name"]), frozenset({action}))
            if endpoint is uploads.start_upload:
                source = QueryParams(scope.get("query_string", b"")).get("from")
                return Requirement(needed, starts_upload=True, mount_from=_valid(source))
            return Requirement(needed)
        return Requirement(None)


def _valid(name: str | None) -> str | None:
    """`name` if it is a valid repository name; an invalid mount source is no source."""
    try:
        return parse_name(name) if name is not None else None
    except RegistryError:
        return None
