"""Maintenance mode in the HTTP layer: writes answer 405 UNSUPPORTED with the message.

405 UNSUPPORTED is the spec's closest code, and what the reference registry's read-only
mode answers; docker shows the message of an error body only with a 4xx status (a 503
becomes "received unexpected HTTP status"), and the message is the point. The check runs
after access control and before routing, so no request body is read.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from oci.errors import ErrorCode, RegistryError
from registry.error_response import error_response
from storage.driver import StorageError
from storage.store import Store

log = logging.getLogger("dockyard")

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def is_registry_write(scope: Scope) -> bool:
    return (
        scope["type"] == "http"
        and scope["method"] in WRITE_METHODS
        and (scope["path"].startswith("/v2/"))
    )


class MaintenanceGuard:
    """Refuses every registry write while the store's maintenance flag is on."""

    def __init__(self, app: ASGIApp, store: Store) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if is_registry_write(scope):
            try:
                state = await self.store.maintenance.state()
            except StorageError as failure:  # outside the app's handlers: answer here
                log.warning("reading the maintenance flag failed: %s", failure)
                error = RegistryError(ErrorCode.UNAVAILABLE, headers={"Retry-After": "1"})
                await error_response(error)(scope, receive, send)
                return
            if state is not None:
                error = RegistryError(ErrorCode.UNSUPPORTED, state.message)
                await error_response(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)
