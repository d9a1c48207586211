"""The web UI's endpoints, mounted at `/ui/` by `registry.app`.

Each page builds the request's `Visit` (session cookie, viewer, CSRF token), reads what it
shows through the store the API uses (`ui.repositories`, `ui.images`), and renders a
Jinja2 template with autoescaping on. Repositories the viewer may not pull answer 404,
like repositories that do not exist. Every POST (sign-in, sign-out, delete) must carry
the session's CSRF token; deletes take the API's own path (`delete_reference`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from collector.last_run import last_run
from oci.errors import ErrorCode, RegistryError
from oci.references import Digest, is_digest, parse_name, parse_tag
from registry.auth.caller import CALLER_KEY, Caller
from registry.auth.guards import client_address
from registry.auth.setup import AccessSetup
from registry.config import Config, format_duration
from registry.immutable_tags import immutable_rule
from registry.routes.common import read_limited
from registry.routes.manifests import delete_reference
from storage.driver import StorageUnavailableError
from storage.store import Store
from storage.usage import usage_report
from ui import images, repositories
from ui.access import UiAccess, Viewer
from ui.session import COOKIE_NAME, Session, SessionKey, Sessions, cookie_header

PREFIX = "/ui"
FORM_MAX_BYTES = 16 << 10
_HERE = Path(__file__).parent
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; "
    "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")
Item = TypeVar("Item")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dockyard")
    except PackageNotFoundError:
        return "unknown"


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"


def _when(value: float | None) -> str:
    if not value:
        return "never"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _short(digest: object) -> str:
    algorithm, _, encoded = str(digest).partition(":")
    return f"{algorithm}:{encoded[:12]}" if encoded else str(digest)


def _path(*parts: str) -> str:
    return PREFIX + "/" + "/".join(quote(part, safe="/:@") for part in parts)


def _query(url: str, **params: object) -> str:
    kept = {key: value for key, value in params.items() if value not in (None, "")}
    return f"{url}?{urlencode(kept)}" if kept else url


def _page_param(number: int) -> int | None:
    """The `page` query parameter: none for the first page."""
    return number if number > 1 else None


def _templates() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(size=_size, when=_when, short=_short)
    environment.globals.update(
        repository_url=lambda name: _path("repositories", name),
        image_url=lambda name, reference: _path("images", name, str(reference)),
        delete_url=lambda name, reference: _path("delete", name, str(reference)),
        file_url=lambda name, digest, filename: _query(
            _path("files", name, str(digest)), filename=filename
        ),
        query=_query,
    )
    return environment


@dataclass
class Visit:
    """One request's viewer and session; `renew`: the cookie must be (re)sent."""

    viewer: Viewer
    renew: bool
    csrf: str


