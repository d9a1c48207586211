"""Filesystem driver: keys are files below one root directory.

Atomicity comes from writing aside (a dot-file in the target directory), fsync,
then `os.replace`; dot-files are never listed. All disk work runs in threads.
Append-only logs (`open_log`) are files appended in place (fdatasync'ed when asked).

A writer's state is its file. Ownership is `flock(LOCK_EX | LOCK_NB)` on it, which
the kernel drops when the owner closes it or dies; the owner then checks the key
still names the locked file (a commit or cancel may have moved it meanwhile). Commit
fsyncs and renames that locked file, so it stores exactly the bytes `chunks()` read
from the same descriptor.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import functools
import multiprocessing
import os
import shutil
import stat
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import BinaryIO, ParamSpec, TypeVar

import aiofiles
import aiofiles.os
import aiofiles.threadpool
from aiofiles.threadpool.binary import AsyncBufferedIOBase

from storage import nowait
from storage.driver import (
    READ_CHUNK,
    AppendLog,
    FileInfo,
    KeyConflictError,
    PathNotFoundError,
    StorageDriver,
    StorageError,
    StorageFullError,
    Versioned,
    Writer,
    WriterBusyError,
    check_key,
)

_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)  # Linux only
# A listing is remembered only once its directory has not changed for this long, so
# a change within the same timestamp tick as our read can never hide behind it.
_SETTLED_NS = 1_000_000_000
_REMEMBERED_LISTINGS = 10_000
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
# Deleting many files (the collector's sweep) waits on the disk: an SSD mounted with
# `discard` makes each unlink or rmdir that frees a block wait for its discard (~60 us
# here), so several deleters at once overlap those waits. They are processes, not
# threads: threads of one interpreter hand its lock over around every system call, and
# on 2 CPUs those hand-overs (a million context switches a 100,000-blob sweep) cost
# more CPU than the deletions (bench/RESULTS.md, gc-profile).
_DELETING_PROCESSES = max(2, min(4, os.cpu_count() or 1))
_DELETED_IN_ONE_THREAD = 64  # fewer paths than this: one thread, in this process

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _reports_full_disk(method: Callable[_P, Awaitable[_T]]) -> Callable[_P, Awaitable[_T]]:
    """Raise a full disk or quota (ENOSPC, EDQUOT) of a writing method as
    `StorageFullError`, which the API answers with a clear error, not a traceback."""

    @functools.wraps(method)
    async def writing(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await method(*args, **kwargs)
        except OSError as error:
            if error.errno not in _NO_SPACE:
                raise
            where = f": {error.filename}" if error.filename else ""
            raise StorageFullError(f"{error.strerror}{where}") from None

    return writing


def _read_cached(fd: int, size: int, offset: int) -> memoryview | None:
    """Up to `size` bytes at `offset` if the page cache holds them, else None.

    A read with RWF_NOWAIT never waits for the disk, so it may run on the event loop;
    it spares the thread hop, which cost as much as the copy itself (downloads of
    cached blobs: ~40% less CPU, 1.9 -> 2.7 GB/s on one stream). The bytes are
    answered as a view of the buffer they were read into: a copy into `bytes` cost
    as much CPU as the read.
    """
    if _NOWAIT is None:
        return None
    buffer = bytearray(size)
    try:
        count = os.preadv(fd, [buffer], offset, _NOWAIT)
    except OSError:  # EAGAIN: not cached; EOPNOTSUPP: a filesystem without NOWAIT
        return None
    if count == 0:
        return None  # the end, or nothing cached yet: the blocking read tells which
    return memoryview(buffer)[:count]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _in_new_folder(make: Callable[[], None]) -> None:
    """Run `make`, which creates a folder and then a file in it, again if a concurrent
    `_remove` took the folder away in between (it removes a folder once emptied)."""
    for attempt in range(5):
        try:
            make()
            return
        except (FileNotFoundError, FileExistsError):  # mkdir saw it, then it was gone
            if attempt == 4:
                raise


def _replace_durably(source: Path, destination: Path, durable: bool = True) -> None:
    def replace() -> None:
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, destination)

    _in_new_folder(replace)
    if durable:
        with contextlib.suppress(FileNotFoundError):  # deleted since, folder and all
            _fsync_dir(destination.parent)


def _written_aside(path: Path, data: bytes, durable: bool = True) -> Path:
    """A dot-file holding `data` next to `path` (`durable`: fsynced)."""
    temp = path.parent / f".tmp-{uuid.uuid4().hex}"

    def write() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temp, "wb") as file:
            file.write(data)
            if durable:
                file.flush()
                os.fsync(file.fileno())

    try:
        _in_new_folder(write)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def _write_atomically(path: Path, data: bytes, durable: bool = True) -> None:
    temp = _written_aside(path, data, durable)
    try:
        _replace_durably(temp, path, durable)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _version(info: os.stat_result) -> str:
    return f"{info.st_ino}:{info.st_mtime_ns}:{info.st_size}"


def _read_versioned(path: Path) -> tuple[bytes, os.stat_result]:
    with open(path, "rb") as file:
        return file.read(), os.fstat(file.fileno())


def _create(path: Path, data: bytes, durable: bool) -> str | None:
    """link(2) of a complete dot-file: atomic, and fails if the name exists."""
    temp = _written_aside(path, data, durable)
    try:
        os.link(temp, path)
    except FileExistsError:
        return None
    finally:
        temp.unlink(missing_ok=True)
    if durable:
        _fsync_dir(path.parent)
    return _version(os.stat(path))


def _replace_if(path: Path, data: bytes, version: str) -> str | None:
    """Compare and swap under an flock of a dot-file beside `path` (every `replace`
    of the key takes it, in any process on this machine)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent / f".{path.name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if _version(os.stat(path)) != version:
                return None
        except FileNotFoundError:
            return None
        _write_atomically(path, data)
        return _version(os.stat(path))
    finally:
        os.close(fd)


