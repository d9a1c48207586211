"""A small blocking registry client on `http.client`: keep-alive, zero-copy bodies.

Kept lean on purpose: the client shares the CPUs with the servers it measures.
"""

from __future__ import annotations

import hashlib
import http.client
import json
from dataclasses import dataclass
from urllib.parse import urlsplit

BLOCK = 1 << 20
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MANIFEST_ACCEPT = f"{OCI_MANIFEST}, application/vnd.docker.distribution.manifest.v2+json"


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    length: int


class RegistryClient:
    def __init__(self, host: str, authorization: str | None = None) -> None:
        self.host = host
        self._authorization = authorization
        self._connection: http.client.HTTPConnection | None = None
        self._buffer = bytearray(BLOCK)

    def _conn(self) -> http.client.HTTPConnection:
        if self._connection is None:
            hostname, port = self.host.rsplit(":", 1)
            self._connection = http.client.HTTPConnection(
                hostname, int(port), timeout=600, blocksize=BLOCK
            )
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def request(
        self,
        method: str,
        target: str,
        body: bytes | memoryview | None = None,
        headers: dict[str, str] | None = None,
        expect: tuple[int, ...] = (200, 201, 202, 204, 206),
        keep: bool = False,
    ) -> Reply:
        """Send one request and drain the answer; `keep` keeps its (small) body."""
        parts = urlsplit(target)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        connection = self._conn()
        all_headers = dict(headers or {})
        if self._authorization:
            all_headers["Authorization"] = self._authorization
        if body is not None:
            all_headers.setdefault("Content-Length", str(len(body)))
        kept = bytearray()
        received = 0
        try:
            connection.request(method, path, body=body, headers=all_headers)
            response = connection.getresponse()
            keep = keep or response.status not in expect
            if method != "HEAD":
                while count := response.readinto(self._buffer):
                    received += count
                    if keep:
                        kept += self._buffer[:count]
        except (http.client.HTTPException, OSError):
            self.close()
            raise
        if response.will_close:
            self.close()
        if response.status not in expect:
            raise RuntimeError(f"{method} {path} -> {response.status}: {bytes(kept[:300])!r}")
        return Reply(response.status, response.headers, bytes(kept), received)

    # --- registry operations -------------------------------------------------------------

    def start_upload(self, name: str) -> str:
        return self.request("POST", f"/v2/{name}/blobs/uploads/", expect=(202,)).headers["Location"]

    @staticmethod
    def _with_digest(location: str, digest: str) -> str:
        return f"{location}{'&' if '?' in location else '?'}digest={digest}"

    def upload_monolithic(self, name: str, data: memoryview, digest: str) -> None:
        location = self.start_upload(name)
        self.request(
            "PUT",
            self._with_digest(location, digest),
            body=data,
            headers={"Content-Type": "application/octet-stream"},
            expect=(201,),
        )

    def upload_chunked(self, name: str, data: memoryview, digest: str, chunk: int) -> None:
        location = self.start_upload(name)
        for start in range(0, len(data), chunk):
            part = data[start : start + chunk]
            reply = self.request(
                "PATCH",
                location,
                body=part,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{start}-{start + len(part) - 1}",
                },
                expect=(202,),
            )
            location = reply.headers["Location"]
        self.request("PUT", self._with_digest(location, digest), body=b"", expect=(201,))

    def push_small_blob(self, name: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.upload_monolithic(name, memoryview(data), digest)
        return digest

    def mount(self, name: str, digest: str, source: str) -> None:
        self.request(
            "POST", f"/v2/{name}/blobs/uploads/?mount={digest}&from={source}", expect=(201,)
        )

    def put_manifest(self, name: str, reference: str, manifest: bytes) -> None:
        self.request(
            "PUT",
            f"/v2/{name}/manifests/{reference}",
            body=manifest,
            headers={"Content-Type": OCI_MANIFEST},
            expect=(201,),
        )

    def download(self, name: str, digest: str, byte_range: str | None = None) -> int:
        """Bytes received; follows a redirect to storage (S3 `redirect`) as docker does."""
        headers = {"Range": f"bytes={byte_range}"} if byte_range else {}
        reply = self.request(
            "GET", f"/v2/{name}/blobs/{digest}", headers=headers, expect=(200, 206, 307)
        )
        if reply.status != 307:
            return reply.length
        location = reply.headers["Location"]
        storage = RegistryClient(urlsplit(location).netloc)  # presigned: no credentials
        try:
            return storage.request("GET", location, headers=headers, expect=(200, 206)).length
        finally:
            storage.close()


def image_manifest(config: bytes, layer: bytes) -> bytes:
    """An OCI image manifest of one config blob and one layer blob."""

    def descriptor(media_type: str, data: bytes) -> dict[str, object]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor("application/vnd.oci.image.config.v1+json", config),
            "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", layer)],
        }
    ).encode()
