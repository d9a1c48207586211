"""Slowing down password guessing: failed logins per client address and per user name.

After `max_failures` failures in a row, every further attempt from that address
or for that user is refused (429 with Retry-After) until a delay has passed; the
delay doubles with each further failure, up to `max_delay`. A success resets
both counters. State is per process: with N workers a guesser gets at most N
times the attempts, still exponentially slowed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from registry.config import ThrottleConfig

_LIMIT = 100_000


@dataclass
class _Record:
    failures: int
    blocked_until: float
    last: float


class Throttle:
    def __init__(self, config: ThrottleConfig) -> None:
        self.config = config
        self._records: dict[str, _Record] = {}

    def retry_after(self, *keys: str) -> int:
        """Seconds to wait before any of `keys` may try again; 0 if it may now."""
        now = time.monotonic()
        wait = 0.0
        for key in keys:
            record = self._records.get(key)
            if record is not None:
                wait = max(wait, record.blocked_until - now)
        return math.ceil(wait) if wait > 0 else 0

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        self._forget_old(now)
        for key in keys:
            record = self._records.setdefault(key, _Record(0, 0.0, now))
            record.failures += 1
            record.last = now
            excess = record.failures - self.config.max_failures
            if excess >= 0:
                delay = min(self.config.base_delay * 2 ** min(excess, 32), self.config.max_delay)
                record.blocked_until = now + delay

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            self._records.pop(key, None)

    def _forget_old(self, now: float) -> None:
        if len(self._records) < _LIMIT:
            return
        horizon = now - self.config.max_delay
        self._records = {k: r for k, r in self._records.items() if r.last > horizon}
        if len(self._records) >= _LIMIT:
            self._records.clear()