def _scan(root: Path, *directories: str) -> list[FileInfo]:
    """Every file below these directories (dot-files and dot-folders skipped); strings,
    not pathlib: the collector scans every blob with it."""
    found = []
    start = len(str(root)) + 1
    folders = list(directories)
    while folders:
        try:
            entries = os.scandir(folders.pop())
        except (FileNotFoundError, NotADirectoryError):
            continue  # removed while we walked
        with entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.path)
                        continue
                    info = entry.stat()
                except FileNotFoundError:
                    continue
                found.append(FileInfo(entry.path[start:], info.st_size, info.st_mtime))
    return found


def _scan_leaves(root: Path, directory: str, name: str) -> list[FileInfo]:
    """The files `<directory>/<folder>/<folder>/<name>` (dot-names skipped)."""
    return _stat_each(
        root,
        (
            f"{directory}/{first}/{second}/{name}"
            for first in _listed(directory)
            for second in _listed(f"{directory}/{first}")
        ),
    )


def _stat_each(root: Path, paths: Iterable[str]) -> list[FileInfo]:
    """Those of the paths that are files (a folder emptied or being filled is skipped)."""
    found = []
    start = len(str(root)) + 1
    for path in paths:
        try:
            info = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if stat.S_ISREG(info.st_mode):
            found.append(FileInfo(path[start:], info.st_size, info.st_mtime))
    return found


def _listed(directory: str) -> list[str]:
    try:
        return [entry for entry in os.listdir(directory) if not entry.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return []  # removed while we walked


def _create_empty(path: str) -> None:
    """An empty file is whole as soon as it exists (or is truncated): nothing to write aside."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644))
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644))


def _link_empty(first: str, path: str) -> None:
    """`path` as a hard link to the empty file `first` (an empty file of its own if
    something is there already: replaced, as `put_markers` promises)."""
    try:
        os.link(first, path)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.link(first, path)  # FileNotFoundError again: `first` is gone (the caller's case)
    except FileExistsError:
        _create_empty(path)


def _create_empty_files(paths: list[str]) -> None:
    """An empty file at each path: the first created, the others hard links to it. One
    inode a batch, not one a marker: ext4 searches long for a free inode among many
    just freed, as a sweep's deletions leave them (most of a sweep's kernel time went
    there). They share the first's time, which is no older than this call."""
    first = None
    for path in paths:
        if first is not None:
            try:
                _in_new_folder(functools.partial(_link_empty, first, path))
                continue
            except FileNotFoundError:
                pass  # `first` was removed meanwhile: start again from this one
            except OSError as error:
                if error.errno != errno.EMLINK:
                    raise  # (EMLINK: `first` has all the links it can: a new one)
        _in_new_folder(functools.partial(_create_empty, path))
        first = path


