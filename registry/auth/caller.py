"""Who is calling, as the access check found it, for the endpoints that need to know."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request

from registry.auth.scopes import Scope

CALLER_KEY = "dockyard.caller"


@dataclass(frozen=True)
class Caller:
    """`authenticated`: signed in (or holding a valid token); `name` None if anonymous."""

    name: str | None
    authenticated: bool
    allows: Callable[[Scope], bool]
    may_pull: Callable[[str], bool]


def may_pull(request: Request, repository: str) -> bool:
    """Whether this request's caller may pull `repository` (always, without access control)."""
    caller: Caller | None = request.scope.get(CALLER_KEY)
    return caller is None or caller.may_pull(repository)
