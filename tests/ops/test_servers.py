"""Metrics and logs of real `dockyard serve` processes: summed over workers, a listener
of their own, a clean exit, and TLS probes on the plain port logged at debug level."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from tests.support.metrics import (
    Samples,
    parse,
    published_requests,
    scrape,
    scrape_until,
    total,
    wait_until,
)
from tests.support.server import RegistryProcess, free_port

REQUESTS = "registry_http_requests_total"


def healthz(samples: Samples) -> float:
    return total(samples, REQUESTS, route="/healthz")


def hit(url: str, times: int) -> None:
    for _ in range(times):  # a connection each, so the kernel spreads them over the workers
        with httpx.Client() as client:
            assert client.get(f"{url}/healthz").status_code == 200


def test_every_scrape_sums_all_workers(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    with RegistryProcess(tmp_path / "r", workers=2, env={"TMPDIR": str(temp)}) as registry:
        hit(registry.url, 20)
        # Each worker publishes within a second; then any worker answers for both.
        wait_until(lambda: published_requests(temp, "/healthz") >= 20)
        assert published_requests(temp, "/healthz") == 20
        for _ in range(6):
            samples = parse(scrape(f"{registry.url}/metrics").text)
            assert healthz(samples) == 20
            assert total(samples, "registry_http_in_flight_requests") == 1  # this scrape


def test_one_worker_counts_and_its_directory_goes_at_exit(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    registry = RegistryProcess(tmp_path / "r", workers=1, env={"TMPDIR": str(temp)})
    with registry:
        hit(registry.url, 3)
        assert healthz(parse(scrape(f"{registry.url}/metrics").text)) == 3
        assert [p.name[:17] for p in temp.iterdir()] == ["dockyard-metrics-"]
    assert list(temp.iterdir()) == []


def test_the_directory_of_a_killed_server_goes_when_the_next_one_starts(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    registry = RegistryProcess(tmp_path / "r", workers=1, env={"TMPDIR": str(temp)})
    with registry:
        (left,) = temp.iterdir()
        registry.kill()  # kill -9: no exit handler runs
    assert list(temp.iterdir()) == [left]
    with registry:
        (made,) = temp.iterdir()
        assert made != left and made.name.startswith("dockyard-metrics-")
        assert not left.exists()


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]"])
def test_listener_of_their_own_with_a_token(tmp_path: Path, host: str) -> None:
    port = free_port()
    metrics = {"address": f"{host}:{port}", "token": "scrape-secret"}
    with RegistryProcess(tmp_path / "r", {"metrics": metrics}, workers=2) as registry:
        hit(registry.url, 10)
        assert scrape(f"{registry.url}/metrics").status_code == 404  # off the public port
        url = f"http://{host}:{port}/metrics"
        assert scrape(url).status_code == 401
        assert scrape(url, Authorization="Bearer wrong").status_code == 401
        token = {"Authorization": "Bearer scrape-secret"}
        samples = scrape_until(url, lambda samples: healthz(samples) >= 10, **token)
        assert healthz(samples) == 10
        assert total(samples, "registry_http_in_flight_requests") == 0
    assert "scrape-secret" not in registry.log()


def tls_probe(port: int) -> bytes:
    """What docker sends first to a registry it hopes speaks TLS: a ClientHello."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(bytes.fromhex("16030100a5010000a10303") + b"\x00" * 64)
        return sock.recv(100)


def test_tls_probe_is_one_debug_line_with_the_client(tmp_path: Path) -> None:
    with RegistryProcess(tmp_path / "debug", {"log": {"level": "debug"}}) as registry:
        assert tls_probe(registry.port).startswith(b"HTTP/1.1 400")
        hit(registry.url, 1)  # the log line is out before this answer
    debug = registry.log()
    assert "Invalid HTTP request received" not in debug
    assert debug.count("invalid HTTP request from 127.0.0.1:") == 1
    with RegistryProcess(tmp_path / "info") as registry:
        assert tls_probe(registry.port).startswith(b"HTTP/1.1 400")
        hit(registry.url, 1)
    info = registry.log()
    assert "Invalid HTTP request" not in info and "invalid HTTP request" not in info
