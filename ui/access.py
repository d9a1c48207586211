"""Who is looking at the web UI, and what they may see and do: the registry's own rules.

Signing in goes through the registry's `PasswordLogin` (the users file, the bcrypt pool,
the cache of verified passwords and the failed-login throttle), and what a viewer may do
on a repository is what the API would let them do: `Rules.actions` for the signed-in
user, or for anonymous (`anonymous_pull`). Without access control (`auth.mode: none`)
anyone may do anything, as on the API. A registry that trusts an external token issuer
has no users of its own: nobody can sign in, and anonymous visitors see nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from registry.auth.credentials import password_fingerprint
from registry.auth.guards import PasswordLogin
from registry.auth.rules import ALL_ACTIONS, NOTHING, Rules
from registry.config import Config
from ui.session import Session


@dataclass(frozen=True)
class Viewer:
    """A request's viewer: the session and, if it is signed in and still valid, the user."""

    session: Session
    user: str | None
    access: UiAccess

    def actions(self, repository: str) -> frozenset[str]:
        return self.access.actions(self.user, repository)

    def may_pull(self, repository: str) -> bool:
        return "pull" in self.actions(repository)

    def may_delete(self, repository: str) -> bool:
        return self.access.delete_enabled and "delete" in self.actions(repository)


class UiAccess:
    def __init__(self, config: Config, login: PasswordLogin | None, rules: Rules | None) -> None:
        self.open = config.auth.mode == "none"
        self.login = login
        self.rules = rules
        self.delete_enabled = config.storage.delete.enabled

    @property
    def can_sign_in(self) -> bool:
        return self.login is not None

    def actions(self, user: str | None, repository: str) -> frozenset[str]:
        if self.open:
            return ALL_ACTIONS
        if self.rules is None:
            return NOTHING
        return self.rules.actions(user, repository)

    async def viewer(self, session: Session) -> Viewer:
        """The session's viewer; its user only while their password is the one it was
        opened with (a removed user, or a changed password, ends the session)."""
        user = session.user
        if user is not None and await self._fingerprint(user) != session.fingerprint:
            user = None
        return Viewer(session, user, self)

    async def sign_in(self, name: str, password: str, address: str) -> str | None:
        """The new session's password fingerprint, or None if the password is wrong.
        Raises the API's 429 RegistryError while throttled, as the API does."""
        if self.login is None or not name or not password:
            return None
        if not await self.login.login(name, password, address):
            return None
        return await self._fingerprint(name)

    async def _fingerprint(self, user: str) -> str | None:
        if self.login is None:
            return None
        hashed = await self.login.checker.users.hash_of(user)
        return None if hashed is None else password_fingerprint(hashed)
