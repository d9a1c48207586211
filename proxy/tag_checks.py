"""When each cached tag was last confirmed upstream: a small object in the storage
(`paths.proxy_checked`), which every process and replica shares, read through a memory
of this process's own.

A warm pull by tag asks for the tag's age on every request. Reading the object each
time cost a thread hop on the filesystem (~40 µs of CPU, more than the rest of the
request) and a GetObject on S3. A confirmation only ever makes a tag younger: each
writes the object anew, later than the one before. So an age remembered here, plus the
time since it was read, is never less than the true age, and a tag served as fresh
from memory is fresh. An age that would be too old is read again (another process may
have confirmed the tag since).
"""

from __future__ import annotations

from collections import OrderedDict
from time import monotonic

from oci.references import Digest
from storage import paths
from storage.driver import PathNotFoundError, StorageDriver

# Tags remembered per process. Names and tags are of bounded length, so this bounds
# the memory too: under 3 MB.
KEPT = 4096


class TagChecks:
    def __init__(self, driver: StorageDriver) -> None:
        self._driver = driver
        # (repository, tag) -> (its age, the monotonic time before that age was read)
        self._ages: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()

    async def age(self, local: str, tag: str, fresh_for: float) -> float | None:
        """Seconds since the tag was last confirmed upstream, by the storage's clock, or
        more, when that is under `fresh_for`; None if it never was."""
        key = (local, tag)
        if (known := self._ages.get(key)) is not None:
            age = known[0] + monotonic() - known[1]
            if age < fresh_for:
                self._ages.move_to_end(key)
                return age
        asked = monotonic()
        try:
            age = (await self._driver.read_versioned(paths.proxy_checked(local, tag))).age
        except PathNotFoundError:
            self._ages.pop(key, None)
            return None
        self._remember(key, age, asked)
        return age

    async def confirm(self, local: str, tag: str, digest: Digest) -> None:
        """Record that the upstream's tag names `digest` now."""
        asked = monotonic()
        await self._driver.put(paths.proxy_checked(local, tag), str(digest).encode())
        self._remember((local, tag), 0.0, asked)

    def _remember(self, key: tuple[str, str], age: float, asked: float) -> None:
        self._ages[key] = (age, asked)
        self._ages.move_to_end(key)
        while len(self._ages) > KEPT:
            self._ages.popitem(last=False)
