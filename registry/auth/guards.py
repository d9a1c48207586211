"""How each auth mode identifies a caller and asks for credentials.

`BasicGuard` checks `Authorization: Basic` against the users file and applies
the rules itself; `TokenGuard` (registry/auth/token_mode.py) verifies a bearer token
and trusts the access it carries. Both answer failures with the spec's error body and
a challenge.
"""

from __future__ import annotations

import abc
import asyncio
import logging

from starlette.types import Scope as AsgiScope

from oci.errors import ErrorCode, RegistryError
from registry.auth.caller import Caller
from registry.auth.credentials import NO_CREDENTIALS, LoginsBusy, PasswordChecker, parse_basic
from registry.auth.rules import Rules
from registry.auth.scopes import Scope
from registry.auth.throttle import Throttle

log = logging.getLogger("dockyard.auth")

TOKEN_PATH = "/auth/token"


def detail(scopes: list[Scope]) -> list[dict[str, str]]:
    return [
        {"Type": scope.type, "Name": scope.name, "Action": action}
        for scope in scopes
        for action in sorted(scope.actions)
    ]


def header(scope: AsgiScope, name: bytes) -> str | None:
    """One request header (`name` in lower case), without building a Headers object."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def client_address(scope: AsgiScope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


def _throttled(wait: int, message: str) -> RegistryError:
    return RegistryError(
        ErrorCode.TOOMANYREQUESTS, message, headers={"Retry-After": str(max(wait, 1))}
    )


class PasswordLogin:
    """Password checks guarded by the throttle: used by basic auth and the token endpoint.

    A credential verified recently passes at once: no throttle, no bcrypt. Concurrent
    checks of one credential share a single attempt (one count, one bcrypt run).
    """

    def __init__(self, checker: PasswordChecker, throttle: Throttle) -> None:
        self.checker = checker
        self.throttle = throttle
        self._running: dict[bytes, asyncio.Future[bool]] = {}

    async def login(self, name: str, password: str, address: str) -> bool:
        """Whether the password is right; raises 429 while throttled or too busy."""
        key = self.checker.key(name, password)
        if await self.checker.remembered(key):
            return True
        if (running := self._running.get(key)) is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        try:
            valid = await self._attempt(key, name, password, address)
            future.set_result(valid)
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: waiters re-raise it, nobody else must log it
            raise
        finally:
            del self._running[key]
        return valid

    async def _attempt(self, key: bytes, name: str, password: str, address: str) -> bool:
        if wait := await self.throttle.begin(name, address):
            raise _throttled(wait, "too many failed logins; try again later")
        try:
            valid = await self.checker.check(key, name, password)
        except LoginsBusy:
            await self.throttle.cancel(name, address)
            raise _throttled(1, "too many logins in progress; try again shortly") from None
        if valid:
            await self.throttle.succeeded(name, address)
        else:
            log.warning("failed login for user %r from %s", name[:64], address)
        return valid


class Guard(abc.ABC):
    @abc.abstractmethod
    async def identify(self, scope: AsgiScope) -> Caller:
        """The caller of a request; raises RegistryError for bad credentials."""

    @abc.abstractmethod
    def challenge(self, scope: AsgiScope, needed: list[Scope], message: str) -> RegistryError:
        """A 401 asking for the credentials that would grant `needed`."""

    def denied(self, scope: AsgiScope, needed: list[Scope]) -> RegistryError:
        return RegistryError(ErrorCode.DENIED, detail=detail(needed))


class BasicGuard(Guard):
    def __init__(self, realm: str, login: PasswordLogin, rules: Rules) -> None:
        self.header = f'Basic realm="{realm}", charset="UTF-8"'
        self.login = login
        self.rules = rules
        self._callers: dict[str | None, Caller] = {}

    def _caller(self, name: str | None) -> Caller:
        """Callers depend only on the name and the (fixed) rules: one object per user."""
        if (caller := self._callers.get(name)) is None:
            rules = self.rules
            caller = Caller(
                name=name,
                authenticated=name is not None,
                allows=lambda scope: rules.allows(name, scope),
                may_pull=lambda repository: "pull" in rules.actions(name, repository),
            )
            if len(self._callers) < 10_000:
                self._callers[name] = caller
        return caller

    async def identify(self, scope: AsgiScope) -> Caller:
        authorization = header(scope, b"authorization")
        credentials = parse_basic(authorization) if authorization else NO_CREDENTIALS
        if credentials == NO_CREDENTIALS:
            return self._caller(None)
        if credentials is None:
            raise self.challenge(scope, [], "malformed basic credentials")
        name, password = credentials
        if not await self.login.login(name, password, client_address(scope)):
            raise self.challenge(scope, [], "invalid username or password")
        return self._caller(name)

    def challenge(self, scope: AsgiScope, needed: list[Scope], message: str) -> RegistryError:
        return RegistryError(
            ErrorCode.UNAUTHORIZED,
            message,
            detail=detail(needed) or None,
            headers={"WWW-Authenticate": self.header},
        )
