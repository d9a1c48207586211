"""Assemble access control from the `auth` config: the guard and any extra routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from starlette.routing import Route

from registry.auth import credentials
from registry.auth.credentials import BcryptPool, PasswordChecker
from registry.auth.endpoint import TokenEndpoint
from registry.auth.guards import BasicGuard, Guard, PasswordLogin, TokenGuard
from registry.auth.htpasswd import HtpasswdError, Users
from registry.auth.keys import (
    KeyConfigError,
    SigningKey,
    load_or_create_signing_key,
    load_or_create_stored_signing_key,
    load_public_keys,
    load_signing_key,
)
from registry.auth.rules import Rules
from registry.auth.throttle import Throttle
from registry.auth.tokens import TokenSigner, TokenVerifier
from registry.config import Config
from storage.driver import StorageDriver

SIGNING_KEY_NAME = "auth/token-signing-key.pem"


@dataclass
class AccessSetup:
    """`login` and `rules`, when the registry has its own users, serve the web UI's sign-in."""

    guard: Guard | None = None
    routes: list[Route] = field(default_factory=list)
    startup: Callable[[StorageDriver], Awaitable[None]] | None = None
    """What the app awaits before serving (reading a signing key kept in the bucket)."""
    login: PasswordLogin | None = None
    rules: Rules | None = None


def key_in_bucket(config: Config) -> bool:
    """Whether the signing key is generated and kept in the S3 bucket: replicas sharing
    it must sign with one key, and have no data directory in common."""
    token = config.auth.token
    return config.storage.driver == "s3" and not token.external and token.signing_key is None


def signing_key_path(config: Config) -> Path:
    """The configured key, or the one generated in the data directory."""
    configured = config.auth.token.signing_key
    return configured or config.storage.filesystem.root / SIGNING_KEY_NAME


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


def _password_login(config: Config, users: Users) -> PasswordLogin:
    if not users.path.exists():
        raise HtpasswdError(
            f"auth.mode is {config.auth.mode} but the users file {users.path} (auth.htpasswd) "
            "does not exist; create it with `dockyard user add NAME` (given the same --config)"
        )
    users.load()
    pool = BcryptPool(credentials.LOGIN_THREADS, credentials.LOGIN_QUEUE)
    checker = PasswordChecker(users, config.auth.cache_ttl, pool)
    return PasswordLogin(checker, Throttle(config.auth.throttle))


def build_access(config: Config) -> AccessSetup:
    auth = config.auth
    if auth.mode == "none":
        return AccessSetup()
    rules = Rules(auth)
    users = Users(auth.htpasswd)
    if auth.mode == "basic":
        login = _password_login(config, users)
        return AccessSetup(BasicGuard(auth.realm, login, rules), login=login, rules=rules)
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
    login = _password_login(config, users)
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
