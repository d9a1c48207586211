"""The one table of registry errors, and the exception that carries them.

Every failure the API reports is a `RegistryError` built from an `ErrorCode` in
this table; `registry.error_response` renders it as the spec's JSON error body
(`{"errors": [{"code", "message", "detail"}]}`). Storage raises these too, so the
table lives here, beside the other vocabulary both layers share.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Any


@dataclass(frozen=True)
class _Code:
    status: int
    message: str


class ErrorCode(Enum):
    """Error codes of the OCI distribution spec, plus the docker ones clients know."""

    BLOB_UNKNOWN = _Code(404, "blob unknown to registry")
    BLOB_UPLOAD_INVALID = _Code(400, "blob upload invalid")
    BLOB_UPLOAD_UNKNOWN = _Code(404, "blob upload unknown to registry")
    DIGEST_INVALID = _Code(400, "provided digest did not match uploaded content")
    MANIFEST_BLOB_UNKNOWN = _Code(400, "manifest references a manifest or blob unknown to registry")
    MANIFEST_INVALID = _Code(400, "manifest invalid")
    MANIFEST_UNKNOWN = _Code(404, "manifest unknown to registry")
    NAME_INVALID = _Code(400, "invalid repository name")
    NAME_UNKNOWN = _Code(404, "repository name not known to registry")
    SIZE_INVALID = _Code(400, "provided length did not match content length")
    TAG_INVALID = _Code(400, "manifest tag did not match URI")
    UNAUTHORIZED = _Code(401, "authentication required")
    DENIED = _Code(403, "requested access to the resource is denied")
    UNSUPPORTED = _Code(405, "the operation is unsupported")
    TOOMANYREQUESTS = _Code(429, "too many requests")
    PAGINATION_NUMBER_INVALID = _Code(400, "invalid number of results requested")
    UNAVAILABLE = _Code(503, "storage backend unavailable")
    UNKNOWN = _Code(500, "internal server error")

    @property
    def status(self) -> int:
        return self.value.status

    @property
    def message(self) -> str:
        return self.value.message


class RegistryError(Exception):
    """An API failure: an error code, an optional message, detail and status override."""

    def __init__(
        self,
        code: ErrorCode,
        message: str | None = None,
        *,
        detail: Any = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.code = code
        self.message = message or code.message
        self.detail = detail
        self.status = status or code.status
        self.headers = headers or {}
        super().__init__(f"{code.name}: {self.message}")

    def body(self) -> bytes:
        entry: dict[str, Any] = {"code": self.code.name, "message": self.message}
        if self.detail is not None:
            entry["detail"] = self.detail
        return json.dumps({"errors": [entry]}).encode()
