"""The users file: htpasswd lines `name:bcrypt-hash`, bcrypt only.

`Users` serves lookups to the running server and notices when the file changes
(re-reading it at most once a second, off the event loop).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
import uuid
from collections import Counter
from pathlib import Path

import bcrypt

# A user name is a valid repository path component, so that `{user}/**` can be its own
# namespace and no two names share one (a component is lower case: `ALICE` would own
# `alice/**`).
USERNAME = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*")
USERNAME_MAX_LENGTH = 64
_BCRYPT = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")
DEFAULT_COST = 12
RECHECK_SECONDS = 1.0
MAX_PASSWORD_BYTES = 72  # bcrypt looks at no more

log = logging.getLogger("dockyard")


class HtpasswdError(Exception):
    """The users file or a user name cannot be used; the message says why."""


def check_username(name: str) -> str:
    if len(name) > USERNAME_MAX_LENGTH or not USERNAME.fullmatch(name):
        raise HtpasswdError(
            f"invalid user name {name[:64]!r}: a user name must be usable as its own"
            " repository namespace ({user}/...): lower-case letters and digits, separated"
            " by '.', '_', '__' or '-' (at most 64 characters)"
        )
    return name


def hash_password(password: str, rounds: int = DEFAULT_COST) -> str:
    if not password:
        raise HtpasswdError("the password must not be empty")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise HtpasswdError(f"the password is longer than bcrypt's {MAX_PASSWORD_BYTES} bytes")
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()


def parse(text: str, source: str = "htpasswd") -> dict[str, str]:
    """Users and their bcrypt hashes; any other kind of hash is refused, naming the line."""
    users: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, hashed = line.partition(":")
        if not sep:
            raise HtpasswdError(f"{source}:{number}: expected NAME:HASH")
        if not _BCRYPT.fullmatch(hashed):
            raise HtpasswdError(
                f"{source}:{number}: user {name!r} has a non-bcrypt password hash; only bcrypt "
                "is accepted (set it again with `dockyard user add` or `htpasswd -B`)"
            )
        try:
            users[check_username(name)] = hashed
        except HtpasswdError as error:
            raise HtpasswdError(f"{source}:{number}: {error}; edit or remove that line") from None
    return users


def cost_of(hashed: str) -> int:
    """The bcrypt cost (log2 of the rounds) of a hash from a users file."""
    match = _BCRYPT.fullmatch(hashed)
    return int(match[1]) if match else DEFAULT_COST


def typical_cost(users: dict[str, str]) -> int:
    """The most common cost among the hashes (the higher on a tie; the default if none)."""
    counts = Counter(cost_of(hashed) for hashed in users.values())
    if not counts:
        return DEFAULT_COST
    return max(counts, key=lambda cost: (counts[cost], cost))


def read(path: Path) -> dict[str, str]:
    try:
        return parse(path.read_text(), str(path))
    except FileNotFoundError:
        return {}


def write(path: Path, users: dict[str, str]) -> None:
    """Replace the file atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    text = "".join(f"{name}:{hashed}\n" for name, hashed in sorted(users.items()))
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


class Users:
    """The users of the running registry, kept in step with the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.generation = 0  # changes whenever the file did
        self._users: dict[str, str] = {}
        self.typical_cost = DEFAULT_COST  # unknown users are checked at this cost
        self._signature: tuple[int, int, int] | None = None
        self._checked = -RECHECK_SECONDS
        self._lock = asyncio.Lock()

    def load(self) -> None:
        """Read the file now (at start-up: a broken file stops the server)."""
        self._signature = _signature(self.path)
        self._set(read(self.path))
        self._checked = time.monotonic()

    def _set(self, users: dict[str, str]) -> None:
        self._users = users
        self.typical_cost = typical_cost(users)

    async def hash_of(self, name: str) -> str | None:
        await self.refresh()
        return self._users.get(name)

    async def refresh(self) -> None:
        """Re-read the file if it changed (looked at once a second at most)."""
        if time.monotonic() - self._checked < RECHECK_SECONDS:
            return
        async with self._lock:
            if time.monotonic() - self._checked < RECHECK_SECONDS:
                return
            signature = await asyncio.to_thread(_signature, self.path)
            if signature != self._signature:
                try:
                    self._set(await asyncio.to_thread(read, self.path))
                except (HtpasswdError, OSError):
                    # Keep serving the last good users rather than locking everyone out.
                    log.exception("cannot reload %s", self.path)
                self._signature = signature
                self.generation += 1
            self._checked = time.monotonic()
