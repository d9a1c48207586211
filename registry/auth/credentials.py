"""Checking user names and passwords, with a short-lived cache of verified ones.

bcrypt is slow on purpose (tens of milliseconds per check), far too slow to
run on every blob request of a pull. A verified credential is remembered under
a keyed BLAKE2 hash of it (never the password itself) for `ttl` seconds, and every
entry is dropped as soon as the users file changes. Checks run in a thread,
and concurrent checks of one credential share a single bcrypt run.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import os
import time

import bcrypt

from registry.auth.htpasswd import MAX_PASSWORD_BYTES, Users

# Compared against when the user does not exist, so timing does not reveal that.
_DUMMY_HASH = bcrypt.hashpw(b"dockyard", bcrypt.gensalt(12))
_CACHE_LIMIT = 10_000


NO_CREDENTIALS = ("", "")


def parse_basic(header: str) -> tuple[str, str] | None:
    """(user, password) from an `Authorization: Basic …` value, or None if malformed.

    Some clients (containers/image) send empty credentials when they have none:
    those come back as `NO_CREDENTIALS` and mean anonymous.
    """
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    name, sep, password = decoded.partition(":")
    if not sep:
        return None
    return name, password


def _check(password: str, hashed: str | None) -> bool:
    secret = password.encode()
    if hashed is None or len(secret) > MAX_PASSWORD_BYTES:  # never set: cannot be right
        bcrypt.checkpw(secret[:MAX_PASSWORD_BYTES], _DUMMY_HASH)
        return False
    return bcrypt.checkpw(secret, hashed.encode())


class PasswordChecker:
    def __init__(self, users: Users, ttl: float) -> None:
        self.users = users
        self.ttl = ttl
        self._salt = os.urandom(16)
        self._verified: dict[bytes, tuple[float, int]] = {}
        self._running: dict[bytes, asyncio.Future[bool]] = {}

    def _key(self, name: str, password: str) -> bytes:
        return hashlib.blake2b(f"{name}\0{password}".encode(), key=self._salt).digest()

    async def verify(self, name: str, password: str) -> bool:
        hashed = await self.users.hash_of(name)
        key = self._key(name, password)
        generation = self.users.generation
        cached = self._verified.get(key)
        if cached is not None and cached[1] == generation and cached[0] > time.monotonic():
            return True
        running = self._running.get(key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        try:
            valid = await asyncio.to_thread(_check, password, hashed)
            future.set_result(valid)
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: waiters re-raise it, nobody else must log it
            raise
        finally:
            del self._running[key]
        if valid and self.ttl > 0:
            self._remember(key, generation)
        return valid

    def _remember(self, key: bytes, generation: int) -> None:
        now = time.monotonic()
        if len(self._verified) >= _CACHE_LIMIT:
            self._verified = {k: v for k, v in self._verified.items() if v[0] > now}
            if len(self._verified) >= _CACHE_LIMIT:
                self._verified.clear()
        self._verified[key] = (now + self.ttl, generation)