class WebUi:
    def __init__(self, config: Config, store: Store, access: AccessSetup) -> None:
        self.config = config
        self.store = store
        self.access = UiAccess(config, access.login, access.rules)
        self.sessions = Sessions(SessionKey(store.driver), config.ui.session_lifetime)
        self.templates = _templates()
        self.version = _version()

    def mount(self) -> Mount:
        page = self._page
        routes: list[BaseRoute] = [
            Route("/", page(self.repositories), methods=["GET"]),
            Route("/login", page(self.login_form), methods=["GET"]),
            Route("/login", page(self.login), methods=["POST"]),
            Route("/logout", page(self.logout), methods=["POST"]),
            Route("/registry", page(self.registry), methods=["GET"]),
            Route("/repositories/{name:path}", page(self.repository), methods=["GET"]),
            Route("/images/{name:path}/{reference}", page(self.image), methods=["GET"]),
            Route("/delete/{name:path}/{reference}", page(self.delete_form), methods=["GET"]),
            Route("/delete/{name:path}/{reference}", page(self.delete), methods=["POST"]),
            Route("/files/{name:path}/{digest}", page(self.file), methods=["GET"]),
            Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
            Route("/{rest:path}", page(self.not_found)),
        ]
        return Mount(PREFIX, routes=routes)

    # -- the request's visit, rendering, errors -----------------------------------

    async def _visit(self, request: Request) -> Visit:
        session = await self.sessions.load(request.cookies.get(COOKIE_NAME))
        renew = session is None
        viewer = await self.access.viewer(session or Session.anonymous())
        if viewer.user != viewer.session.user:  # no session, or its user is no longer valid
            viewer, renew = Viewer(Session.anonymous(), None, self.access), True
        return Visit(viewer, renew, await self.sessions.csrf_token(viewer.session))

    async def _send_session(self, request: Request, response: Response, session: Session) -> None:
        value = await self.sessions.dump(session)
        secure = request.url.scheme == "https"
        response.headers.append("set-cookie", cookie_header(value, self.sessions.lifetime, secure))

    async def _render(
        self, request: Request, visit: Visit, template: str, status: int = 200, **values: Any
    ) -> Response:
        html = self.templates.get_template(template).render(
            viewer=visit.viewer,
            csrf=visit.csrf,
            can_sign_in=self.access.can_sign_in,
            host=request.url.netloc,
            here=request.url.path + (f"?{request.url.query}" if request.url.query else ""),
            **values,
        )
        response = HTMLResponse(html, status, headers=HEADERS)
        if visit.renew:
            await self._send_session(request, response, visit.viewer.session)
        return response

    def _page(
        self, handler: Callable[[Request, Visit], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """An endpoint that renders the UI's errors (and storage outages) as pages."""

        async def endpoint(request: Request) -> Response:
            visit = await self._visit(request)
            try:
                return await handler(request, visit)
            except RegistryError as error:
                status = error.status if 400 <= error.status < 600 else 400
                return await self._render(
                    request, visit, "error.html", status, message=error.message
                )
            except StorageUnavailableError:
                message = "the registry's storage did not answer; try again shortly"
                return await self._render(request, visit, "error.html", 503, message=message)

        return endpoint

    def _hidden(self, what: str) -> RegistryError:
        """The one answer for what does not exist and what the viewer may not see."""
        return RegistryError(ErrorCode.NAME_UNKNOWN, f"{what} not found", status=404)

    async def _visible_repository(self, request: Request, visit: Visit) -> str:
        name = parse_name(request.path_params["name"])
        if not visit.viewer.may_pull(name) or not await self.store.catalog.exists(name):
            raise self._hidden(f"repository {name}")
        return name

    async def _form(self, request: Request, visit: Visit) -> dict[str, str]:
        """The POSTed form; refused (403) unless it carries the session's CSRF token."""
        body = await read_limited(request, FORM_MAX_BYTES)
        try:
            parsed = parse_qs(body.decode(), max_num_fields=16)
        except (UnicodeDecodeError, ValueError):
            parsed = {}
        form = {key: values[0] for key, values in parsed.items()}
        if not await self.sessions.csrf_valid(visit.viewer.session, form.get("csrf")):
            raise RegistryError(
                ErrorCode.DENIED,
                "this form has expired or did not come from this site: reload the page "
                "and try again",
            )
        return form

    def _page_number(self, request: Request) -> int:
        raw = request.query_params.get("page", "1")
        return int(raw) if raw.isdecimal() and len(raw) < 9 else 1

    def _one_page(self, request: Request, items: list[Item]) -> tuple[list[Item], int, int]:
        """The requested page of `items`, its number and the number of pages."""
        size = self.config.ui.page_size
        pages = max(math.ceil(len(items) / size), 1)
        page = min(self._page_number(request), pages)
        return items[(page - 1) * size : page * size], page, pages

    # -- pages --------------------------------------------------------------------

    async def repositories(self, request: Request, visit: Visit) -> Response:
        query = request.query_params.get("q", "")[:200]
        sort = request.query_params.get("sort", "name")
        sort = sort if sort in repositories.SORTS else "name"
        listing = await repositories.repository_page(
            self.store,
            visit.viewer.may_pull,
            query,
            sort,
            self._page_number(request),
            self.config.ui.page_size,
        )

        def page_url(number: int) -> str:
            sorted_by = None if sort == "name" else sort
            return _query(PREFIX + "/", q=query, sort=sorted_by, page=_page_param(number))

        return await self._render(
            request,
            visit,
            "repositories.html",
            listing=listing,
            q=query,
            sort=sort,
            page_url=page_url,
        )

    async def repository(self, request: Request, visit: Visit) -> Response:
        name = await self._visible_repository(request, visit)
        tab = "untagged" if request.query_params.get("tab") == "untagged" else "tags"
        tag_filter = request.query_params.get("filter", "")[:128]
        summary = await self.store.usage.summary(name)
        values: dict[str, Any] = {"name": name, "summary": summary, "tab": tab}
        values["tag_filter"] = tag_filter
        values["deleted"] = request.query_params.get("deleted", "")[:200]
        values["may_delete"] = visit.viewer.may_delete(name)

        def page_url(number: int) -> str:
            url = _path("repositories", name)
            tab_param = None if tab == "tags" else tab
            return _query(url, tab=tab_param, filter=tag_filter, page=_page_param(number))

        if tab == "untagged":
            shown, page, pages = self._one_page(request, await images.untagged(self.store, name))
            values["untagged"] = await images.untagged_rows(self.store, name, shown)
        else:
            tags = [t for t in await self.store.manifests.tags(name) if tag_filter in t]
            shown, page, pages = self._one_page(request, tags)
            values.update(rows=await images.tag_rows(self.store, name, shown), matching=len(tags))
        values.update(page_url=page_url, page=page, pages=pages)
        return await self._render(request, visit, "repository.html", **values)

    async def _target(self, name: str, reference: str) -> tuple[str | None, Digest]:
        """(tag or None, digest) of a reference; 404 when it names nothing."""
        if is_digest(reference):
            return None, Digest.parse(reference)
        tag = parse_tag(reference)
        digest = await self.store.manifests.resolve(name, tag)
        if digest is None:
            raise self._hidden(f"tag {tag}")
        return tag, digest

    async def image(self, request: Request, visit: Visit) -> Response:
        name = await self._visible_repository(request, visit)
        tag, digest = await self._target(name, request.path_params["reference"])
        detail = await images.image_detail(self.store, name, digest)
        if detail is None:
            raise self._hidden(f"manifest {digest}")
        return await self._render(
            request,
            visit,
            "image.html",
            image=detail,
            tag=tag,
            may_delete=visit.viewer.may_delete(name),
        )

    async def _delete_target(self, request: Request, visit: Visit) -> tuple[str, str]:
        name = await self._visible_repository(request, visit)
        if not visit.viewer.may_delete(name):
            raise RegistryError(ErrorCode.DENIED, f"you may not delete in {name}")
        return name, request.path_params["reference"]

    async def _delete_page(
        self,
        request: Request,
        visit: Visit,
        name: str,
        reference: str,
        error: RegistryError | None = None,
    ) -> Response:
        tag, digest = (
            (None, Digest.parse(reference))
            if is_digest(reference)
            else (parse_tag(reference), None)
        )
        impact = await images.delete_impact(self.store, name, tag, digest)
        if impact.digest is None or (
            tag is None and not await self.store.manifests.exists(name, impact.digest)
        ):
            raise self._hidden(f"{'tag' if tag else 'manifest'} {reference}")
        rules = self.config.immutable_tags
        locked = [
            rule
            for t in ([tag] if tag else impact.tags)
            if (rule := immutable_rule(rules, name, t)) is not None
        ]
        return await self._render(
            request,
            visit,
            "delete.html",
            error.status if error else 200,
            impact=impact,
            reference=reference,
            immutable=locked,
            gc_interval=format_duration(self.config.gc.interval)
            if self.config.gc.enabled
            else None,
            error=error.message if error else None,
        )

    async def delete_form(self, request: Request, visit: Visit) -> Response:
        name, reference = await self._delete_target(request, visit)
        return await self._delete_page(request, visit, name, reference)

    async def delete(self, request: Request, visit: Visit) -> Response:
        name, reference = await self._delete_target(request, visit)
        await self._form(request, visit)
        if (maintenance := await self.store.maintenance.state()) is not None:
            raise RegistryError(ErrorCode.UNSUPPORTED, maintenance.message)
        viewer = visit.viewer
        request.scope[CALLER_KEY] = Caller(
            viewer.user, viewer.user is not None, lambda scope: False, viewer.may_pull
        )
        try:
            refresh = await delete_reference(request, name, reference)
        except RegistryError as error:
            if error.code is ErrorCode.MANIFEST_UNKNOWN:
                raise
            return await self._delete_page(request, visit, name, reference, error)
        target = _query(_path("repositories", name), deleted=reference)
        return RedirectResponse(target, 303, headers=HEADERS, background=refresh)

    async def file(self, request: Request, visit: Visit) -> Response:
        """An artifact's file (a layer), as a download: never shown inline."""
        name = await self._visible_repository(request, visit)
        digest = Digest.parse(request.path_params["digest"])
        size = await self.store.blobs.vouched_size(digest, name)
        if size is None:
            raise self._hidden(f"file {digest}")
        filename = _FILENAME.sub("_", request.query_params.get("filename", ""))[:128].strip(".")
        filename = filename or digest.encoded[:16]
        headers = {
            **HEADERS,
            "Content-Length": str(size),
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Docker-Content-Digest": str(digest),
        }
        body = self.store.blobs.reader(digest, 0, size)
        return StreamingResponse(body, media_type="application/octet-stream", headers=headers)

    async def registry(self, request: Request, visit: Visit) -> Response:
        usage = None
        if request.query_params.get("usage") == "count":  # on demand: it reads every summary
            names = [n for n in await self.store.catalog.names() if visit.viewer.may_pull(n)]
            usage = await usage_report(self.store.usage, self.store.catalog, names)
        return await self._render(
            request,
            visit,
            "registry.html",
            version=self.version,
            usage=usage,
            collection=await last_run(self.store),
            config=self.config,
            format_duration=format_duration,
        )

    async def not_found(self, request: Request, visit: Visit) -> Response:
        return await self._render(request, visit, "error.html", 404, message="no such page")

    # -- signing in and out -----------------------------------------------------------

    def _next(self, value: str | None) -> str:
        """Where to go after signing in: only a page of the UI itself."""
        if value and value.startswith(PREFIX + "/") and "//" not in value and "\\" not in value:
            return value
        return PREFIX + "/"

    async def login_form(self, request: Request, visit: Visit) -> Response:
        return await self._render(
            request, visit, "login.html", next=self._next(request.query_params.get("next"))
        )

    async def login(self, request: Request, visit: Visit) -> Response:
        form = await self._form(request, visit)
        name, target = form.get("username", "")[:256], self._next(form.get("next"))
        try:
            fingerprint = await self.access.sign_in(
                name, form.get("password", ""), client_address(request.scope)
            )
        except RegistryError as error:  # throttled: the API's 429 and its Retry-After
            return await self._render(
                request, visit, "login.html", error.status, next=target, message=error.message
            )
        if fingerprint is None:
            message = "wrong user name or password"
            return await self._render(
                request, visit, "login.html", 401, next=target, message=message
            )
        response = RedirectResponse(target, 303, headers=HEADERS)
        session = Session(Session.anonymous().sid, name, fingerprint)  # a new session id
        await self._send_session(request, response, session)
        return response

    async def logout(self, request: Request, visit: Visit) -> Response:
        await self._form(request, visit)
        response = RedirectResponse(PREFIX + "/", 303, headers=HEADERS)
        await self._send_session(request, response, Session.anonymous())
        return response