@functools.cache
def _deleting() -> ProcessPoolExecutor:
    """The deleting processes, started when a process first deletes a large batch (the
    collector's sweep; a server's requests delete fewer), by a fork server: forking
    this process itself, with its threads, is not safe."""
    return ProcessPoolExecutor(_DELETING_PROCESSES, multiprocessing.get_context("forkserver"))


def _delete_groups(root: Path, groups: list[tuple[list[str], list[str]]]) -> None:
    """Each group in turn: its files, then its `after` files. Then, once for all the
    groups, the folders they emptied (one rmdir each: a folder holding one of `after`
    goes with it, and a folder many groups share, as a repository's `_layers/<alg>`
    holding link files, is tried once), and the folders above those that went, if that
    emptied them, climbing only from a folder that went (its parent holds nothing else
    of ours if it did not). Never a folder of the top two levels (`blobs/sha256`)."""
    lowest = str(root).count("/") + 3  # depth of `blobs/sha256/ab`
    emptied: set[str] = set()
    for paths, after in groups:
        for path in (*paths, *after):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            emptied.add(os.path.dirname(path))
    above: dict[int, set[str]] = defaultdict(set)  # depth -> folders to try, once each
    for folder in sorted(emptied, key=lambda folder: folder.count("/"), reverse=True):
        if folder.count("/") >= lowest and _removed(folder):
            above[folder.count("/") - 1].add(os.path.dirname(folder))
    for depth in range(max(above, default=0), lowest - 1, -1):
        for folder in above.pop(depth, ()):
            if not _holds_folders(folder) and _removed(folder):
                above[depth - 1].add(os.path.dirname(folder))


def _holds_folders(folder: str) -> bool:
    """Whether the folder still holds a folder, by its link count (2 and one per
    subfolder on ext4, XFS and tmpfs; 1 on btrfs and past ext4's 65,000 subfolders:
    then rmdir tells). A stat takes none of the locks a failing rmdir takes on the
    folder and its parent: a collection's sweep tries a repository's `_layers/<alg>`
    once per fan-out folder, and it is nearly never empty."""
    try:
        return os.stat(folder).st_nlink > 2
    except FileNotFoundError:
        return False


def _removed(folder: str) -> bool:
    """Whether the folder is gone now (removed by us or by another process) rather than
    holding something."""
    try:
        os.rmdir(folder)
    except FileNotFoundError:
        return True  # removed by another process: its parent may be empty now
    except OSError:
        return False  # not empty
    return True


def _by_folder(paths: list[str]) -> list[list[str]]:
    grouped: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        grouped[os.path.dirname(path)].append(path)
    return list(grouped.values())


def _stamp(info: os.stat_result) -> tuple[int, int, int, int]:
    return (info.st_ino, info.st_mtime_ns, info.st_ctime_ns, info.st_size)


class _Listings:
    """Directory listings, reused while the directory's stat is unchanged.

    Adding or removing an entry changes a directory's mtime and ctime, whichever
    process does it, so one `stat` tells whether a remembered listing still holds.
    """

    def __init__(self) -> None:
        self._seen: dict[str, tuple[tuple[int, int, int, int], list[str]]] = {}

    def remembered(self, key: str, info: os.stat_result) -> list[str] | None:
        """The listing of `key` if it is remembered and `info` says it still holds."""
        seen = self._seen.get(key)
        if seen is not None and seen[0] == _stamp(info):
            return list(seen[1])
        return None

    def list(self, key: str, path: Path) -> list[str]:
        info = os.stat(path)
        if (names := self.remembered(key, info)) is not None:
            return names
        stamp = _stamp(info)
        names = [name for name in os.listdir(path) if not name.startswith(".")]
        if time.time_ns() - max(info.st_mtime_ns, info.st_ctime_ns) > _SETTLED_NS:
            if len(self._seen) >= _REMEMBERED_LISTINGS:
                self._seen.clear()
            self._seen[key] = (stamp, names)
        return list(names)


