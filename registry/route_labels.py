"""The route template a request matched, for metrics and logs: a bounded set of labels.

`/v2/{name}/manifests/{reference}`, never the raw path, so labels cannot explode.
A routed request is looked up by the endpoint the router put in its scope; one
answered before routing (by the access check) is matched against the routes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from starlette.routing import BaseRoute, Match, Route
from starlette.types import Scope

OTHER = "other"


class RouteLabels:
    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self._routes = [route for route in routes if isinstance(route, Route)]
        self._by_endpoint: dict[Callable[..., Any], str] = {
            route.endpoint: route.path_format for route in self._routes
        }

    def template(self, scope: Scope) -> str:
        """The template of the route that served (or would serve) `scope`, else "other"."""
        endpoint = scope.get("endpoint")
        if endpoint is not None:
            return self._by_endpoint.get(endpoint, OTHER)
        route, _ = self._match(scope)
        return route.path_format if route is not None else OTHER

    def repository(self, scope: Scope) -> str | None:
        """The repository name in the request's path, if its route has one."""
        params = scope.get("path_params")
        if params is None:
            _, params = self._match(scope)
        return params.get("name")

    def _match(self, scope: Scope) -> tuple[Route | None, dict[str, Any]]:
        for route in self._routes:
            match, child_scope = route.matches(scope)
            if match is not Match.NONE:
                return route, child_scope["path_params"]
        return None, {}
