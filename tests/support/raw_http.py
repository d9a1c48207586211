"""One HTTP/1.1 request over a plain socket, for what HTTP libraries smooth over.

httpx (like Go's client) reads an early answer even after its upload failed; simpler
clients send the whole body first and then read, and see a reset as an error. This
client is of the second kind, so a test can tell a reset from an orderly close.
"""

from __future__ import annotations

import socket

_PIECE = 1 << 20


def request_then_read(
    port: int, method: str, target: str, body_size: int, headers: dict[str, str]
) -> tuple[int, bytes]:
    """Send a request with `body_size` zero bytes, then read the answer until the server
    closes; returns its status and body. A reset raises ConnectionError."""
    head = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {body_size}"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        piece = bytes(_PIECE)
        for offset in range(0, body_size, _PIECE):
            sock.sendall(piece[: body_size - offset])
        received = bytearray()
        while data := sock.recv(1 << 16):
            received += data
    status_line, _, rest = bytes(received).partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]
