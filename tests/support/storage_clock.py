"""The filesystem driver's clock is its files' times: what a killed process left (a lease,
tombs) expires after minutes by them, so a test sets them back instead of waiting."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable
from pathlib import Path


def set_back(files: Iterable[Path], seconds: float) -> None:
    """Make these files `seconds` older (missing ones are skipped)."""
    then = time.time() - seconds
    for path in files:
        with contextlib.suppress(FileNotFoundError):
            os.utime(path, (then, then))
