"""A small object made once by whichever process comes first, then read by all: the
generated keys (token signing, web UI sessions) that every worker and replica sharing
the storage must agree on.

It is stored by a conditional write (`create`), so when processes race exactly one
object wins. An empty object is a creation cut off half-way (some S3 servers keep one):
it is replaced, conditionally, so racing processes still end with one.
"""

from __future__ import annotations

from collections.abc import Callable

from storage.driver import PathNotFoundError, StorageDriver, StorageError

_ROUNDS = 3


class KeepsChangingError(StorageError):
    """The object was removed or replaced under us round after round."""


async def create_once(driver: StorageDriver, key: str, new: Callable[[], bytes]) -> bytes:
    """The object at `key`, created there with `new()` if there is none yet."""
    for _ in range(_ROUNDS):
        if await driver.create(key, data := new()) is not None:
            return data
        try:
            stored = await driver.read_versioned(key)
        except PathNotFoundError:
            continue  # removed meanwhile: create it again
        if stored.data:
            return stored.data
        if await driver.replace(key, data, stored.version) is not None:
            return data
    raise KeepsChangingError(f"{key} could not be created or read (it keeps changing)")
