"""The storage driver a configuration names (the server, and the commands that work on
its storage without serving: `gc`, `du`, `check`, `maintenance`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from registry.config import Config, S3Config
from storage.driver import StorageDriver
from storage.filesystem import FilesystemDriver
from storage.memory import MemoryDriver

if TYPE_CHECKING:
    from storage.s3 import S3Settings


def create_driver(config: Config) -> StorageDriver:
    if config.storage.driver == "memory":
        return MemoryDriver()
    if config.storage.driver == "s3":
        from storage.s3 import S3Driver  # boto3 costs ~10 MB a worker: only when used

        return S3Driver(s3_settings(config.storage.s3))
    return FilesystemDriver(config.storage.filesystem.root)


def s3_settings(config: S3Config) -> S3Settings:
    from storage.s3 import S3Settings

    secret = config.secret_key.get_secret_value() if config.secret_key else None
    return S3Settings(**{**config.model_dump(exclude={"secret_key"}), "secret_key": secret})
