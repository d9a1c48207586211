"""Header, body and keep-alive timeouts and the connection cap, on a real server (raw sockets).

Each limit is a few seconds here; a closed connection is only claimed to close within
its timeout plus `SLACK`, and a slow but live upload must outlast the body timeout.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from registry.cli import raise_open_files_limit
from tests.support.server import RegistryProcess

TIMEOUT = 2  # seconds, for each of the header, body and keep-alive timeouts
HEAD_LIMIT = 16 << 10  # bytes
SLACK = 8.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    limits = {"header_timeout": TIMEOUT, "body_timeout": TIMEOUT, "keepalive_timeout": TIMEOUT}
    limits["max_header_bytes"] = HEAD_LIMIT
    workdir = tmp_path_factory.mktemp("limits")
    with RegistryProcess(workdir, {"http": limits}) as running:
        yield running


def connect(server: RegistryProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=SLACK)


def request(method: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: registry.test"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: socket.socket) -> bytes:
    """One response: its head, a blank line and its (Content-Length) body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    body = bytearray(rest)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return head + b"\r\n\r\n" + bytes(body)


def closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> bool:
    """True if the server closes `sock` within `seconds` (sending `trickle` every 0.5 s)."""
    deadline = time.monotonic() + seconds
    sock.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            pass
        except ConnectionError:
            return True
        if trickle:
            try:
                sock.sendall(trickle)
            except ConnectionError:
                return True
    return False


def test_idle_keepalive_connection_closed(server: RegistryProcess) -> None:
    with connect(server) as sock:
        sock.sendall(request("GET", "/v2/"))
        assert read_response(sock).startswith(b"HTTP/1.1 200")
        assert closed_within(sock, TIMEOUT + SLACK)


def test_connection_that_never_sends_closed(server: RegistryProcess) -> None:
    with connect(server) as sock:
        assert closed_within(sock, TIMEOUT + SLACK)


def test_half_sent_headers_closed(server: RegistryProcess) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: registry.test\r\n")
        assert closed_within(sock, TIMEOUT + SLACK)


def test_trickled_headers_closed(server: RegistryProcess) -> None:
    """The header timeout is a deadline: a byte now and then does not extend it."""
    with connect(server) as sock:
        sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: registry.test\r\nX-Slow: ")
        assert closed_within(sock, TIMEOUT + SLACK, trickle=b"a")


def test_second_request_half_sent_closed(server: RegistryProcess) -> None:
    with connect(server) as sock:
        sock.sendall(request("GET", "/v2/"))
        read_response(sock)
        sock.sendall(b"GET /v2/ HTTP/1.1\r\n")
        assert closed_within(sock, TIMEOUT + SLACK)


def test_declared_body_never_sent_closed(server: RegistryProcess) -> None:
    with connect(server) as sock:
        headers = {"Content-Type": "application/json", "Content-Length": "100"}
        sock.sendall(request("PUT", "/v2/team/app/manifests/t", headers) + b'{"schema')
        assert closed_within(sock, TIMEOUT + SLACK)


def test_slow_but_live_upload_succeeds(server: RegistryProcess) -> None:
    """Bytes every second for longer than the body timeout: the upload completes."""
    pieces = [bytes([i]) * 1000 for i in range(3 * TIMEOUT + 1)]
    blob = b"".join(pieces)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    started = httpx.post(f"{server.url}/v2/team/slow/blobs/uploads/")
    assert started.status_code == 202
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(blob))}
    with connect(server) as sock:
        sock.sendall(request("PATCH", started.headers["location"], headers))
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(1.0)
        assert read_response(sock).startswith(b"HTTP/1.1 202")
    location = started.headers["location"]
    finished = httpx.put(f"{server.url}{location}", params={"digest": digest})
    assert finished.status_code == 201, finished.text
    assert httpx.get(f"{server.url}/v2/team/slow/blobs/{digest}").content == blob


CAP = 4


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[RegistryProcess]:
    with RegistryProcess(tmp_path, {"http": {"max_connections": CAP}}) as running:
        yield running


def test_connections_beyond_the_cap_closed(capped: RegistryProcess) -> None:
    with contextlib.ExitStack() as stack:
        held = []
        for _ in range(CAP):  # the probe's connection may still be counted: retry
            for _attempt in range(20):
                sock = connect(capped)
                sock.sendall(request("GET", "/v2/"))
                try:
                    read_response(sock)
                    break
                except (AssertionError, ConnectionError):
                    sock.close()
                    time.sleep(0.25)
            else:
                pytest.fail("the server refused a connection below its cap")
            held.append(stack.enter_context(sock))

        extra = stack.enter_context(connect(capped))
        assert closed_within(extra, SLACK)

        for sock in held:  # the ones it holds keep working
            sock.sendall(request("GET", "/v2/"))
            assert read_response(sock).startswith(b"HTTP/1.1 200")


def test_open_files_limit_raised_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip(f"hard open-file limit {hard}: nothing to compare with")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        assert raise_open_files_limit(100) is None
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_open_files_limit_too_low_for_the_cap_warns() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard open-file limit")
    try:
        warning = raise_open_files_limit(hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert warning is not None and "http.max_connections" in warning


def test_blank_lines_between_requests_do_not_keep_a_connection(server: RegistryProcess) -> None:
    """Data that starts no request still ends the keep-alive wait: a deadline takes over."""
    with connect(server) as sock:
        sock.sendall(request("GET", "/v2/"))
        read_response(sock)
        assert closed_within(sock, TIMEOUT + SLACK, trickle=b"\r\n")


def test_body_sent_after_the_answer_then_idle_closed(server: RegistryProcess) -> None:
    with connect(server) as sock:
        sock.sendall(request("GET", "/v2/", {"Content-Length": "5"}))
        read_response(sock)  # answered without reading the body
        sock.sendall(b"12345")
        assert closed_within(sock, TIMEOUT + SLACK)


def test_download_outlives_the_header_timeout_of_a_pipelined_request(
    server: RegistryProcess,
) -> None:
    """Half a pipelined request waits while the answer before it is still being sent."""
    blob = bytes(range(256)) * (128 << 12)  # 32 MiB: more than the socket buffers hold
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    pushed = httpx.post(f"{server.url}/v2/team/big/blobs/uploads/?digest={digest}", content=blob)
    assert pushed.status_code == 201
    with connect(server) as sock:
        sock.sendall(request("GET", f"/v2/team/big/blobs/{digest}") + b"GET /v2/ HTTP/1.1\r\n")
        time.sleep(2 * TIMEOUT + 1)  # not reading: the server is stuck sending
        response = read_response(sock)
        assert response.startswith(b"HTTP/1.1 200") and response.endswith(blob)


def assert_json_error(response: bytes, status: int) -> None:
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), response[:200]
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body)["errors"][0]["code"] == "UNSUPPORTED"


def test_oversized_request_head_refused(server: RegistryProcess) -> None:
    """httptools would keep a head of any size in memory: beyond the limit, 431."""
    with connect(server) as sock:
        sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: registry.test\r\nX-Big: " + b"a" * 2 * HEAD_LIMIT)
        assert_json_error(read_response(sock), 431)
        assert closed_within(sock, SLACK)


def test_large_request_head_within_the_limit_served(server: RegistryProcess) -> None:
    with connect(server) as sock:
        sock.sendall(request("GET", "/v2/", {"X-Large": "a" * (HEAD_LIMIT - 1000)}))
        assert read_response(sock).startswith(b"HTTP/1.1 200")


def test_malformed_request_gets_a_json_error(server: RegistryProcess) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost registry.test\r\n\r\n")
        assert_json_error(read_response(sock), 400)
