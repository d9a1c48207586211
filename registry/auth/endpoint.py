"""The built-in token endpoint (`/auth/token`) of the docker token flow.

GET (docker-auth-token.md): basic credentials or none (anonymous), `service`,
one or more `scope`, `offline_token=true` for a refresh token.
POST (docker-auth-oauth.md): form with `grant_type=password` (username,
password, `access_type=offline` for a refresh token) or
`grant_type=refresh_token`. A refresh token only works while its user exists
with the same password.

Tokens carry the intersection of what was asked and what the rules allow; a
caller allowed less than asked is not an error. A request may ask for at most
`MAX_SCOPES` scopes, and a token never exceeds `MAX_TOKEN_BYTES`: beyond either,
400 with a message saying so (a docker client asks for one to three).
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from oci.errors import ErrorCode, RegistryError
from registry.auth.credentials import NO_CREDENTIALS, parse_basic, password_fingerprint
from registry.auth.guards import TOKEN_PATH, PasswordLogin, client_address
from registry.auth.htpasswd import Users
from registry.auth.rules import Rules
from registry.auth.scopes import Scope, ScopeError, merge, parse_scopes
from registry.auth.tokens import (
    MAX_TOKEN_BYTES,
    InvalidTokenError,
    IssuedToken,
    TokenSigner,
    TokenVerifier,
)
from registry.routes.common import read_limited

log = logging.getLogger("dockyard.auth")

FORM_LIMIT = 64 << 10
MAX_SCOPES = 100
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _bad_request(message: str) -> RegistryError:
    return RegistryError(ErrorCode.UNSUPPORTED, message, status=400)


class TokenEndpoint:
    def __init__(
        self,
        signer: TokenSigner,
        verifier: TokenVerifier,
        login: PasswordLogin,
        users: Users,
        rules: Rules,
        realm: str,
    ) -> None:
        self.signer = signer
        self.verifier = verifier
        self.login = login
        self.users = users
        self.rules = rules
        self.basic_challenge = {"WWW-Authenticate": f'Basic realm="{realm}", charset="UTF-8"'}

    def routes(self) -> list[Route]:
        return [
            Route(TOKEN_PATH, self.get, methods=["GET"]),
            Route(TOKEN_PATH, self.post, methods=["POST"]),
        ]

    def _check_service(self, service: str | None) -> None:
        if service and service != self.signer.service:
            raise _bad_request(f"this token endpoint serves {self.signer.service!r} only")

    def _scopes(self, values: list[str]) -> list[Scope]:
        try:
            scopes = parse_scopes(values)
        except ScopeError as error:
            raise _bad_request(str(error)) from None
        if len(scopes) > MAX_SCOPES:
            raise _bad_request(
                f"too many scopes: {len(scopes)} asked for, at most {MAX_SCOPES} per token"
            )
        return merge(scopes)

    def _access_token(self, user: str, granted: list[Scope]) -> IssuedToken:
        issued = self.signer.access_token(user, granted)
        if len(issued.token) > MAX_TOKEN_BYTES:
            raise _bad_request(
                f"the token would be {len(issued.token)} bytes, more than {MAX_TOKEN_BYTES}:"
                " ask for fewer or shorter scopes"
            )
        return issued

    def _granted(self, user: str | None, scopes: list[Scope], client_id: str | None) -> list[Scope]:
        granted = [g for g in (self.rules.grant(user, scope) for scope in scopes) if g.actions]
        log.info(
            "token for %s (client %r): %s",
            user or "anonymous",
            (client_id or "")[:64],
            " ".join(str(scope) for scope in granted) or "no access",
        )
        return granted

    async def _password(self, request: Request, name: str, password: str) -> str:
        """Check the password; returns the user's hash (for a refresh token)."""
        valid = await self.login.login(name, password, client_address(request.scope))
        hashed = await self.users.hash_of(name)
        if not valid or hashed is None:  # (None: removed between the check and now)
            raise RegistryError(
                ErrorCode.UNAUTHORIZED, "invalid username or password", headers=self.basic_challenge
            )
        return hashed

    async def get(self, request: Request) -> Response:
        params = request.query_params
        self._check_service(params.get("service"))
        scopes = self._scopes(params.getlist("scope"))
        user, hashed = None, None
        authorization = request.headers.get("authorization")
        credentials = parse_basic(authorization) if authorization else NO_CREDENTIALS
        if credentials is None:
            raise RegistryError(
                ErrorCode.UNAUTHORIZED, "malformed basic credentials", headers=self.basic_challenge
            )
        if credentials != NO_CREDENTIALS:
            user = credentials[0]
            hashed = await self._password(request, *credentials)
        issued = self._access_token(
            user or "", self._granted(user, scopes, params.get("client_id"))
        )
        body = {
            "token": issued.token,
            "access_token": issued.token,
            "expires_in": issued.expires_in,
            "issued_at": issued.issued_at,
        }
        if user and hashed and params.get("offline_token", "").lower() == "true":
            body["refresh_token"] = self.signer.refresh_token(user, hashed)
        return JSONResponse(body, headers=_NO_STORE)

    async def post(self, request: Request) -> Response:
        form = dict(parse_qsl((await read_limited(request, FORM_LIMIT)).decode("utf-8", "replace")))
        self._check_service(form.get("service"))
        scopes = self._scopes([form.get("scope", "")])
        grant_type = form.get("grant_type")
        if grant_type == "password":
            user = form.get("username", "")
            hashed = await self._password(request, user, form.get("password", ""))
            refresh = None
            if form.get("access_type") == "offline":
                refresh = self.signer.refresh_token(user, hashed)
        elif grant_type == "refresh_token":
            refresh = form.get("refresh_token", "")
            user = await self._refresh_subject(refresh)
        else:
            raise _bad_request(f"unsupported grant_type {str(grant_type)[:64]!r}")
        granted = self._granted(user, scopes, form.get("client_id"))
        issued = self._access_token(user, granted)
        body = {
            "access_token": issued.token,
            "scope": " ".join(str(scope) for scope in granted),
            "expires_in": issued.expires_in,
            "issued_at": issued.issued_at,
        }
        if refresh:
            body["refresh_token"] = refresh
        return JSONResponse(body, headers=_NO_STORE)

    async def _refresh_subject(self, token: str) -> str:
        try:
            user, fingerprint = self.verifier.verify_refresh(token)
        except InvalidTokenError as error:
            raise RegistryError(ErrorCode.UNAUTHORIZED, f"refresh token refused: {error}") from None
        hashed = await self.users.hash_of(user)
        if hashed is None or password_fingerprint(hashed) != fingerprint:
            raise RegistryError(
                ErrorCode.UNAUTHORIZED, "refresh token revoked: the user or password changed"
            )
        return user
