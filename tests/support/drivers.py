"""Drivers for tests: a fresh one of each kind, and a second one on the same storage."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.app import s3_settings
from registry.config import S3Config
from storage.driver import StorageDriver
from storage.filesystem import FilesystemDriver
from storage.memory import MemoryDriver
from storage.s3 import S3Driver
from tests.support.seaweedfs import SeaweedFS, unique_prefix


def make_driver(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> StorageDriver:
    """A fresh, empty driver of `kind` ("memory", "filesystem" or "s3")."""
    if kind == "memory":
        return MemoryDriver()
    if kind == "s3":
        seaweedfs: SeaweedFS = request.getfixturevalue("seaweedfs")
        section = seaweedfs.storage_config(request.getfixturevalue("s3_bucket"), unique_prefix())
        return S3Driver(s3_settings(S3Config(**section["s3"])))
    return FilesystemDriver(tmp_path / "data")


def twin(driver: StorageDriver) -> StorageDriver:
    """A second driver on the same storage, as another process would have."""
    if isinstance(driver, FilesystemDriver):
        return FilesystemDriver(driver.root)
    if isinstance(driver, S3Driver):
        return S3Driver(driver.settings)
    assert isinstance(driver, MemoryDriver)
    return driver
