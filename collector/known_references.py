"""What each manifest references, kept in a local SQLite file from one collection to the next.

The mark reads every manifest of every repository on every run: on S3 a GetObject a
manifest, each hour, for months, which the storage answers beside the serving
traffic. A manifest's bytes never change under its digest, so what a run parsed from
them (its subject and every digest it holds) is true for good: a later run that finds
the digest here reads nothing. Being keyed by digest, an entry is right for any
storage, so one file serves every registry of the machine (`gc.cache_dir`).

The file is a cache and nothing else: an entry is only ever what the bytes under its
digest say, and any error opening, reading or writing the file is a miss (logged once),
never a failed run; a file found damaged is removed, for the next run to start afresh.
It is written in SQLite's WAL mode with `synchronous = NORMAL`, which a crash of the
process or the machine never leaves half-written (it may lose the last writes). It is
bounded in bytes (`gc.cache_bytes`, which SQLite enforces: its `max_page_count`; the
write-ahead log adds up to a checkpoint's 4 MiB); a run that fills it removes it when
done, so the next starts afresh with the manifests stored then.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from registry.config import GcConfig

log = logging.getLogger("dockyard.gc")

FILE_NAME = "gc-references.sqlite"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS manifests (digest TEXT PRIMARY KEY, subject TEXT, refs TEXT)"
    " WITHOUT ROWID"
)
_PENDING = 1000  # entries held in memory before they are written


@dataclass(frozen=True, slots=True)
class Known:
    subject: str | None  # a digest
    references: list[str]  # every digest string the manifest holds (itself not included)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dockyard"


class KnownReferences:
    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self._path = path
        self._pending: dict[str, Known] = {}  # added, not yet written
        self._adding = True  # until the file is full or failed
        self._reading = True  # until the file failed
        self._remove = False  # at the end: full or damaged

    @classmethod
    @contextlib.contextmanager
    def opened(cls, config: GcConfig) -> Iterator[KnownReferences | None]:
        """The cache `config` names (None when it is off or cannot be used), written out
        and closed at the end."""
        known = cls._open(config)
        try:
            yield known
        finally:
            if known is not None:
                known.close()

    @classmethod
    def _open(cls, config: GcConfig) -> KnownReferences | None:
        if config.cache_bytes == 0:
            return None
        path = (config.cache_dir or default_cache_dir()) / FILE_NAME
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                connection = _connect(path, config.cache_bytes)
            except sqlite3.OperationalError:
                raise  # locked, unreadable: not ours to remove
            except sqlite3.DatabaseError:  # not a database (damaged): start afresh
                _remove(path)
                connection = _connect(path, config.cache_bytes)
            return cls(connection, path)
        except (OSError, sqlite3.Error) as error:
            log.warning("gc: no cache of manifests' references at %s: %s", path, error)
            return None

    def get(self, digest: str) -> Known | None:
        if (pending := self._pending.get(digest)) is not None:
            return pending
        if not self._reading:
            return None
        try:
            row = self._db.execute(
                "SELECT subject, refs FROM manifests WHERE digest = ?", (digest,)
            ).fetchone()
        except sqlite3.Error as error:
            self._failed(error)
            return None
        if row is None:
            return None
        return Known(row[0], row[1].split())

    def add(self, digest: str, known: Known) -> None:
        """Remember what the bytes stored under `digest` reference (written in batches)."""
        if not self._adding:
            return
        self._pending[digest] = known
        if len(self._pending) >= _PENDING:
            self._write()

    def close(self) -> None:
        self._write()
        self._db.close()
        if self._remove:
            _remove(self._path)

    def _write(self) -> None:
        if self._pending and self._adding:
            try:
                with self._db:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO manifests VALUES (?, ?, ?)",
                        [
                            (digest, known.subject, " ".join(known.references))
                            for digest, known in self._pending.items()
                        ],
                    )
            except sqlite3.Error as error:
                self._failed(error)
        self._pending.clear()

    def _failed(self, error: sqlite3.Error) -> None:
        """Stop using the file for the rest of the run (a full one only for adding)."""
        self._adding = False
        if getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            self._remove = True  # at its bound: the next run starts afresh
            return
        log.warning("gc: the cache of manifests' references at %s failed: %s", self._path, error)
        self._reading = False
        # Locked or unreadable, it is left as it is; damaged, it goes.
        self._remove = not isinstance(error, sqlite3.OperationalError)


def _connect(path: Path, max_bytes: int) -> sqlite3.Connection:
    # Two runs on one machine at once (a dry run beside a server's) wait for each
    # other's writes.
    connection = sqlite3.connect(path, timeout=10.0)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.execute(_SCHEMA)
    page = connection.execute("PRAGMA page_size").fetchone()[0]
    connection.execute(f"PRAGMA max_page_count = {max(max_bytes // page, 2)}")
    return connection


def _remove(path: Path) -> None:
    """The file and its write-ahead log."""
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()
