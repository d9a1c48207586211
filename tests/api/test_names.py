"""Repository names are checked against the spec grammar before they touch storage,
and no request can reach outside the storage root."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from tests.api.helpers import digest_of, error_code, raw_request

VALID = ["a", "team/app", "a.b/c_d/e__f/g-h--i", "x" * 255, "0/1/2/3/4/5/6/7"]
INVALID = [
    "A",
    "team//app",
    "team/app/",
    "-team",
    "team/.app",
    "te_-am",
    "x" * 256,
    "team/Ünï",
]


@pytest.mark.parametrize("name", VALID)
async def test_valid_names(client: httpx.AsyncClient, name: str) -> None:
    response = await client.post(
        f"/v2/{name}/blobs/uploads/?digest={digest_of(b'x')}", content=b"x"
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("name", INVALID)
@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", "tags/list"), ("POST", "blobs/uploads/"), ("GET", "manifests/latest"),
     ("PUT", "manifests/latest"), ("GET", f"blobs/{digest_of(b'x')}")],
)  # fmt: skip
async def test_invalid_names(
    client: httpx.AsyncClient, name: str, method: str, suffix: str
) -> None:
    response = await client.request(method, f"/v2/{name}/{suffix}", content=b"{}")
    assert response.status_code == 400, response.text
    assert error_code(response) == "NAME_INVALID"


TRAVERSALS = [
    ("GET", "/v2/../../../etc/tags/list"),
    ("GET", "/v2/team/../../etc/manifests/passwd"),
    ("POST", "/v2/../x/blobs/uploads/"),
    ("GET", "/v2/team/app/blobs/uploads/../../../../../../etc"),
    ("GET", "/v2/team/app/manifests/..%2f..%2fetc"),
    ("PUT", "/v2/team/app/manifests/../../../../outside"),
    ("GET", "/v2//etc/tags/list"),
    ("GET", "/v2/team/app/referrers/sha256:../../x"),
]


def _files(root: Path) -> set[Path]:
    return set(root.rglob("*"))


@pytest.mark.parametrize(("method", "path"), TRAVERSALS)
async def test_traversal_is_refused(app: Starlette, tmp_path: Path, method: str, path: str) -> None:
    before = _files(tmp_path)
    status, body = await raw_request(app, method, path, body=b"{}")
    assert status in (400, 404, 405), body
    assert json.loads(body)["errors"][0]["code"]
    assert _files(tmp_path) == before
