"""The ASGI application: routes, error rendering and the storage it serves from."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Match, Route, Router
from starlette.types import Receive, Scope, Send

from collector import last_run
from collector.background import collect_forever
from collector.niced import collect_in_child
from collector.run import GcOptions, GcResult, collect
from oci.errors import ErrorCode, RegistryError
from proxy import build_proxy
from registry import health, metrics, metrics_exposition
from registry.access_log import AccessLog, LogLines
from registry.auth.middleware import AccessControl
from registry.auth.setup import build_access
from registry.config import Config, load_config
from registry.drivers import create_driver
from registry.error_response import error_response
from registry.events.setup import build_events
from registry.maintenance import MaintenanceGuard
from registry.malloc import return_big_buffers_to_the_system
from registry.observe import ObserveRequests, Recorder
from registry.python_gc import freeze_startup_objects
from registry.request_drain import DrainBeforeClose
from registry.request_id import REQUEST_ID_HEADER, REQUEST_ID_KEY, RequestId
from registry.route_labels import RouteLabels
from registry.routes import blobs, listings, manifests, uploads
from storage.driver import (
    InvalidKeyError,
    StorageDriver,
    StorageFullError,
    StorageLimitError,
    StorageUnavailableError,
)
from storage.instrumented import InstrumentedDriver
from storage.maintenance import Maintenance
from storage.store import Store
from ui.web import PREFIX as UI_PREFIX
from ui.web import WebUi

log = logging.getLogger("dockyard")

API_VERSION_HEADER = (b"docker-distribution-api-version", b"registry/2.0")


class ApiRoute(Route):
    """A route of the registry API: its endpoint is called without the exception layer
    Starlette wraps around each endpoint call. The one around the router (its
    `ExceptionMiddleware`) handles the same exceptions with the same handlers, and no
    layer stands between the two: one coroutine and one `send` wrapper less a request."""

    def __init__(
        self,
        path: str,
        endpoint: Callable[[Request], Awaitable[Response]],
        *,
        methods: list[str],
        name: str | None = None,
    ) -> None:
        # Only what the adapter below keeps: a `middleware` option would be dropped.
        super().__init__(path, endpoint, methods=methods, name=name)

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            response = await endpoint(Request(scope, receive, send))
            await response(scope, receive, send)

        self.app = app


# The router tries routes in this order, each a regular expression: the requests
# clients make most (blob and manifest reads) come first. No two routes' paths match
# one request (their fixed parts differ), so the order changes nothing else.
ROUTES = [
    ApiRoute("/v2/{name:path}/blobs/{digest}", blobs.get_blob, methods=["GET"]),
    ApiRoute("/v2/{name:path}/blobs/{digest}", blobs.delete_blob, methods=["DELETE"]),
    ApiRoute(
        "/v2/{name:path}/manifests/{reference}",
        manifests.get_manifest,
        methods=["GET"],
        name="get_manifest",
    ),
    ApiRoute("/v2/{name:path}/manifests/{reference}", manifests.put_manifest, methods=["PUT"]),
    ApiRoute(
        "/v2/{name:path}/manifests/{reference}", manifests.delete_manifest, methods=["DELETE"]
    ),
    ApiRoute("/v2/{name:path}/blobs/uploads/", uploads.start_upload, methods=["POST"]),
    ApiRoute("/v2/{name:path}/blobs/uploads/{upload_id}", uploads.upload_status, methods=["GET"]),
    ApiRoute("/v2/{name:path}/blobs/uploads/{upload_id}", uploads.patch_upload, methods=["PATCH"]),
    ApiRoute("/v2/{name:path}/blobs/uploads/{upload_id}", uploads.finish_upload, methods=["PUT"]),
    ApiRoute(
        "/v2/{name:path}/blobs/uploads/{upload_id}", uploads.cancel_upload, methods=["DELETE"]
    ),
    ApiRoute("/v2/{name:path}/tags/list", listings.list_tags, methods=["GET"]),
    ApiRoute("/v2/{name:path}/referrers/{digest}", listings.list_referrers, methods=["GET"]),
    ApiRoute("/v2/", listings.api_base, methods=["GET"]),
    ApiRoute("/v2/_catalog", listings.catalog, methods=["GET"]),
]


async def _registry_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RegistryError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        error = RegistryError(ErrorCode.UNSUPPORTED, "method not allowed", headers=exc.headers)
    else:
        error = RegistryError(
            ErrorCode.UNSUPPORTED, "no such endpoint", status=exc.status_code, headers=exc.headers
        )
    return error_response(error)


async def _storage_unavailable(request: Request, exc: Exception) -> Response:
    log.warning("storage unavailable: %s", exc)
    return error_response(RegistryError(ErrorCode.UNAVAILABLE, headers={"Retry-After": "1"}))


async def _storage_full(request: Request, exc: Exception) -> Response:
    # The spec has no code for this. 507 Insufficient Storage says exactly what happened
    # and is a 5xx, so clients retry later; UNAVAILABLE is the code (docker's, beside the
    # spec's) that says "the registry cannot do this now", which is true and temporary.
    log.warning("storage full: %s %s failed: %s", request.method, request.url.path, exc)
    return error_response(
        RegistryError(
            ErrorCode.UNAVAILABLE,
            "the registry's storage is full; retry once space is freed",
            status=507,
        )
    )


async def _storage_limit(request: Request, exc: Exception) -> Response:
    return error_response(RegistryError(ErrorCode.SIZE_INVALID, str(exc), status=413))


async def _client_disconnect(request: Request, exc: Exception) -> Response:
    return error_response(RegistryError(ErrorCode.BLOB_UPLOAD_INVALID, "client disconnected"))


async def _invalid_key(request: Request, exc: Exception) -> Response:
    return error_response(RegistryError(ErrorCode.NAME_INVALID, "invalid path"))


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Starlette re-raises after this response is sent, so the server logs the traceback.
    # It sends it from outside the app's middleware: the request id is added here.
    response = error_response(RegistryError(ErrorCode.UNKNOWN))
    if request_id := request.scope.get(REQUEST_ID_KEY):
        response.headers[REQUEST_ID_HEADER] = request_id
    return response


class RelativeSlashRedirect:
    """Starlette's `redirect_slashes` with a relative `Location`.

    Starlette builds an absolute URL from the request's `Host` header, which the client
    chooses: `GET /v2` with a forged `Host` was redirected to that host.
    """

    def __init__(self, router: Router) -> None:
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if scope["type"] == "http" and path != "/":
            other = {**scope, "path": path.rstrip("/") if path.endswith("/") else path + "/"}
            if any(route.matches(other)[0] is not Match.NONE for route in self.router.routes):
                raw: bytes = scope.get("raw_path") or path.encode()
                target = raw.rstrip(b"/") if raw.endswith(b"/") else raw + b"/"
                location = target.decode("latin-1")
                if query := scope.get("query_string", b""):
                    location += "?" + query.decode("latin-1")
                if not location.startswith("//"):  # that would name a host after all
                    await RedirectResponse(location)(scope, receive, send)
                    return
        await self.router.not_found(scope, receive, send)


def create_served_app() -> Starlette:
    """The app of a `dockyard serve` worker: the configured one, its startup objects
    frozen once it started (registry/python_gc.py)."""
    return create_app(freeze_after_startup=True)


def create_app(
    config: Config | None = None,
    driver: StorageDriver | None = None,
    freeze_after_startup: bool = False,
) -> Starlette:
    config = config or load_config()
    return_big_buffers_to_the_system()
    # A driver of the configured storage can be made again in a child process, which is
    # where the background collector runs then (collector/niced.py).
    storage_in_config = driver is None
    driver = driver or create_driver(config)
    readiness = health.Readiness(driver, config.health.timeout)  # its probes are not timed
    if config.metrics.enabled:
        driver = InstrumentedDriver(driver, metrics.storage_observer(driver.name))
    store = Store(driver, pull_interval=config.gc.grace, touch_every=config.gc.grace / 10)
    if config.maintenance.readonly:
        store.maintenance.configured = Maintenance(config.maintenance.message, time.time())
    access_lines = LogLines()
    events, deliverer = build_events(config.notifications, store)
    proxy = build_proxy(config, store)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if access.startup is not None:
            await access.startup(driver)
        collector = None
        if config.gc.enabled:
            options = GcOptions.background(config)

            async def collect_once() -> GcResult:
                if storage_in_config:
                    return await collect_in_child(store, config)
                return await collect(store, options)

            interval = config.gc.interval
            collecting = collect_forever(
                collect_once,
                interval,
                metrics.gc_observer(),
                functools.partial(last_run.due_in, store, interval),
            )
            collector = asyncio.create_task(collecting)
        delivering = asyncio.create_task(deliverer.run()) if deliverer else None
        publisher = asyncio.create_task(metrics.publish_periodically())
        with contextlib.suppress(ValueError):  # not in the main thread: nobody to signal us
            readiness.stop_on_signals()
        if freeze_after_startup:
            freeze_startup_objects()
        try:
            yield
        finally:
            readiness.stopping = True
            # Both let their leases go on their way out; a collection under way first
            # finishes the step it is in (collector/sweep.py).
            background = [task for task in (collector, delivering) if task is not None]
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await events.close()
            if proxy is not None:
                await proxy.close()
            publisher.cancel()
            access_lines.flush()
            await store.close()
            metrics.publish(metrics.TOTALS.snapshot())  # the last requests count too

    access = build_access(config)
    ops_routes = [*health.ROUTES, *metrics_exposition.routes(config.metrics)]
    ui_routes = [WebUi(config, store, access).mount()] if config.ui.enabled else []
    routes = [*ROUTES, *access.routes, *ops_routes, *ui_routes]
    app = Starlette(
        routes=routes,
        exception_handlers={
            RegistryError: _registry_error,
            HTTPException: _http_error,
            StorageUnavailableError: _storage_unavailable,
            StorageFullError: _storage_full,
            StorageLimitError: _storage_limit,
            ClientDisconnect: _client_disconnect,
            InvalidKeyError: _invalid_key,
            Exception: _unexpected,
        },
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False
    app.router.default = RelativeSlashRedirect(app.router)
    app.state.config = config
    app.state.store = store
    app.state.events = events
    app.state.proxy = proxy
    app.state.readiness = readiness
    app.add_middleware(MaintenanceGuard, store=store)  # after access control: 401 comes first
    if access.guard is not None:
        open_paths, open_prefixes = [route.path for route in ops_routes], []
        if config.ui.enabled:  # the UI checks its own sessions
            open_paths.append(UI_PREFIX)
            open_prefixes.append(UI_PREFIX + "/")
        app.add_middleware(
            AccessControl,
            guard=access.guard,
            routes=routes,
            open_paths=open_paths,
            open_prefixes=open_prefixes,
        )
    labels = RouteLabels(routes)
    recorders: list[Recorder] = []
    if config.metrics.enabled:
        recorders.append(metrics.HttpMetrics(labels))
    if config.http.access_log and config.log.level in ("debug", "info"):  # lines are info
        recorders.append(AccessLog(access_lines, labels if config.log.format == "json" else None))
    if recorders:
        app.add_middleware(ObserveRequests, recorders=recorders)
    app.add_middleware(RequestId, fixed=[API_VERSION_HEADER])  # on every answer, errors too
    app.add_middleware(DrainBeforeClose)  # outermost: it must see every response
    return app
