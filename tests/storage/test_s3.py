"""What only the S3 driver has: its writer state in the bucket, multipart commits,
presigned redirects, and how it fails when S3 is down or slow."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import os
import socket
import tempfile
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import obstore
import pytest

from registry.app import create_app
from registry.config import Config, S3Config, load_config
from registry.drivers import s3_settings
from storage.driver import (
    PathNotFoundError,
    StorageFullError,
    StorageUnavailableError,
    Writer,
    WriterBusyError,
)
from storage.s3 import S3Driver, S3Settings, _parse_timestamp
from storage.s3_buffers import BufferBudget
from tests.support.seaweedfs import SeaweedFS
from tests.support.server import free_port


def bucket_keys(seaweedfs: SeaweedFS, driver: S3Driver) -> list[str]:
    listed = seaweedfs.client().list_objects_v2(
        Bucket=driver.settings.bucket, Prefix=driver.settings.prefix + "/"
    )
    return [item["Key"] for item in listed.get("Contents", [])]


def open_multipart_uploads(seaweedfs: SeaweedFS, driver: S3Driver) -> list[str]:
    listed = seaweedfs.client().list_multipart_uploads(
        Bucket=driver.settings.bucket, Prefix=driver.settings.prefix + "/"
    )
    return [upload["Key"] for upload in listed.get("Uploads", [])]


async def test_small_appends_live_in_the_bucket_as_a_tail(
    s3: S3Driver, seaweedfs: SeaweedFS
) -> None:
    await (await s3.writer("session/data")).close()
    for _ in range(3):
        writer = await S3Driver(s3.settings).writer("session/data", append=True)
        await writer.write(b"x" * 1000)
        await writer.close()
    state = f"{s3.settings.prefix}/_writers/session/data"
    assert bucket_keys(seaweedfs, s3) == [f"{state}/lease", f"{state}/tail-0"]
    assert (await s3.stat("session/data")).size == 3000


async def test_a_tail_absorbed_by_a_part_is_never_counted_twice(s3: S3Driver) -> None:
    """A crash between storing a full part and rewriting the tail leaves a stale tail."""
    part = os.urandom(s3.settings.part_size)
    await (await s3.writer("session/data")).close()
    await s3.put(s3.writer_key("session/data", "tail-0"), part[:100])
    await s3.put(s3.writer_key("session/data", "part-00001"), part)
    assert (await s3.stat("session/data")).size == len(part)
    writer = await s3.writer("session/data", append=True)
    await writer.write(b"end")
    await writer.close()
    assert not await s3.exists(s3.writer_key("session/data", "tail-0"))
    assert b"".join([c async for c in s3.reader("session/data")]) == part + b"end"


async def test_commit_assembles_parts_at_destination_and_leaves_nothing(
    s3: S3Driver, seaweedfs: SeaweedFS
) -> None:
    data = os.urandom(2 * s3.settings.part_size + 12345)
    writer = await s3.writer("session/data")
    await writer.write(data)
    await writer.close()
    parts = [key for key in bucket_keys(seaweedfs, s3) if "/part-" in key]
    assert len(parts) == 2
    writer = await S3Driver(s3.settings).writer("session/data", append=True)
    await writer.commit("blobs/content")
    assert await s3.get("blobs/content") == data
    assert bucket_keys(seaweedfs, s3) == [f"{s3.settings.prefix}/blobs/content"]
    assert open_multipart_uploads(seaweedfs, s3) == []


async def test_deleting_a_session_aborts_the_commit_a_crashed_process_left(
    s3: S3Driver, seaweedfs: SeaweedFS
) -> None:
    client = seaweedfs.client()
    target = s3.object_key("blobs/half")
    upload = client.create_multipart_upload(Bucket=s3.settings.bucket, Key=target)["UploadId"]
    await s3.put(s3.writer_key("dir/session/data", "commit"), f"blobs/half\n{upload}".encode())
    assert open_multipart_uploads(seaweedfs, s3) == [target]
    await s3.delete("dir/session")
    assert open_multipart_uploads(seaweedfs, s3) == []
    assert bucket_keys(seaweedfs, s3) == []


def record_boto3_calls(driver: S3Driver) -> list[str]:
    """Names of the S3 operations the driver calls through boto3 from now on."""
    recorded: list[str] = []
    driver._client.meta.events.register(
        "before-call.s3", lambda model, **_: recorded.append(model.name)
    )
    return recorded


def record_operations(driver: S3Driver) -> list[str]:
    """Names of the S3 operations the driver calls from now on, through either library."""
    operations = record_boto3_calls(driver)
    calls = driver._obstore  # the calls through obstore (storage/s3_obstore.py)
    for method, operation in OBSTORE_OPERATIONS.items():
        setattr(calls, method, _recorded(getattr(calls, method), operation, operations))
    return operations


OBSTORE_OPERATIONS = {  # put_empty makes many calls: test_markers_... counts them
    "put": "PutObject",
    "head": "HeadObject",
    "get": "GetObject",
    "stream": "GetObject",
    "children": "ListObjectsV2",
    "scan": "ListObjectsV2",  # one request a 1,000 keys: the tests list fewer
}


def _recorded(method: Any, operation: str, operations: list[str]) -> Any:
    if inspect.isasyncgenfunction(method):

        async def stream(*args: Any) -> Any:
            operations.append(operation)
            async for piece in method(*args):
                yield piece

        return stream

    async def call(*args: Any) -> Any:
        operations.append(operation)
        return await method(*args)

    return call


async def test_exists_is_one_head_and_a_miss_lists_nothing(s3: S3Driver) -> None:
    """Clients HEAD every blob before pushing it: a missing link costs one request."""
    await s3.put("links/present", b"x")
    operations = record_operations(s3)
    assert await s3.exists("links/present")
    assert not await s3.exists("links/missing")
    assert operations == ["HeadObject", "HeadObject"]
    # stat still finds a writer's bytes, which only a listing of its state shows.
    writer = await s3.writer("links/writing")
    await writer.write(b"abc")
    await writer.close()
    operations.clear()
    assert (await s3.stat("links/writing")).size == 3
    assert operations == ["HeadObject", "ListObjectsV2"]


async def test_markers_are_one_put_each_through_obstore(
    s3: S3Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collector's tombs: one PutObject a key through obstore, none through boto3
    (whose calls cost several times the CPU), at most `max_concurrency` in flight."""
    keys = [f"m/{i}/tomb" for i in range(3 * s3.settings.max_concurrency)]
    through_boto3 = record_boto3_calls(s3)
    put_async = obstore.put_async
    puts, in_flight, most = [], 0, 0

    async def counted(store: Any, key: str, data: bytes, **options: Any) -> Any:
        nonlocal in_flight, most
        puts.append(key)
        in_flight += 1
        most = max(most, in_flight)
        try:
            return await put_async(store, key, data, **options)
        finally:
            in_flight -= 1

    monkeypatch.setattr(obstore, "put_async", counted)
    await s3.put_markers(keys)
    assert sorted(puts) == sorted(s3.object_key(key) for key in keys)
    assert through_boto3 == [] and 1 < most <= s3.settings.max_concurrency
    for key in keys:
        assert await s3.get(key) == b""


