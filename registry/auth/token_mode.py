"""Token mode: the guard that trusts a verified bearer token, and its assembly from the
config (signing key, signer, verifier, token endpoint; or an external issuer's keys).

Its own module so that only token mode loads PyJWT and cryptography (registry/auth/setup.py
imports it when `auth.mode` is `token`).
"""

from __future__ import annotations

import re

from starlette.types import Scope as AsgiScope

from oci.errors import ErrorCode, RegistryError
from registry.auth.caller import Caller
from registry.auth.endpoint import TokenEndpoint
from registry.auth.guards import TOKEN_PATH, Guard, detail, header
from registry.auth.htpasswd import Users
from registry.auth.keys import (
    KeyConfigError,
    SigningKey,
    load_or_create_signing_key,
    load_or_create_stored_signing_key,
    load_public_keys,
    load_signing_key,
)
from registry.auth.rules import Rules
from registry.auth.scopes import Scope
from registry.auth.setup import (
    SIGNING_KEY_NAME,
    AccessSetup,
    key_in_bucket,
    password_login,
    signing_key_path,
)
from registry.auth.tokens import InvalidTokenError, TokenSigner, TokenVerifier
from registry.config import Config
from storage.driver import StorageDriver

_HOST = re.compile(r"[A-Za-z0-9.\-]{1,253}(?::\d{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](?::\d{1,5})?")


class TokenGuard(Guard):
    def __init__(
        self, realm: str | None, service: str, verifier: TokenVerifier, rules: Rules | None
    ) -> None:
        self.realm = realm
        self.service = service
        self.verifier = verifier
        self.rules = rules  # None: an external issuer's subjects are not ours to judge

    def _realm(self, scope: AsgiScope) -> str:
        if self.realm:
            return self.realm
        host = header(scope, b"host") or ""
        if not _HOST.fullmatch(host):  # it goes into a response header: nothing odd
            host = "localhost"
        return f"{scope.get('scheme', 'http')}://{host}{TOKEN_PATH}"

    def _bearer(self, scope: AsgiScope, needed: list[Scope], error: str | None) -> str:
        parts = [f'realm="{self._realm(scope)}"', f'service="{self.service}"']
        if needed:
            parts.append(f'scope="{" ".join(str(s) for s in needed)}"')
        if error:
            parts.append(f'error="{error}"')
        return "Bearer " + ",".join(parts)

    async def identify(self, scope: AsgiScope) -> Caller:
        authorization = header(scope, b"authorization")
        if authorization is None:
            return Caller(None, False, lambda scope: False, lambda repository: False)
        kind, _, token = authorization.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise self.challenge(scope, [], "a bearer token is required")
        try:
            access = self.verifier.verify_access(token.strip())
        except InvalidTokenError as error:
            raise RegistryError(
                ErrorCode.UNAUTHORIZED,
                str(error),
                headers={"WWW-Authenticate": self._bearer(scope, [], "invalid_token")},
            ) from None
        name = access.subject or None
        rules = self.rules
        if rules is None:
            visible = lambda repository: True  # noqa: E731
        else:
            visible = lambda repository: "pull" in rules.actions(name, repository)  # noqa: E731
        return Caller(name, True, access.allows, visible)

    def challenge(self, scope: AsgiScope, needed: list[Scope], message: str) -> RegistryError:
        return RegistryError(
            ErrorCode.UNAUTHORIZED,
            message,
            detail=detail(needed) or None,
            headers={"WWW-Authenticate": self._bearer(scope, needed, None)},
        )

    def denied(self, scope: AsgiScope, needed: list[Scope]) -> RegistryError:
        error = super().denied(scope, needed)
        error.headers["WWW-Authenticate"] = self._bearer(scope, needed, "insufficient_scope")
        return error


def _signing_key(config: Config) -> SigningKey | None:
    """The key, or None when it is read from the bucket at startup."""
    configured = config.auth.token.signing_key
    if key_in_bucket(config):
        return None
    if configured is None:
        return load_or_create_signing_key(signing_key_path(config))
    # Never generated: replicas sharing storage must all sign with this very key.
    try:
        return load_signing_key(configured)
    except KeyConfigError as error:
        raise KeyConfigError(
            f"auth.token.signing_key: {error} (a configured key is never generated: create "
            "it, or leave signing_key unset to have one generated in the data directory)"
        ) from None


def build_token_access(config: Config, rules: Rules, users: Users) -> AccessSetup:
    auth = config.auth
    token = auth.token
    if token.external:
        keys = load_public_keys(token.public_key, token.jwks)
        verifier = TokenVerifier(keys, token.issuer, token.service)
        return AccessSetup(TokenGuard(token.realm, token.service, verifier, None))
    key = _signing_key(config)
    keys = [key.verification_key()] if key else []
    verifier = TokenVerifier(keys, token.issuer, token.service)
    signer = TokenSigner(
        key, token.issuer, token.service, token.expires_in, token.refresh_expires_in
    )
    login = password_login(config, users)
    endpoint = TokenEndpoint(signer, verifier, login, users, rules, auth.realm)
    guard = TokenGuard(token.realm, token.service, verifier, rules)
    setup = AccessSetup(guard, endpoint.routes(), login=login, rules=rules)
    if key is None:

        async def read_key_from_bucket(driver: StorageDriver) -> None:
            stored = await load_or_create_stored_signing_key(driver, SIGNING_KEY_NAME)
            signer.key = stored
            verifier.keys = {stored.kid: stored.verification_key()}

        setup.startup = read_key_from_bucket
    return setup
