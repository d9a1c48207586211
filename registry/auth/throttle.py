"""Slowing down password guessing, with counters shared by every worker of a server.

Three counters of failed logins, each with its own threshold; past it, attempts
that count against it are refused (429 with Retry-After) until a delay has
passed, the delay doubling with each further failure up to `max_delay`:

- one user from one address (`max_failures`): guessing one password is slow;
  a success resets it;
- one address, any users (`address_max_failures`): spraying many users from
  one place is slow;
- one user from anywhere (`user_max_failures`, much higher): spraying one user
  from many addresses is slow. It does not apply from addresses the user has
  signed in from in the last `TRUST_SECONDS`, so nobody can lock the owner out
  of their usual place by failing elsewhere.

An attempt counts as a failure before the password is checked (`begin`), so
concurrent guesses cannot all slip through before the first failure is
recorded; a success or an attempt that never ran gives it back. IPv6 clients
are counted by their /64 network: one host easily holds a whole /64.

The counters live in a small SQLite database (WAL) in `state_dir`, which
`dockyard serve` creates for its workers; without one (an app built in-process)
they live in memory. The async methods run the (brief, blocking) SQLite work in a thread.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from registry.config import ThrottleConfig

DATABASE_NAME = "throttle.sqlite3"
TRUST_SECONDS = 30 * 86400
FORGET_SECONDS = 86400  # counters with no failure for this long are dropped
MAX_ROWS = 100_000  # beyond this, the oldest counters are dropped
_PRUNE_EVERY = 1000  # attempts between prunings, per process

_SCHEMA = """
CREATE TABLE IF NOT EXISTS failures (
    key TEXT PRIMARY KEY, count INTEGER NOT NULL, last REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS failures_by_last ON failures (last);
CREATE TABLE IF NOT EXISTS trusted (
    user TEXT NOT NULL, network TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (user, network)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS trusted_by_at ON trusted (at);
"""


def network_of(address: str) -> str:
    """What failures are counted against: the IPv4 address, or the IPv6 /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(frozen=True)
class _Counter:
    key: str
    threshold: int
    waived_when_trusted: bool = False


class Throttle:
    def __init__(self, config: ThrottleConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._attempts = 0

    # --- async interface (each call runs in a thread) ---

    async def begin(self, user: str, address: str) -> int:
        """0 and the attempt counted as a failure, or the seconds to wait before trying."""
        return await asyncio.to_thread(self.begin_now, user, network_of(address))

    async def succeeded(self, user: str, address: str) -> None:
        await asyncio.to_thread(self.succeeded_now, user, network_of(address))

    async def cancel(self, user: str, address: str) -> None:
        """The attempt begun never checked a password: give its failure back."""
        await asyncio.to_thread(self.cancel_now, user, network_of(address))

    # --- the work, blocking ---

    def _counters(self, user: str, network: str) -> list[_Counter]:
        user = user[:64]
        return [
            _Counter(f"pair\0{user}\0{network}", self.config.max_failures),
            _Counter(f"address\0{network}", self.config.address_max_failures),
            _Counter(f"user\0{user}", self.config.user_max_failures, waived_when_trusted=True),
        ]

    def _wait(self, count: int, last: float, threshold: int, now: float) -> float:
        excess = count - threshold
        if excess < 0:
            return 0.0
        delay = min(self.config.base_delay * 2 ** min(excess, 32), self.config.max_delay)
        return last + delay - now

    def begin_now(self, user: str, network: str, now: float | None = None) -> int:
        now = time.time() if now is None else now
        counters = self._counters(user, network)
        with self._transaction() as db:
            trusted = db.execute(
                "SELECT 1 FROM trusted WHERE user = ? AND network = ? AND at > ?",
                (user[:64], network, now - TRUST_SECONDS),
            ).fetchone()
            wait = 0.0
            for counter in counters:
                if counter.waived_when_trusted and trusted:
                    continue
                row = db.execute(
                    "SELECT count, last FROM failures WHERE key = ?", (counter.key,)
                ).fetchone()
                if row is not None:
                    wait = max(wait, self._wait(row[0], row[1], counter.threshold, now))
            if wait > 0:
                return math.ceil(wait)
            db.executemany(
                "INSERT INTO failures VALUES (?, 1, ?)"
                " ON CONFLICT (key) DO UPDATE SET count = count + 1, last = excluded.last",
                [(counter.key, now) for counter in counters],
            )
            self._attempts += 1
            if self._attempts % _PRUNE_EVERY == 1:
                self._prune(db, now)
        return 0

    def succeeded_now(self, user: str, network: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        pair, *others = self._counters(user, network)
        with self._transaction() as db:
            db.execute("DELETE FROM failures WHERE key = ?", (pair.key,))
            self._give_back(db, others)
            db.execute(
                "INSERT INTO trusted VALUES (?, ?, ?)"
                " ON CONFLICT (user, network) DO UPDATE SET at = excluded.at",
                (user[:64], network, now),
            )

    def cancel_now(self, user: str, network: str) -> None:
        with self._transaction() as db:
            self._give_back(db, self._counters(user, network))

    @staticmethod
    def _give_back(db: sqlite3.Connection, counters: list[_Counter]) -> None:
        db.executemany(
            "UPDATE failures SET count = max(count - 1, 0) WHERE key = ?",
            [(counter.key,) for counter in counters],
        )

    @staticmethod
    def _prune(db: sqlite3.Connection, now: float) -> None:
        db.execute("DELETE FROM failures WHERE last < ?", (now - FORGET_SECONDS,))
        db.execute("DELETE FROM trusted WHERE at < ?", (now - TRUST_SECONDS,))
        db.execute(
            "DELETE FROM failures WHERE key IN"
            " (SELECT key FROM failures ORDER BY last DESC LIMIT -1 OFFSET ?)",
            (MAX_ROWS,),
        )
        db.execute(
            "DELETE FROM trusted WHERE (user, network) IN"
            " (SELECT user, network FROM trusted ORDER BY at DESC LIMIT -1 OFFSET ?)",
            (MAX_ROWS,),
        )

    def _connect(self) -> sqlite3.Connection:
        state_dir = self.config.state_dir
        if state_dir is None:
            path = ":memory:"
        else:
            state_dir.mkdir(parents=True, exist_ok=True)
            path = str(state_dir / DATABASE_NAME)
        db = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.executescript(_SCHEMA)
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, serialised with the other workers by SQLite's lock."""
        with self._lock:
            if self._db is None:
                self._db = self._connect()
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