async def test_a_small_object_is_one_put_through_obstore(s3: S3Driver) -> None:
    """Links, touches, tags: the small objects of every push, each for a fifth of the CPU
    boto3 takes (storage/s3_obstore.py)."""
    through_boto3 = record_boto3_calls(s3)
    operations = record_operations(s3)
    await s3.put("small/one", bytearray(b"abc"))
    assert operations == ["PutObject"] and through_boto3 == []
    assert await s3.get("small/one") == b"abc"


async def test_a_scan_reads_every_page_through_obstore(s3: S3Driver) -> None:
    """A collection lists every blob and link; obstore parses a page of 1,000 keys for
    a fifth of boto3's CPU (storage/s3_obstore.py), and pages on by itself."""
    keys = sorted(f"many/{n}/leaf" for n in range(1005))
    await s3.put_markers(keys)
    await s3.put(keys[0], b"abc")
    through_boto3 = record_boto3_calls(s3)
    found = await s3.scan("many")
    assert sorted(info.key for info in found) == keys
    assert {info.key: info.size for info in found}[keys[0]] == 3
    assert through_boto3 == []


async def test_a_sweep_batch_is_three_delete_objects(s3: S3Driver) -> None:
    """The collector's deletions of a fan-out folder: what the tombs cover, the tombs,
    then the folders emptied, once (a blob's folder holds its tomb until the second)."""
    groups = [([f"b/s/{i}/data", f"r/x/{i}/link"], [f"b/s/{i}/tomb-1"]) for i in range(3)]
    for keys, after in groups:
        for key in keys + after:
            await s3.put(key, b".")
    operations = record_operations(s3)
    await s3.delete_then(groups)
    assert operations == ["DeleteObjects"] * 3
    assert await s3.scan("b") == [] and await s3.scan("r") == []
    assert await s3.list("b/s") == [] and await s3.list("r/x") == []


