"""Checking user names and passwords: a cache of verified ones, and a bounded bcrypt pool.

bcrypt is slow on purpose (tens to hundreds of milliseconds per check), far too
slow to run on every blob request of a pull. A verified credential is remembered
under a keyed BLAKE2 hash of it (never the password itself) for `ttl` seconds,
and every entry is dropped as soon as the users file changes; callers look there
first, so requests whose credentials are already verified never wait for bcrypt.

bcrypt itself runs in a pool of its own, one thread per CPU, which admits at
most `LOGIN_QUEUE` checks waiting beyond the running ones: a flood of unverified
passwords gets `LoginsBusy` (429) quickly instead of queueing without bound.

A user that does not exist is checked against a dummy hash of the cost most
common in the users file, so the time taken does not tell whether a name exists.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor

import bcrypt

from registry.auth.htpasswd import MAX_PASSWORD_BYTES, Users

_CACHE_LIMIT = 10_000  # entries of a fixed, small size (a 64-byte key, two numbers)
LOGIN_THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
LOGIN_QUEUE = 32  # checks waiting for a thread, per process

NO_CREDENTIALS = ("", "")


def password_fingerprint(hashed: str) -> str:
    """What a refresh token and a web session hold of the user's password hash: a
    changed password or a removed user no longer matches it."""
    return hashlib.sha256(hashed.encode()).hexdigest()[:32]


class LoginsBusy(Exception):
    """Too many password checks are already waiting."""


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
    except ValueError:  # binascii.Error, UnicodeDecodeError, and non-ASCII input
        return None
    name, sep, password = decoded.partition(":")
    if not sep:
        return None
    return name, password


def dummy_hash(cost: int) -> bytes:
    """A hash no password matches that costs as much to check as a real one of `cost`."""
    return bcrypt.gensalt(cost) + b"." * 31


def check_password(password: str, hashed: str | None, dummy_cost: int) -> bool:
    """bcrypt's verdict; without a usable hash, the same work against a dummy, and False."""
    secret = password.encode()
    if hashed is None or len(secret) > MAX_PASSWORD_BYTES:  # never set: cannot be right
        bcrypt.checkpw(secret[:MAX_PASSWORD_BYTES], dummy_hash(dummy_cost))
        return False
    return bcrypt.checkpw(secret, hashed.encode())


class BcryptPool:
    """bcrypt checks in their own threads, with a bounded number waiting."""

    def __init__(self, threads: int, queue: int) -> None:
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="dockyard-bcrypt")
        self._limit = threads + queue
        self._admitted = 0

    async def check(self, password: str, hashed: str | None, dummy_cost: int) -> bool:
        if self._admitted >= self._limit:
            raise LoginsBusy
        self._admitted += 1
        work = asyncio.get_running_loop().run_in_executor(
            self._executor, check_password, password, hashed, dummy_cost
        )
        work.add_done_callback(self._release)  # when the thread is done, not the caller
        return await asyncio.shield(work)

    def _release(self, _: asyncio.Future[bool]) -> None:
        self._admitted -= 1


class PasswordChecker:
    def __init__(self, users: Users, ttl: float, pool: BcryptPool) -> None:
        self.users = users
        self.ttl = ttl
        self.pool = pool
        self._salt = os.urandom(16)
        self._verified: dict[bytes, tuple[float, int]] = {}

    def key(self, name: str, password: str) -> bytes:
        return hashlib.blake2b(f"{name}\0{password}".encode(), key=self._salt).digest()

    async def remembered(self, key: bytes) -> bool:
        """Whether this credential was verified recently (and the users file is unchanged)."""
        await self.users.refresh()
        cached = self._verified.get(key)
        return (
            cached is not None
            and cached[1] == self.users.generation
            and cached[0] > time.monotonic()
        )

    async def check(self, key: bytes, name: str, password: str) -> bool:
        """bcrypt in the pool (raises LoginsBusy when it is full); remembers a success."""
        hashed = await self.users.hash_of(name)
        generation = self.users.generation
        valid = await self.pool.check(password, hashed, self.users.typical_cost)
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
