"""Assemble access control from the `auth` config: the guard and any extra routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from starlette.routing import Route

from registry.auth import credentials
from registry.auth.credentials import BcryptPool, PasswordChecker
from registry.auth.guards import BasicGuard, Guard, PasswordLogin
from registry.auth.htpasswd import HtpasswdError, Users
from registry.auth.rules import Rules
from registry.auth.throttle import Throttle
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


def password_login(config: Config, users: Users) -> PasswordLogin:
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
        login = password_login(config, users)
        return AccessSetup(BasicGuard(auth.realm, login, rules), login=login, rules=rules)
    # Only token mode loads PyJWT and cryptography (some 9 MB and 30 ms a worker).
    from registry.auth.token_mode import build_token_access

    return build_token_access(config, rules, users)
