"""Maintenance mode: writes answer 405 UNSUPPORTED with the message, reads go on."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette

import storage.maintenance
from registry.app import create_app
from registry.config import Config
from storage.driver import StorageDriver
from storage.maintenance import MaintenanceFlag
from tests.api.helpers import OCI_MANIFEST, digest_of, error_code, push_blob, push_image

MESSAGE = "moving to new disks, back at 02:00"


def assert_refused(response: httpx.Response, message: str = MESSAGE) -> None:
    assert response.status_code == 405, response.text
    assert error_code(response) == "UNSUPPORTED"
    assert response.json()["errors"][0]["message"] == message


@pytest.fixture
def no_staleness(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every check re-reads the flag, as each does once its cached copy is old enough."""
    monkeypatch.setattr(storage.maintenance, "REFRESH_SECONDS", 0.0)


@pytest.mark.usefixtures("no_staleness")
async def test_flag_set_by_another_process_refuses_writes_and_serves_reads(
    client: httpx.AsyncClient, app: Starlette, driver: StorageDriver
) -> None:
    digest, manifest = await push_image(client, "team/app", "1")
    layer_digest = digest_of(b"layer of x")
    started = await client.post("/v2/team/app/blobs/uploads/")
    assert started.status_code == 202
    upload = started.headers["location"]

    other_process = MaintenanceFlag(driver)
    await other_process.switch_on(MESSAGE)
    assert await app.state.store.maintenance.state() is not None

    assert_refused(await client.post("/v2/team/app/blobs/uploads/"))
    assert_refused(await client.post(f"/v2/team/app/blobs/uploads/?digest={layer_digest}"))
    assert_refused(await client.patch(upload, content=b"more"))
    assert_refused(await client.put(f"{upload}?digest={layer_digest}"))
    assert_refused(await client.delete(upload))
    assert_refused(
        await client.put(
            "/v2/team/app/manifests/2", content=manifest, headers={"Content-Type": OCI_MANIFEST}
        )
    )
    assert_refused(await client.delete(f"/v2/team/app/manifests/{digest}"))
    assert_refused(await client.delete(f"/v2/team/app/blobs/{layer_digest}"))

    pulled = await client.get("/v2/team/app/manifests/1", headers={"Accept": OCI_MANIFEST})
    assert pulled.status_code == 200 and pulled.content == manifest
    assert (await client.get(f"/v2/team/app/blobs/{layer_digest}")).content == b"layer of x"
    assert (await client.get("/v2/team/app/tags/list")).json()["tags"] == ["1"]
    assert (await client.get(upload)).status_code == 204

    await other_process.switch_off()
    assert await app.state.store.maintenance.state() is None
    assert await push_blob(client, "team/app", b"after") == digest_of(b"after")
    assert (await client.delete(f"/v2/team/app/manifests/{digest}")).status_code == 202


@pytest.mark.parametrize("driver", ["memory"], indirect=True)
async def test_config_readonly_refuses_writes_with_its_message(driver: StorageDriver) -> None:
    config = Config(maintenance={"readonly": True, "message": "read-only replica"})
    app = create_app(config, driver)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as client:
        assert (await client.get("/v2/")).status_code == 200
        assert_refused(await client.post("/v2/a/blobs/uploads/"), "read-only replica")
        await MaintenanceFlag(driver).switch_off()  # the storage flag cannot undo the config
        assert_refused(await client.delete("/v2/a/manifests/1"), "read-only replica")
    state = await app.state.store.maintenance.state()
    assert state is not None and state.message == "read-only replica"


@pytest.mark.parametrize("driver", ["memory"], indirect=True)
async def test_unreadable_flag_counts_as_on(driver: StorageDriver) -> None:
    await driver.put("_maintenance", b"not json")
    state = await MaintenanceFlag(driver).read()
    assert state is not None and state.message == storage.maintenance.DEFAULT_MESSAGE