def _remove(path: Path, root: Path) -> None:
    """Remove a file or a folder, then its folder if that is left empty: a listing of the
    parent must not show a key that is gone (as the S3 driver removes emptied folders)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    if path.parent != root:
        with contextlib.suppress(OSError):  # not empty (or already gone)
            path.parent.rmdir()


def _open_owned(path: Path, key: str, create: bool) -> BinaryIO:
    """The writer file at `path`, opened to append and locked by us (see the module
    docstring)."""
    flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC
    for attempt in range(3):
        try:
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, flags | (os.O_CREAT if create else 0), 0o644)
        except (FileNotFoundError, NotADirectoryError):
            if create and attempt < 2:
                continue  # a concurrent delete removed the directory just made
            raise PathNotFoundError(key) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise WriterBusyError(key) from None
        try:
            named = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            named = False
        if named:
            if create:
                os.ftruncate(fd, 0)
            return open(fd, "ab")  # the writer closes it
        os.close(fd)  # committed or cancelled between our open and our lock
        if not create:
            raise PathNotFoundError(key)
    raise PathNotFoundError(key)


def _close_opened(opening: asyncio.Future[BinaryIO]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


class FilesystemWriter(Writer):
    """Owns its file through the lock on `fd` until close, commit or cancel."""

    def __init__(self, driver: FilesystemDriver, path: Path, file: AsyncBufferedIOBase):
        self._driver = driver
        self._path = path
        self._fd = file.fileno()
        self._file = file
        info = os.fstat(self._fd)
        self._inode = info.st_ino
        self.size = info.st_size

    @property
    def version(self) -> str:
        return f"{self._inode}:{self.size}"

    @_reports_full_disk
    async def write(self, data: bytes) -> None:
        await self._file.write(data)
        self.size += len(data)

    async def chunks(self) -> AsyncIterator[bytes]:
        await self._file.flush()
        offset = 0
        while offset < self.size:
            size = min(READ_CHUNK, self.size - offset)
            chunk = await asyncio.to_thread(os.pread, self._fd, size, offset)
            if not chunk:
                raise StorageError(f"{self._path.name} is shorter than what was written")
            offset += len(chunk)
            yield chunk

    @_reports_full_disk
    async def close(self) -> None:
        if not self._file.closed:
            await self._file.close()  # flushes; closing the descriptor drops the lock

    @_reports_full_disk
    async def commit(self, destination: str) -> None:
        await self._file.flush()
        await asyncio.to_thread(os.fsync, self._fd)
        try:  # renamed while still locked: nobody appended since `chunks()` read it
            await asyncio.to_thread(_replace_durably, self._path, self._driver.path(destination))
        finally:
            await self.close()

    @_reports_full_disk
    async def cancel(self) -> None:
        try:
            await asyncio.to_thread(self._path.unlink, missing_ok=True)
        finally:
            await self.close()


def _open_log(path: Path) -> int:
    """A new file at `path`, locked (flock) before it appears: its descriptor."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f".tmp-{uuid.uuid4().hex}"
    fd = os.open(temp, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.link(temp, path)  # fails if `path` exists
        _fsync_dir(path.parent)
    except BaseException:
        os.close(fd)
        raise
    finally:
        temp.unlink(missing_ok=True)
    return fd


def _append(fd: int, data: bytes, sync: bool) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    if sync:
        os.fdatasync(fd)


def _sync_and_close(fd: int) -> None:
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


class FilesystemLog(AppendLog):
    """A file this process holds an flock on (the kernel drops it when the process dies);
    `_delete_closed` removes a log only once it can take that lock itself."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd
        self._in_thread: set[asyncio.Future[None]] = set()  # the descriptor's users
        self.size = 0

    def _run(self, function: Callable[..., None], *args: object) -> asyncio.Future[None]:
        """`function(fd, *args)` in a thread; `close` waits for it, even if cancelled."""
        assert self._fd is not None
        running = asyncio.ensure_future(asyncio.to_thread(function, self._fd, *args))
        self._in_thread.add(running)
        running.add_done_callback(self._in_thread.discard)
        return asyncio.shield(running)

    @_reports_full_disk
    async def append(self, data: bytes, sync: bool = True) -> None:
        if self._fd is None:
            raise StorageError("the log is closed")
        try:
            await self._run(_append, data, sync)
        except BaseException:
            with contextlib.suppress(OSError):
                await self.close()  # part of `data` may be in it: no append may follow
            raise
        self.size += len(data)

    async def sync(self) -> None:
        if self._fd is not None:
            await self._run(os.fdatasync)

    async def close(self) -> None:
        """Sync what was appended, then let the file go."""
        fd, self._fd = self._fd, None
        if fd is not None:
            if self._in_thread:
                await asyncio.wait(self._in_thread)
            await asyncio.to_thread(_sync_and_close, fd)


def _delete_closed(path: Path, size: int) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its writer is alive
        info = os.fstat(fd)
        if info.st_size != size:
            return False
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == info.st_ino:
                path.unlink()
        return True
    finally:
        os.close(fd)


class FilesystemDriver(StorageDriver):
    name = "filesystem"
    appends_in_place = True
    # Two: each call is Python work in a thread around system calls, which two threads
    # overlap, while more only fight for the GIL and the folders' locks (100,000 blobs
    # on 2 CPUs: 11.3-13.6 s with 2, 11.8-13.1 s with 1, 13.3-19.1 s with 4; 30,000
    # took 6-8 s with 8). What waits on the disk, deleting, overlaps inside `delete_many`.
    bulk_concurrency = 2

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._prefix = f"{self.root}/"
        self._listings = _Listings()

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _location(self, key: str) -> str:
        """`path(key)` as a string, without pathlib's cost (for `storage.nowait` and the
        collector's calls on many keys at once)."""
        return self._prefix + check_key(key)

    def _raw(self, key: str) -> bytes:
        return os.fsencode(self._location(key))

    async def get(self, key: str) -> bytes:
        try:
            # Cached: on the event loop (see storage.nowait); else one thread hop for
            # open, read and close. These small reads are on hot paths.
            data = nowait.read_cached(self._raw(key))
            return data if data is not None else await asyncio.to_thread(self.path(key).read_bytes)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise PathNotFoundError(key) from None

    @_reports_full_disk
    async def put(self, key: str, data: bytes) -> None:
        try:
            await asyncio.to_thread(_write_atomically, self.path(key), data)
        except (IsADirectoryError, NotADirectoryError) as error:
            raise KeyConflictError(f"{key}: {error.strerror}") from None

    async def reader(
        self, key: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        try:
            fd = nowait.open_cached(self._raw(key))  # a small blob's GET: no thread at all
            if fd is None:
                fd = await asyncio.to_thread(os.open, self.path(key), os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise PathNotFoundError(key) from None
        end = None if length is None else offset + length
        reading: asyncio.Future[bytes] | None = None
        try:
            while end is None or offset < end:
                size = READ_CHUNK if end is None else min(READ_CHUNK, end - offset)
                chunk = _read_cached(fd, size, offset)
                if chunk is None:
                    loop = asyncio.get_running_loop()
                    reading = loop.run_in_executor(None, os.pread, fd, size, offset)
                    chunk = await asyncio.shield(reading)  # a cancel leaves it running
                if not chunk:
                    break
                offset += len(chunk)
                yield chunk
        finally:
            if reading is not None and not reading.done():
                # Cancelled mid-read: close once the thread is done with the descriptor.
                reading.add_done_callback(lambda _: os.close(fd))
            else:
                os.close(fd)

    @_reports_full_disk
    async def writer(self, key: str, append: bool = False) -> FilesystemWriter:
        path = self.path(key)
        opening = asyncio.ensure_future(asyncio.to_thread(_open_owned, path, key, not append))
        try:
            file = await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(_close_opened)  # never leave the lock held
            raise
        return FilesystemWriter(self, path, aiofiles.threadpool.wrap(file))

    async def stat(self, key: str) -> FileInfo:
        try:
            result = nowait.stat_cached(self._raw(key)) or await aiofiles.os.stat(self.path(key))
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFoundError(key) from None
        return FileInfo(key, result.st_size, result.st_mtime)

    async def exists(self, key: str) -> bool:
        """An object, not a folder (a folder is a prefix, as on S3)."""
        try:
            result = nowait.stat_cached(self._raw(key)) or await aiofiles.os.stat(self.path(key))
        except (FileNotFoundError, NotADirectoryError):
            return False
        return not stat.S_ISDIR(result.st_mode)

    async def list(self, prefix: str) -> list[str]:
        try:
            info = nowait.stat_cached(self._raw(prefix))
            if info is not None and (names := self._listings.remembered(prefix, info)) is not None:
                return names
            return await asyncio.to_thread(self._listings.list, prefix, self.path(prefix))
        except (FileNotFoundError, NotADirectoryError):
            return []

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(_remove, self.path(key), self.root)

    async def scan(self, prefix: str) -> list[FileInfo]:
        return await asyncio.to_thread(_scan, self.root, self._location(prefix))

    async def scan_leaves(self, prefix: str, name: str) -> list[FileInfo]:
        return await asyncio.to_thread(_scan_leaves, self.root, self._location(prefix), name)

    async def scan_named(self, prefix: str, names: Collection[str], leaf: str) -> list[FileInfo]:
        located = [self._location(f"{prefix}/{name}/{leaf}") for name in names]
        return await asyncio.to_thread(_stat_each, self.root, located)

    async def delete_many(self, keys: list[str]) -> None:
        paths = [self._location(key) for key in keys]
        await self._delete_groups([(folder, []) for folder in _by_folder(paths)])

    async def delete_then(self, groups: Sequence[tuple[list[str], list[str]]]) -> None:
        located = [
            ([self._location(key) for key in keys], [self._location(key) for key in after])
            for keys, after in groups
        ]
        await self._delete_groups(located)

    async def _delete_groups(self, groups: list[tuple[list[str], list[str]]]) -> None:
        """`_delete_groups`; many paths in `_DELETING_PROCESSES` at once, each group in
        one process (none waits for another's group). A deleting process that died (the
        pool is then broken), processes that cannot start (no shared memory for their
        semaphores, as in a container without /dev/shm) or a deletion that failed leave
        the batch to a thread here: deleting is idempotent, each group is deleted in its
        order again, and what really fails fails there."""
        if sum(len(keys) + len(after) for keys, after in groups) < _DELETED_IN_ONE_THREAD:
            await asyncio.to_thread(_delete_groups, self.root, groups)
            return
        loop = asyncio.get_running_loop()
        shares = [groups[n::_DELETING_PROCESSES] for n in range(_DELETING_PROCESSES)]
        try:
            await asyncio.gather(
                *(
                    loop.run_in_executor(_deleting(), _delete_groups, self.root, share)
                    for share in shares
                    if share
                )
            )
        except (BrokenProcessPool, OSError) as error:
            if isinstance(error, BrokenProcessPool):
                _deleting.cache_clear()  # the next batch starts new processes
            await asyncio.to_thread(_delete_groups, self.root, groups)

    @_reports_full_disk
    async def put_visible(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(_write_atomically, self.path(key), data, False)

    @_reports_full_disk
    async def put_markers(self, keys: list[str]) -> None:
        """In one thread, without fsync: the page cache already shows them to every
        process on this machine."""
        await asyncio.to_thread(_create_empty_files, [self._location(key) for key in keys])

    async def read_versioned(self, key: str) -> Versioned:
        try:
            data, info = await asyncio.to_thread(_read_versioned, self.path(key))
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise PathNotFoundError(key) from None
        return Versioned(data, _version(info), time.time() - info.st_mtime)

    @_reports_full_disk
    async def create(self, key: str, data: bytes, durable: bool = True) -> str | None:
        return await asyncio.to_thread(_create, self.path(key), data, durable)

    @_reports_full_disk
    async def replace(self, key: str, data: bytes, version: str) -> str | None:
        return await asyncio.to_thread(_replace_if, self.path(key), data, version)

    @_reports_full_disk
    async def open_log(self, key: str) -> FilesystemLog:
        return FilesystemLog(await asyncio.to_thread(_open_log, self.path(key)))

    async def delete_closed(self, key: str, size: int) -> bool:
        return await asyncio.to_thread(_delete_closed, self.path(key), size)