async def test_get_of_a_missing_key_names_the_key_not_the_object(s3: S3Driver) -> None:
    await s3.put("links/tag", b"sha256:abc")
    assert await s3.get("links/tag") == b"sha256:abc"
    with pytest.raises(PathNotFoundError) as missing:
        await s3.get("links/none")
    assert missing.value.key == "links/none"  # without the driver's prefix


def test_timestamps_of_listings_and_of_head_answers_are_parsed() -> None:
    expected = datetime(2026, 11, 24, 4, 30, 5, tzinfo=UTC)
    for value in (
        "2026-11-24T04:30:05.000Z",  # ListObjectsV2
        "2026-11-24T04:30:05",
        "Tue, 24 Nov 2026 04:30:05 GMT",  # Last-Modified of HEAD and GET
        "Tuesday, 24-Nov-26 04:30:05 GMT",  # neither: botocore's own parser
    ):
        parsed = _parse_timestamp(value)
        assert parsed == expected and parsed.utcoffset() == timedelta(0), value


async def test_redirect_url_is_a_working_presigned_url(s3: S3Driver) -> None:
    await s3.put("blobs/x", b"content")
    assert await s3.redirect_url("blobs/x") is None
    redirecting = S3Driver(S3Settings(**{**s3_settings_dict(s3), "redirect": True}))
    url = await redirecting.redirect_url("blobs/x")
    assert url is not None and "X-Amz-Signature=" in url
    async with httpx.AsyncClient() as client:
        assert (await client.get(url)).content == b"content"
        unsigned = url.split("?", 1)[0]
        assert (await client.get(unsigned)).status_code == 403
    await redirecting.close()


def s3_settings_dict(driver: S3Driver) -> dict[str, Any]:
    return {field: getattr(driver.settings, field) for field in S3Settings.__dataclass_fields__}


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    server.close()


def unreachable_driver(port: int) -> S3Driver:
    return S3Driver(
        S3Settings(
            bucket="nowhere",
            endpoint_url=f"http://127.0.0.1:{port}",
            access_key="k",
            secret_key="s",
            region="us-east-1",
            addressing="path",
            connect_timeout=1,
            read_timeout=1,
            max_attempts=2,
        )
    )


@pytest.mark.parametrize("kind", ["refused", "silent"])
async def test_down_or_slow_s3_is_unavailable_not_a_hang(
    kind: str, request: pytest.FixtureRequest
) -> None:
    port = free_port() if kind == "refused" else request.getfixturevalue("silent_server")
    driver = unreachable_driver(port)
    started = time.monotonic()
    calls = (driver.get("a"), driver.put("a", b"x"), driver.put_markers(["a"]), driver.stat("a"))
    for call in calls:
        with pytest.raises(StorageUnavailableError, match="S3"):
            await asyncio.wait_for(call, timeout=30)
    assert time.monotonic() - started < 30
    await driver.close()


MINIO_FULL = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>XMinioStorageFull</Code>'
    b"<Message>Storage backend has reached its minimum free drive threshold.</Message></Error>"
)


@pytest.fixture
def full_server(request: pytest.FixtureRequest) -> Iterator[int]:
    """A loopback S3 that answers every write 507 Insufficient Storage with the body
    `request.param`, as a full MinIO does."""
    body: bytes = request.param

    class Full(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(507)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Full)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize(
    ("full_server", "said"),
    [(MINIO_FULL, "XMinioStorageFull"), (b"", "507")],
    indirect=["full_server"],
)
async def test_s3_out_of_space_is_storage_full(full_server: int, said: str) -> None:
    """Every write, through obstore (small objects, markers) or boto3 (parts), says the
    storage is full, which the API answers 507, not 503 as if S3 were down."""
    driver = unreachable_driver(full_server)
    writes = (
        driver.put("a", b"x"),
        driver.put_markers(["a", "b"]),
        driver.put_body("a", b"x" * 10, 10),
    )
    for write in writes:
        with pytest.raises(StorageFullError, match=said):
            await write
    await driver.close()


