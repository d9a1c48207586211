"""Bearer tokens: signed JWTs with the spec's `access` claim, and refresh tokens.

An access token names its subject, audience (the registry's `service`) and the
exact actions granted per resource. A refresh token is a JWT too, but carries
no access, is marked `use: refresh`, and holds a fingerprint of the user's
password hash: removing the user or changing the password revokes it.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
from cachetools import TLRUCache

from registry.auth.credentials import password_fingerprint
from registry.auth.keys import SigningKey, VerificationKey
from registry.auth.scopes import Scope

LEEWAY_SECONDS = 10
MAX_TOKEN_BYTES = 64 << 10  # larger bearer tokens are refused unread (ours stay far below)
CACHE_BYTES = 16 << 20  # verified tokens remembered per process, by their estimated size
# Estimated memory of a cache entry beyond the token's text, measured with tracemalloc:
# per entry, and per granted resource (plus its type and name).
_ENTRY_OVERHEAD = 1200
_GRANT_OVERHEAD = 450
_REFRESH = "refresh"


class InvalidTokenError(Exception):
    """The token cannot be trusted; the message is safe to show (it holds no token)."""


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int
    issued_at: str


@dataclass(frozen=True)
class AccessToken:
    subject: str
    grants: dict[tuple[str, str], frozenset[str]]

    def allows(self, scope: Scope) -> bool:
        granted = self.grants.get((scope.type, scope.name), frozenset())
        return "*" in granted or scope.actions <= granted


@dataclass(frozen=True)
class _Verified:
    access: AccessToken
    not_before: float
    expires: float
    size: int  # estimated bytes it holds in the cache, its token included


def _footprint(token: str, access: AccessToken) -> int:
    """Estimated bytes a cache entry holds: its token and its grants."""
    grants = sum(_GRANT_OVERHEAD + len(kind) + len(name) for kind, name in access.grants)
    return _ENTRY_OVERHEAD + len(token) + grants


def _expiry(token: str, verified: _Verified, now: float) -> float:
    return verified.expires + LEEWAY_SECONDS


def _size(verified: _Verified) -> int:
    return verified.size


class TokenSigner:
    """Signs tokens with `key`; a key kept in the storage is set at startup, before any
    request (until then the signer refuses to sign)."""

    def __init__(
        self,
        key: SigningKey | None,
        issuer: str,
        service: str,
        expires_in: int,
        refresh_expires_in: int,
    ) -> None:
        self.key = key
        self.issuer = issuer
        self.service = service
        self.expires_in = expires_in
        self.refresh_expires_in = refresh_expires_in

    def _sign(self, subject: str, lifetime: int, extra: dict[str, Any]) -> tuple[str, int]:
        if self.key is None:
            raise RuntimeError("the token signing key is read at startup: not started")
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + lifetime,
            "nbf": now,
            "iat": now,
            "jti": secrets.token_urlsafe(16),
            **extra,
        }
        headers = {"kid": self.key.kid, "typ": "JWT"}
        return jwt.encode(claims, self.key.private, self.key.algorithm, headers), now

    def access_token(self, subject: str, scopes: list[Scope]) -> IssuedToken:
        access = [scope.claim() for scope in scopes]
        token, now = self._sign(subject, self.expires_in, {"access": access})
        issued_at = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return IssuedToken(token, self.expires_in, issued_at)

    def refresh_token(self, subject: str, hashed_password: str) -> str:
        extra = {"use": _REFRESH, "pwd": password_fingerprint(hashed_password)}
        return self._sign(subject, self.refresh_expires_in, extra)[0]


class TokenVerifier:
    def __init__(self, keys: list[VerificationKey], issuer: str, audience: str) -> None:
        self.keys = {key.kid: key for key in keys}
        self.issuer = issuer
        self.audience = audience
        # Signature checks cost far more than serving a small blob; a client reuses its
        # token for many requests, so remember verified ones (until they expire), in a
        # cache bounded in bytes: a few huge tokens must not grow the process without end.
        self._verified: TLRUCache[str, _Verified] = TLRUCache(
            CACHE_BYTES, _expiry, timer=time.time, getsizeof=_size
        )

    def _decode(self, token: str, required: list[str]) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise InvalidTokenError("malformed token") from None
        kid = header.get("kid")
        if kid is None and len(self.keys) == 1:
            key = next(iter(self.keys.values()))
        elif isinstance(kid, str) and kid in self.keys:
            key = self.keys[kid]
        else:
            raise InvalidTokenError("token signed by an unknown key")
        if header.get("alg") not in key.algorithms:
            raise InvalidTokenError("token signed with a refused algorithm")
        try:
            return jwt.decode(
                token,
                key.key,
                algorithms=list(key.algorithms),
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "aud", "iss", "sub", *required]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidTokenError("token expired") from None
        except jwt.InvalidAudienceError:
            raise InvalidTokenError("token issued for another service") from None
        except jwt.InvalidIssuerError:
            raise InvalidTokenError("token from an untrusted issuer") from None
        except (jwt.InvalidTokenError, ValueError, TypeError) as error:
            raise InvalidTokenError(f"invalid token: {type(error).__name__}") from None

    def verify_access(self, token: str) -> AccessToken:
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidTokenError(f"token larger than {MAX_TOKEN_BYTES} bytes")
        now = time.time()
        cached = self._verified.get(token)
        if cached is not None and cached.not_before - LEEWAY_SECONDS <= now:
            return cached.access
        claims = self._decode(token, ["access"])
        access = self._access(claims)
        verified = _Verified(
            access,
            float(claims.get("nbf", 0)),
            float(claims["exp"]),
            _footprint(token, access),
        )
        with contextlib.suppress(ValueError):  # larger than the whole cache: not kept
            self._verified[token] = verified
        return verified.access

    @staticmethod
    def _access(claims: dict[str, Any]) -> AccessToken:
        if claims.get("use") == _REFRESH:
            raise InvalidTokenError("a refresh token is not an access token")
        grants: dict[tuple[str, str], frozenset[str]] = {}
        access = claims["access"]
        if not isinstance(access, list):
            raise InvalidTokenError("malformed access claim")
        for entry in access:
            if not (
                isinstance(entry, dict)
                and isinstance(entry.get("type"), str)
                and isinstance(entry.get("name"), str)
                and isinstance(entry.get("actions"), list)
                and all(isinstance(action, str) for action in entry["actions"])
            ):
                raise InvalidTokenError("malformed access claim")
            resource = (entry["type"], entry["name"])
            grants[resource] = grants.get(resource, frozenset()) | frozenset(entry["actions"])
        return AccessToken(str(claims["sub"]), grants)

    def verify_refresh(self, token: str) -> tuple[str, str]:
        """(subject, password fingerprint) of a refresh token."""
        claims = self._decode(token, ["use", "pwd"])
        if claims["use"] != _REFRESH:
            raise InvalidTokenError("not a refresh token")
        return str(claims["sub"]), str(claims["pwd"])
