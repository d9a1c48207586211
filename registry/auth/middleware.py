"""The access check: one pure-ASGI middleware in front of every endpoint but `/auth/token`.

It runs before routing, storage work or reading the body: it derives what the
request needs from its method and path (`requirements`), identifies the caller
(`guards`) and answers 401 (not signed in), 403 (signed in, not allowed) or 429
(throttled) itself. Rules:

- `GET /v2/` and any other path need a signed-in caller, so `docker login` always
  sends its credentials even where anonymous pull is allowed.
- `_catalog` needs `registry:catalog:*`; the listing shows only pullable names.
- A cross-repository mount needs pull on the source; without it the mount
  parameters are dropped and the client gets an ordinary upload session. A
  mount without `from` (any repository) is dropped likewise: it cannot be checked.
- A repository name that is not valid is refused (NAME_INVALID) before anything else:
  names go into the challenge header, and a quote or a control character there would
  change what it says (or make it unwritable).
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import parse_qsl, urlencode

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from oci.errors import RegistryError
from registry.auth.caller import CALLER_KEY, Caller
from registry.auth.guards import TOKEN_PATH, Guard
from registry.auth.requirements import PULL, PUSH, Requirement, RouteTable, route_path
from registry.auth.scopes import Scope as ResourceScope
from registry.error_response import error_response


class AccessControl:
    """`open_paths` (besides the token endpoint) need no credentials: health and metrics;
    nor do paths below `open_prefixes`: the web UI, which checks its own sessions."""

    def __init__(
        self,
        app: ASGIApp,
        guard: Guard,
        routes: Sequence[BaseRoute],
        open_paths: Sequence[str] = (),
        open_prefixes: Sequence[str] = (),
    ) -> None:
        self.app = app
        self.guard = guard
        self.table = RouteTable(routes)
        self.open_paths = frozenset({TOKEN_PATH, *open_paths})
        self.open_prefixes = tuple(open_prefixes)

    def _open(self, path: str) -> bool:
        return path in self.open_paths or path.startswith(self.open_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._open(route_path(scope)):
            await self.app(scope, receive, send)
            return
        try:
            caller = await self.guard.identify(scope)
            needed = self.table.requirement(scope)
            self._check(scope, caller, needed)
        except RegistryError as error:
            await error_response(error)(scope, receive, send)
            return
        if needed.starts_upload:
            _restrict_mount(scope, caller, needed)
        scope[CALLER_KEY] = caller
        await self.app(scope, receive, send)

    def _check(self, scope: Scope, caller: Caller, needed: Requirement) -> None:
        if (needed.scope is None or needed.catalog) and not caller.authenticated:
            raise self.guard.challenge(scope, _asked(needed), "authentication required")
        if needed.scope is None or caller.allows(needed.scope):
            return
        if caller.name is None:
            raise self.guard.challenge(scope, _asked(needed), "authentication required")
        raise self.guard.denied(scope, _asked(needed))


def _asked(needed: Requirement) -> list[ResourceScope]:
    """Scopes to ask a client for: pushing clients also pull, as docker expects."""
    if needed.scope is None:
        return []
    scope = needed.scope
    if PUSH in scope.actions:
        scope = ResourceScope(scope.type, scope.name, scope.actions | {PULL})
    asked = [scope]
    if needed.mount_from:
        asked.append(ResourceScope("repository", needed.mount_from, frozenset({PULL})))
    return asked


def _restrict_mount(scope: Scope, caller: Caller, needed: Requirement) -> None:
    query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    if not any(key == "mount" for key, _ in query):
        return
    source = needed.mount_from
    if source and caller.allows(ResourceScope("repository", source, frozenset({PULL}))):
        return
    kept = [(key, value) for key, value in query if key not in ("mount", "from")]
    scope["query_string"] = urlencode(kept).encode("latin-1")
