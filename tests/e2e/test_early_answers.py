"""An error answered before the request body was read reaches the client whole, also
when the connection closes after it (no reset)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.support.raw_http import request_then_read
from tests.support.server import RegistryProcess

pytestmark = pytest.mark.e2e

LARGE = 32 << 20  # more than the socket buffers hold


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    with RegistryProcess(tmp_path_factory.mktemp("registry"), workers=1) as server:
        yield server


@pytest.mark.parametrize("close", [{"Connection": "close"}, {"Connection": "keep-alive, Close"}])
@pytest.mark.parametrize(
    ("method", "target", "status", "code"),
    [("PATCH", "/v2/team/app/blobs/uploads/" + "0" * 32, 404, "BLOB_UPLOAD_UNKNOWN"),
     ("PUT", "/v2/team/app/manifests/v1", 413, "SIZE_INVALID")],
    ids=["unknown-upload", "manifest-too-large"],
)  # fmt: skip
def test_early_error_then_close_is_not_reset(
    registry: RegistryProcess,
    close: dict[str, str],
    method: str,
    target: str,
    status: int,
    code: str,
) -> None:
    answered, body = request_then_read(registry.port, method, target, LARGE, close)
    assert answered == status
    assert json.loads(body)["errors"][0]["code"] == code
