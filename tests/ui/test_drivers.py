"""Every page and a delete over each storage driver (memory, filesystem, S3 on SeaweedFS):
the session key is created in the storage and the pages read it through the store."""

from __future__ import annotations

import re

from tests.api.helpers import push_image, push_referrer


async def test_every_page_and_a_delete(client) -> None:
    digest, raw = await push_image(client, "team/app", "1")
    await push_image(client, "team/app", "2", seed="two")
    signature, _, _ = await push_referrer(client, "team/app", raw, "application/vnd.sig", b"s")
    for path in (
        "/ui/",
        "/ui/?sort=push",
        "/ui/registry?usage=count",
        "/ui/repositories/team/app",
        "/ui/repositories/team/app?tab=untagged",
        "/ui/images/team/app/1",
        f"/ui/images/team/app/{signature}",
        "/ui/delete/team/app/2",
    ):
        page = await client.get(path)
        assert page.status_code == 200, (path, page.text)
    assert "application/vnd.sig" in (await client.get(f"/ui/images/team/app/{digest}")).text
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
    deleted = await client.post("/ui/delete/team/app/2", data={"csrf": token})
    assert deleted.status_code == 303
    assert (await client.get("/v2/team/app/manifests/2")).status_code == 404