async def test_api_answers_503_when_s3_is_down() -> None:
    app = create_app(Config(), unreachable_driver(free_port()))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as client:
        response = await client.post("/v2/team/app/blobs/uploads/")
        digest = "sha256:" + "0" * 64
        blob = await client.get(f"/v2/team/app/blobs/{digest}")
    for answer in (response, blob):
        assert answer.status_code == 503
        assert answer.json()["errors"][0]["code"] == "UNAVAILABLE"
        assert answer.headers["Retry-After"] == "1"


def test_config_s3_section(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("storage:\n  driver: s3\n  s3:\n    bucket: images\n    secret_key: hush\n")
    monkeypatch.setenv("DOCKYARD_STORAGE__S3__ACCESS_KEY", "AKIDEXAMPLE")
    monkeypatch.setenv("DOCKYARD_STORAGE__S3__PART_SIZE", str(16 << 20))
    config = load_config(path)
    settings = s3_settings(config.storage.s3)
    assert (settings.bucket, settings.access_key, settings.secret_key) == (
        "images",
        "AKIDEXAMPLE",
        "hush",
    )
    assert settings.part_size == 16 << 20 and settings.redirect is False
    assert "hush" not in repr(config) and "hush" not in repr(settings)
    assert "hush" not in config.model_dump_json()


def test_s3_config_defaults_match_driver_defaults() -> None:
    config = s3_settings(S3Config(bucket="b"))
    assert config == S3Settings(bucket="b")


async def test_server_side_encryption_is_requested_for_every_object(
    s3: S3Driver, seaweedfs: SeaweedFS
) -> None:
    encrypted = S3Driver(S3Settings(**{**s3_settings_dict(s3), "server_side_encryption": "AES256"}))
    data = os.urandom(s3.settings.part_size + 10)
    await encrypted.put("small", b"secret layer")
    await encrypted.put_markers(["marker"])
    writer = await encrypted.writer("session/data")
    await writer.write(data)
    await writer.commit("big")
    client = seaweedfs.client()
    for key, content in (("small", b"secret layer"), ("big", data), ("marker", b"")):
        head = client.head_object(Bucket=s3.settings.bucket, Key=s3.object_key(key))
        assert head.get("ServerSideEncryption") == "AES256"
        assert await encrypted.get(key) == content
    await encrypted.close()


async def test_a_blob_beyond_the_part_limit_is_refused_clearly(
    s3: S3Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("storage.s3.MAX_PARTS", 3)
    small_parts = S3Driver(S3Settings(**{**s3_settings_dict(s3), "part_size": 5 << 20}))
    transport = httpx.ASGITransport(app=create_app(Config(), small_parts))
    async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as client:
        location = (await client.post("/v2/team/app/blobs/uploads/")).headers["Location"]
        answer = await client.patch(location, content=os.urandom(16 << 20))
    assert answer.status_code == 413
    assert answer.json()["errors"][0]["code"] == "SIZE_INVALID"
    assert "at most 2 full parts on S3" in answer.json()["errors"][0]["message"]
    await small_parts.close()


class RecordingBudget(BufferBudget):
    """A buffer budget that remembers the most slots ever in use at once."""

    peak = 0

    def try_acquire(self) -> bool:
        taken = super().try_acquire()
        self.peak = max(self.peak, self.in_use)
        return taken


def tiny_budget_driver(s3: S3Driver) -> tuple[S3Driver, RecordingBudget]:
    """A driver on `s3`'s storage with 5 MiB parts and room for two of them."""
    settings = {**s3_settings_dict(s3), "part_size": 5 << 20, "buffer_memory": 10 << 20}
    driver = S3Driver(S3Settings(**settings))
    driver.buffer_budget = budget = RecordingBudget(2)
    return driver, budget


@pytest.fixture
def spill_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The directory of the temporary files that part buffers spill to."""
    directory = tmp_path / "spill"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


def open_files_in(directory: Path) -> int:
    """How many files of `directory` this process has open (unnamed ones included)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}").startswith(f"{directory}/")
    return count


async def writer_without_waiting(driver: S3Driver, key: str, append: bool = False) -> Writer:
    """`driver.writer()`, failing rather than hanging if it waits for another writer."""
    return await asyncio.wait_for(driver.writer(key, append=append), timeout=60)


async def write_in_pieces(writer: Writer, data: bytes) -> None:
    for start in range(0, len(data), 1 << 20):
        await writer.write(data[start : start + (1 << 20)])


async def test_concurrent_writers_share_a_tiny_buffer_budget(s3: S3Driver, spill_dir: Path) -> None:
    driver, budget = tiny_budget_driver(s3)
    part = driver.settings.part_size
    contents = [os.urandom(2 * part + 1000 * n) for n in range(5)]

    async def upload(number: int, data: bytes) -> None:
        writer = await driver.writer(f"session-{number}/data")
        await write_in_pieces(writer, data)
        await writer.commit(f"blobs/{number}")

    tracemalloc.start()
    try:
        # The timeout only turns a deadlock into a failure; nothing here is timed.
        uploads = (upload(n, data) for n, data in enumerate(contents))
        await asyncio.wait_for(asyncio.gather(*uploads), timeout=300)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    for number, data in enumerate(contents):
        assert await driver.get(f"blobs/{number}") == data
    assert budget.peak == 2 and budget.in_use == 0
    assert open_files_in(spill_dir) == 0
    # Two parts in memory, the others in files; per writer its 1 MiB piece of input and
    # the 1 MiB that botocore reads at a time to sign a part it sends from a file; 4 MiB
    # for botocore's own buffers (a busy machine's retries: 0.4 MiB over 2 MiB was seen).
    # Parts of all five writers in memory would be 15 MiB more.
    assert peak < 2 * part + len(contents) * (2 << 20) + (4 << 20), f"{peak} bytes at the peak"
    await driver.close()


async def test_writers_never_wait_for_idle_writers_holding_every_slot(
    s3: S3Driver, spill_dir: Path
) -> None:
    """Slow clients holding all the memory must not stall the other uploads."""
    driver, budget = tiny_budget_driver(s3)
    idle = [await driver.writer(f"idle-{n}/data") for n in range(budget.slots)]
    for writer in idle:
        await writer.write(b"started")
    part = driver.settings.part_size
    contents = [os.urandom(2 * part + 100), os.urandom(1000)]

    async def upload(number: int, data: bytes) -> None:
        writer = await driver.writer(f"session-{number}/data")
        await write_in_pieces(writer, data)
        await writer.commit(f"blobs/{number}")

    # The timeout only turns waiting for the idle writers into a failure.
    uploads = (upload(n, data) for n, data in enumerate(contents))
    await asyncio.wait_for(asyncio.gather(*uploads), timeout=120)
    for number, data in enumerate(contents):
        assert await driver.get(f"blobs/{number}") == data
    assert open_files_in(spill_dir) == 0
    assert budget.in_use == budget.slots
    for writer in idle:
        await writer.close()
    assert budget.in_use == 0
    await driver.close()


async def test_spilled_parts_and_tails_carry_across_requests(s3: S3Driver, spill_dir: Path) -> None:
    driver, budget = tiny_budget_driver(s3)
    idle = [await driver.writer(f"idle-{n}/data") for n in range(budget.slots)]
    part = driver.settings.part_size
    data = os.urandom(3 * part + 777)
    cuts = [0, part + 1000, part + 2000, 3 * part - 5, len(data)]  # tails across requests
    await (await writer_without_waiting(driver, "session/data")).close()
    for start, end in itertools.pairwise(cuts):
        writer = await writer_without_waiting(driver, "session/data", append=True)
        assert open_files_in(spill_dir) == 1  # its part buffer is a file
        await write_in_pieces(writer, data[start:end])
        await writer.close()
        assert open_files_in(spill_dir) == 0
        assert (await driver.stat("session/data")).size == end
    assert b"".join([c async for c in driver.reader("session/data")]) == data
    writer = await writer_without_waiting(driver, "session/data", append=True)
    await writer.commit("blobs/content")
    assert open_files_in(spill_dir) == 0
    assert await driver.get("blobs/content") == data
    for writer in idle:
        await writer.close()
    assert budget.peak == budget.slots and budget.in_use == 0
    await driver.close()


async def test_spill_files_are_deleted_on_cancel_and_failure(
    s3: S3Driver, spill_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver, budget = tiny_budget_driver(s3)
    idle = [await driver.writer(f"idle-{n}/data") for n in range(budget.slots)]
    writer = await writer_without_waiting(driver, "cancelled/data")
    await writer.write(os.urandom(1000))
    assert open_files_in(spill_dir) == 1
    await writer.cancel()
    assert open_files_in(spill_dir) == 0
    assert not await driver.exists("cancelled/data")

    async def failing_put(key: str, body: Any, length: int) -> None:
        raise StorageUnavailableError("S3 PutObject failed")

    monkeypatch.setattr(driver, "put_body", failing_put)
    writer = await writer_without_waiting(driver, "failed/data")
    with pytest.raises(StorageUnavailableError):
        await write_in_pieces(writer, os.urandom(driver.settings.part_size + 10))
    with pytest.raises(StorageUnavailableError):
        await writer.close()
    assert open_files_in(spill_dir) == 0
    for writer in idle:
        await writer.close()
    await driver.close()


def hold_parts(
    driver: S3Driver, monkeypatch: pytest.MonkeyPatch
) -> tuple[asyncio.Event, asyncio.Event]:
    """Make the driver's part uploads set the first event, then wait for the second."""
    part_sending, part_may_finish = asyncio.Event(), asyncio.Event()
    put_body = driver.put_body

    async def held_put(key: str, body: Any, length: int) -> None:
        if "/part-" in key:
            part_sending.set()
            await part_may_finish.wait()
        await put_body(key, body, length)

    monkeypatch.setattr(driver, "put_body", held_put)
    return part_sending, part_may_finish


async def test_a_cancelled_upload_request_gives_its_buffers_back(
    s3: S3Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver, budget = tiny_budget_driver(s3)
    part_sending, part_may_finish = hold_parts(driver, monkeypatch)
    never = asyncio.Event()

    async def stalling_body() -> AsyncIterator[bytes]:
        yield os.urandom(6 << 20)  # a part on its way to S3 and a partial part
        await never.wait()

    transport = httpx.ASGITransport(app=create_app(Config(), driver))
    async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as client:
        location = (await client.post("/v2/team/app/blobs/uploads/")).headers["Location"]
        request = asyncio.create_task(client.patch(location, content=stalling_body()))
        await part_sending.wait()
        assert budget.in_use == 2
        request.cancel()
        part_may_finish.set()
        with pytest.raises(asyncio.CancelledError):
            await request
        assert budget.in_use == 0
        status = await client.get(location)
    assert status.headers["Range"] == f"0-{(6 << 20) - 1}"  # what was received is kept
    await driver.close()


def test_buffer_memory_must_hold_two_parts() -> None:
    with pytest.raises(ValueError, match=r"buffer_memory \(20971520\) must hold at least two"):
        S3Config(bucket="b", part_size=16 << 20, buffer_memory=20 << 20)
    assert S3Config(bucket="b", part_size=16 << 20, buffer_memory=32 << 20)


async def test_a_cancelled_spilled_upload_request_deletes_its_file(
    s3: S3Driver, spill_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver, budget = tiny_budget_driver(s3)
    idle = [await driver.writer(f"idle-{n}/data") for n in range(budget.slots)]
    part_sending, part_may_finish = hold_parts(driver, monkeypatch)
    never = asyncio.Event()

    async def stalling_body() -> AsyncIterator[bytes]:
        yield os.urandom(6 << 20)  # a part on its way to S3 from the file
        await never.wait()

    transport = httpx.ASGITransport(app=create_app(Config(), driver))
    async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as client:
        location = (await client.post("/v2/team/app/blobs/uploads/")).headers["Location"]
        request = asyncio.create_task(client.patch(location, content=stalling_body()))
        # The timeout only turns waiting for the idle writers into a failure.
        await asyncio.wait_for(part_sending.wait(), timeout=60)
        assert open_files_in(spill_dir) == 1
        request.cancel()
        part_may_finish.set()
        with pytest.raises(asyncio.CancelledError):
            await request
        assert open_files_in(spill_dir) == 0
        status = await client.get(location)
    # The part finished after the cancellation; the rest of the chunk never reached a file.
    assert status.headers["Range"] == f"0-{driver.settings.part_size - 1}"
    for writer in idle:
        await writer.close()
    assert budget.in_use == 0
    await driver.close()


async def test_a_piece_changed_under_a_writer_is_never_committed(s3: S3Driver) -> None:
    """Commits pin every stored piece by ETag: bytes that were not hashed never land."""
    data = os.urandom(s3.settings.part_size + 10)
    writer = await s3.writer("session/data")
    await writer.write(data)
    await writer.close()
    writer = await s3.writer("session/data", append=True)
    hashed = b"".join([chunk async for chunk in writer.chunks()])
    assert hashed == data
    # What a stalled writer whose lease expired could still do: rewrite a part.
    await s3.put(s3.writer_key("session/data", "part-00001"), os.urandom(s3.settings.part_size))
    with pytest.raises(WriterBusyError):
        await writer.commit("blobs/content")
    assert not await s3.exists("blobs/content")


async def test_an_expired_lease_is_taken_over_and_its_holder_stops(
    s3: S3Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    stalled = await s3.writer("session/data")
    await stalled.write(b"stalled")
    with pytest.raises(WriterBusyError):
        await S3Driver(s3.settings).writer("session/data", append=True)
    monkeypatch.setattr("storage.s3.LEASE_SECONDS", 0.0)  # as if it stalled for its length
    taker = await S3Driver(s3.settings).writer("session/data", append=True)
    with pytest.raises(WriterBusyError):
        await stalled.commit("blobs/content")
    assert not await s3.exists("blobs/content")
    await taker.write(b"taken")
    await taker.commit("blobs/content")
    assert await s3.get("blobs/content") == b"taken"


async def test_a_server_ignoring_conditional_writes_is_detected(
    s3: S3Driver, caplog: pytest.LogCaptureFixture
) -> None:
    """Probed once per driver: such a server gets best-effort leases and a warning."""
    assert await s3._honours_conditional_writes()  # SeaweedFS honours them
    ignoring = S3Driver(s3.settings)

    def drop_conditions(params: dict[str, Any], **_: Any) -> None:
        params.pop("IfNoneMatch", None)
        params.pop("IfMatch", None)

    ignoring._client.meta.events.register("before-parameter-build.s3.PutObject", drop_conditions)
    writer = await ignoring.writer("session/data")
    assert ignoring._conditional is False
    assert "ignores conditional writes" in caplog.text
    with pytest.raises(WriterBusyError):  # a held lease still keeps a later writer out
        await ignoring.writer("session/data", append=True)
    await writer.write(b"abc")
    await writer.close()
    writer = await ignoring.writer("session/data", append=True)
    await writer.commit("blobs/content")
    assert await s3.get("blobs/content") == b"abc"
    await ignoring.close()


async def test_parts_grow_past_the_memory_slots_into_files_and_commit_whole(
    s3: S3Driver, seaweedfs: SeaweedFS, spill_dir: Path
) -> None:
    """The schedule of storage/s3_part_sizes.py, two parts a step instead of 500: parts of
    5, 5, 10, 10 and 20 MiB; parts bigger than a slot of the budget fill a file."""
    mib = 1 << 20
    settings = {"part_size": 5 * mib, "buffer_memory": 10 * mib, "parts_per_step": 2}
    driver = S3Driver(S3Settings(**{**s3_settings_dict(s3), **settings}))
    driver.buffer_budget = budget = RecordingBudget(2)
    data = os.urandom(50 * mib + 3 * mib)
    writer = await writer_without_waiting(driver, "session/data")
    await write_in_pieces(writer, data[: 15 * mib])  # parts 1, 2 and half of part 3
    assert open_files_in(spill_dir) == 1
    await writer.close()
    assert budget.in_use == 0
    # A later request resumes with its 5 MiB tail in a file: part 3 is 10 MiB.
    writer = await writer_without_waiting(driver, "session/data", append=True)
    assert open_files_in(spill_dir) == 1
    await write_in_pieces(writer, data[15 * mib :])
    await writer.close()
    state = f"{s3.settings.prefix}/_writers/session/data/"
    listed = seaweedfs.client().list_objects_v2(Bucket=s3.settings.bucket, Prefix=state)
    sizes = {item["Key"][len(state) :]: item["Size"] for item in listed["Contents"]}
    parts = [sizes[f"part-{n:05d}"] for n in range(1, 6)]
    assert parts == [5 * mib, 5 * mib, 10 * mib, 10 * mib, 20 * mib]
    assert sizes[f"tail-{50 * mib}"] == 3 * mib
    writer = await writer_without_waiting(driver, "session/data", append=True)
    await writer.commit("blobs/content")
    assert await driver.get("blobs/content") == data
    assert budget.in_use == 0 and open_files_in(spill_dir) == 0
    await driver.close()
