"""Render a `RegistryError` as the spec's JSON error response."""

from __future__ import annotations

from starlette.responses import Response

from oci.errors import RegistryError


def error_response(error: RegistryError) -> Response:
    return Response(
        error.body(),
        status_code=error.status,
        headers=error.headers,
        media_type="application/json",
    )
