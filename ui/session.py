"""Web UI sessions: a signed, expiring cookie, and the CSRF token tied to it.

The cookie holds a random session id, the signed-in user (or none) and a fingerprint
of that user's password hash, signed with itsdangerous (HMAC-SHA256) and timestamped:
one older than `ui.session_lifetime`, or altered in any byte, is no session at all.
The fingerprint makes removing a user or changing their password end their sessions.
Every visitor gets a session, anonymous ones too, so that the sign-in form has a CSRF
token as well; signing in starts a new session id.

The signing key is a random object in the storage (`_ui/session-key`, made by
`storage.created_once`), so every worker and replica sharing the storage signs and checks
with the same key and nothing lives in one process's memory but a copy of it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, Signer, URLSafeTimedSerializer

from storage import paths
from storage.created_once import create_once
from storage.driver import StorageDriver

COOKIE_NAME = "dockyard_ui"
COOKIE_PATH = "/ui/"
_SALT = "dockyard.ui.session"
_CSRF_SALT = "dockyard.ui.csrf"


@dataclass(frozen=True, slots=True)
class Session:
    sid: str
    user: str | None = None
    fingerprint: str | None = None

    @classmethod
    def anonymous(cls) -> Session:
        return cls(secrets.token_urlsafe(24))


class SessionKey:
    """The storage's session key, read (or created) once per process."""

    def __init__(self, driver: StorageDriver) -> None:
        self._driver = driver
        self._key: bytes | None = None

    async def get(self) -> bytes:
        if self._key is None:
            new = lambda: secrets.token_hex(32).encode()  # noqa: E731
            self._key = await create_once(self._driver, paths.ui_session_key(), new)
        return self._key


class Sessions:
    def __init__(self, key: SessionKey, lifetime: float) -> None:
        self._key = key
        self.lifetime = lifetime

    async def _serializer(self) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(
            await self._key.get(), salt=_SALT, signer_kwargs={"digest_method": hashlib.sha256}
        )

    async def load(self, cookie: str | None) -> Session | None:
        """The session a cookie holds; None if absent, expired, altered or malformed."""
        if not cookie or len(cookie) > 4096:
            return None
        try:
            data = (await self._serializer()).loads(cookie, max_age=self.lifetime)
        except BadSignature:  # SignatureExpired included
            return None
        if not (isinstance(data, dict) and isinstance(data.get("s"), str)):
            return None
        user, fingerprint = data.get("u"), data.get("f")
        if not (isinstance(user, str) and isinstance(fingerprint, str)):
            user = fingerprint = None
        return Session(data["s"], user, fingerprint)

    async def dump(self, session: Session) -> str:
        document = {"s": session.sid, "u": session.user, "f": session.fingerprint}
        return (await self._serializer()).dumps(document)

    async def csrf_token(self, session: Session) -> str:
        signer = Signer(await self._key.get(), salt=_CSRF_SALT, digest_method=hashlib.sha256)
        return signer.get_signature(session.sid).decode()

    async def csrf_valid(self, session: Session, token: str | None) -> bool:
        expected = await self.csrf_token(session)
        return token is not None and hmac.compare_digest(expected.encode(), token.encode())


def cookie_header(value: str, lifetime: float, secure: bool) -> str:
    """The Set-Cookie value: HttpOnly, SameSite=Strict, Secure under TLS."""
    parts = [
        f"{COOKIE_NAME}={value}",
        f"Path={COOKIE_PATH}",
        f"Max-Age={int(lifetime)}",
        "HttpOnly",
        "SameSite=Strict",
    ]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)
