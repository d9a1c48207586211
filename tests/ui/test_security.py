"""The web UI's access rules and defences: sessions, CSRF, 404 for what may not be
pulled, escaping, the login throttle. In process, over the API's own rules (basic mode:
alice and carol push and pull team/**, bob only pulls team/*, anyone pulls public/**)."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from registry.auth import htpasswd
from registry.config import ImmutableTagRule
from storage import paths
from tests.api.helpers import (
    OCI_MANIFEST,
    descriptor,
    push_blob,
    push_image,
    push_referrer,
    put_manifest,
)
from tests.support.auth import remove_user, write_users
from tests.ui.conftest import USERS, csrf_of, sign_in
from ui.session import COOKIE_NAME

SCRIPT = "<script>alert(1)</script>"


def signed_in_as(html: str) -> str | None:
    match = re.search(r"Signed in as <strong>([^<]*)</strong>", html)
    return match[1] if match else None


async def test_the_ui_needs_no_api_credentials_and_shows_only_what_anonymous_may_pull(ui) -> None:
    await push_image(ui.api, "public/tool", "1")
    await push_image(ui.api, "team/app", "1")
    page = await ui.browser.get("/ui/")
    assert page.status_code == 200
    assert "public/tool" in page.text
    assert "team/app" not in page.text
    assert (await ui.browser.get("/v2/_catalog")).status_code == 401  # the API still asks
    assert (await ui.browser.get("/uix/")).status_code == 401  # only /ui/ is the UI's


async def test_signed_in_users_see_the_repositories_they_may_pull(ui) -> None:
    for name in ("team/app", "team/deep/app", "alice/own", "carol/own"):
        await push_image(ui.api, name, "1")
    await sign_in(ui.browser, "bob")  # team/* only, and his own namespace
    page = (await ui.browser.get("/ui/")).text
    assert signed_in_as(page) == "bob"
    assert "team/app" in page
    assert "team/deep/app" not in page
    assert "alice/own" not in page


@pytest.mark.parametrize(
    "path",
    [
        "/ui/repositories/{name}",
        "/ui/repositories/{name}?tab=untagged",
        "/ui/images/{name}/1",
        "/ui/images/{name}/{digest}",
        "/ui/delete/{name}/1",
        "/ui/files/{name}/{layer}",
    ],
)
async def test_a_repository_the_viewer_may_not_pull_answers_as_if_it_did_not_exist(
    ui, path: str
) -> None:
    digest, raw = await push_image(ui.api, "team/deep/app", "1")
    layer = json.loads(raw)["layers"][0]["digest"]
    await sign_in(ui.browser, "bob")
    hidden = await ui.browser.get(path.format(name="team/deep/app", digest=digest, layer=layer))
    missing = await ui.browser.get(path.format(name="team/deep/nope", digest=digest, layer=layer))
    assert hidden.status_code == missing.status_code == 404
    assert hidden.text.replace("deep/app", "deep/nope") == missing.text
    assert "sha256:" not in hidden.text


async def test_csrf_token_missing_or_wrong_is_refused(ui) -> None:
    page = await ui.browser.get("/ui/login")
    token = csrf_of(page.text)
    form = {"username": "alice", "password": USERS["alice"]}
    for data in (form, {**form, "csrf": ""}, {**form, "csrf": token[:-2] + "xx"}):
        refused = await ui.browser.post("/ui/login", data=data)
        assert refused.status_code == 403
        assert "set-cookie" not in refused.headers
    # A token from another visitor's session is wrong in this one.
    other = httpx.AsyncClient(transport=ui.browser._transport, base_url="http://registry.test")
    async with other:
        foreign = csrf_of((await other.get("/ui/login")).text)
    assert (await ui.browser.post("/ui/login", data={**form, "csrf": foreign})).status_code == 403
    assert signed_in_as((await ui.browser.get("/ui/")).text) is None
    accepted = await ui.browser.post("/ui/login", data={**form, "csrf": token})
    assert accepted.status_code == 303


async def test_a_delete_without_the_csrf_token_deletes_nothing(ui) -> None:
    await push_image(ui.api, "shared/app", "1")
    await sign_in(ui.browser, "alice")  # anyone signed in may delete in shared/*
    for form in ({}, {"csrf": "forged"}):
        refused = await ui.browser.post("/ui/delete/shared/app/1", data=form)
        assert refused.status_code == 403
        assert "did not come from this site" in refused.text
    assert (await ui.api.get("/v2/shared/app/manifests/1")).status_code == 200


async def test_session_cookie_is_httponly_strict_and_secure_under_tls(open_ui, make_config) -> None:
    plain = open_ui(make_config("basic"))
    cookie = (await plain.browser.get("/ui/")).headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui/" in cookie
    assert "Secure" not in cookie
    tls = open_ui(make_config("basic"), base_url="https://registry.test")
    assert "Secure" in (await tls.browser.get("/ui/")).headers["set-cookie"]


async def test_a_tampered_session_cookie_signs_the_viewer_out(ui) -> None:
    await sign_in(ui.browser, "alice")
    assert signed_in_as((await ui.browser.get("/ui/")).text) == "alice"
    value = ui.browser.cookies[COOKIE_NAME]
    payload, _, rest = value.partition(".")
    forged = URLSafeTimedSerializer(b"guessed key").dumps({"s": "x", "u": "root", "f": "x"})
    for bad in (
        payload.replace(payload[3], "A" if payload[3] != "A" else "B") + "." + rest,
        forged,
        value[:-1],
        "garbage",
    ):
        ui.browser.cookies.clear()
        ui.browser.cookies.set(COOKIE_NAME, bad, domain="registry.test", path="/ui/")
        page = await ui.browser.get("/ui/")
        assert signed_in_as(page.text) is None
        assert page.headers["set-cookie"].startswith(f"{COOKIE_NAME}=")  # a fresh session


async def test_an_expired_session_signs_the_viewer_out(open_ui, make_config, monkeypatch) -> None:
    config = make_config("basic")
    config.ui.session_lifetime = 60
    ui = open_ui(config)
    await sign_in(ui.browser, "alice")
    later = int(time.time()) + 61  # the server's clock only: the client keeps its cookie
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: later)
    assert signed_in_as((await ui.browser.get("/ui/")).text) is None


async def test_removing_the_user_or_changing_the_password_ends_the_session(
    ui, users_file, monkeypatch
) -> None:
    monkeypatch.setattr(htpasswd, "RECHECK_SECONDS", 0.0)
    await sign_in(ui.browser, "alice")
    write_users(users_file, {**USERS, "alice": "new-password"})
    assert signed_in_as((await ui.browser.get("/ui/")).text) is None
    await sign_in(ui.browser, "bob")
    remove_user(users_file, "bob")
    assert signed_in_as((await ui.browser.get("/ui/")).text) is None


async def test_failed_logins_are_throttled_as_on_the_api(open_ui, make_config) -> None:
    ui = open_ui(make_config("basic", throttle={"max_failures": 2, "base_delay": 60}))
    token = csrf_of((await ui.browser.get("/ui/login")).text)
    statuses = []
    for _ in range(4):
        form = {"username": "alice", "password": "wrong", "csrf": token}
        statuses.append((await ui.browser.post("/ui/login", data=form)).status_code)
    assert statuses[:2] == [401, 401] and statuses[-1] == 429
    right = {"username": "alice", "password": USERS["alice"], "csrf": token}
    throttled = await ui.browser.post("/ui/login", data=right)
    assert throttled.status_code == 429
    assert "too many failed logins" in throttled.text
    # The API counts the same failures: basic auth is throttled too.
    api = await ui.browser.get("/v2/", headers={"Authorization": "Basic YWxpY2U6d3Jvbmc="})
    assert api.status_code == 429


async def test_after_sign_in_the_ui_goes_only_to_its_own_pages(ui) -> None:
    token = csrf_of((await ui.browser.get("/ui/login")).text)
    for target, expected in [
        ("/ui/registry", "/ui/registry"),
        ("//evil.example/ui/", "/ui/"),
        ("https://evil.example/", "/ui/"),
        ("/ui//evil.example", "/ui/"),
        ("/v2/_catalog", "/ui/"),
    ]:
        form = {"username": "alice", "password": USERS["alice"], "csrf": token, "next": target}
        response = await ui.browser.post("/ui/login", data=form)
        assert response.headers["location"] == expected
        token = csrf_of((await ui.browser.get("/ui/login")).text)  # a new session: new token


async def test_html_in_annotations_labels_artifact_types_and_queries_is_escaped(ui) -> None:
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {SCRIPT: SCRIPT}, "Cmd": [SCRIPT], "ExposedPorts": {SCRIPT: {}}},
            "history": [{"created_by": SCRIPT}],
        }
    ).encode()
    layer = b"layer"
    await push_blob(ui.api, "public/app", config)
    await push_blob(ui.api, "public/app", layer)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor("application/vnd.oci.image.config.v1+json", config),
            "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", layer)],
            "annotations": {SCRIPT: SCRIPT},
        }
    ).encode()
    assert (
        await put_manifest(ui.api, "public/app", "v1", manifest, OCI_MANIFEST)
    ).status_code == 201
    await push_referrer(
        ui.api, "public/app", manifest, f"application/{SCRIPT}", b"sig", {"note": SCRIPT}
    )
    pages = [
        await ui.browser.get("/ui/images/public/app/v1"),
        await ui.browser.get("/ui/", params={"q": SCRIPT}),
        await ui.browser.get("/ui/repositories/public/app", params={"filter": SCRIPT}),
        await ui.browser.get("/ui/repositories/public/app?tab=untagged"),
    ]
    for page in pages:
        assert page.status_code == 200
        assert "<script>" not in page.text
    assert page_has(pages[0].text, "&lt;script&gt;alert(1)&lt;/script&gt;", times=4)
    assert "application/&lt;script&gt;" in pages[0].text


def page_has(html: str, text: str, times: int) -> bool:
    return html.count(text) >= times


async def test_a_read_only_user_sees_no_delete_and_cannot_post_one(ui) -> None:
    digest, _ = await push_image(ui.api, "team/app", "1")
    await sign_in(ui.browser, "bob")
    for path in ("/ui/repositories/team/app", f"/ui/images/team/app/{digest}"):
        page = await ui.browser.get(path)
        assert page.status_code == 200
        assert "/ui/delete/" not in page.text
    assert (await ui.browser.get("/ui/delete/team/app/1")).status_code == 403
    token = csrf_of((await ui.browser.get("/ui/")).text)
    refused = await ui.browser.post("/ui/delete/team/app/1", data={"csrf": token})
    assert refused.status_code == 403
    assert (await ui.api.get("/v2/team/app/manifests/1")).status_code == 200


async def test_an_allowed_user_deletes_a_tag_through_the_api_s_path(ui) -> None:
    digest, _ = await push_image(ui.api, "shared/app", "1")
    await ui.api.put(
        "/v2/shared/app/manifests/2",
        content=(await ui.api.get("/v2/shared/app/manifests/1")).content,
        headers={"Content-Type": OCI_MANIFEST},
    )
    await sign_in(ui.browser, "alice")
    confirm = await ui.browser.get("/ui/delete/shared/app/1")
    assert confirm.status_code == 200
    assert re.search(r'class="tag">2<', confirm.text)  # the other tag on the digest
    assert "next garbage collection" in confirm.text
    done = await ui.browser.post("/ui/delete/shared/app/1", data={"csrf": csrf_of(confirm.text)})
    assert done.status_code == 303
    assert done.headers["location"] == "/ui/repositories/shared/app?deleted=1"
    assert (await ui.api.get("/v2/shared/app/manifests/1")).status_code == 404
    assert (await ui.api.get(f"/v2/shared/app/manifests/{digest}")).status_code == 200
    assert (await ui.api.get("/v2/shared/app/manifests/2")).status_code == 200


async def test_the_ui_refuses_deletes_the_api_refuses(open_ui, make_config) -> None:
    config = make_config("basic")
    config.immutable_tags = [ImmutableTagRule(repositories=["shared/**"], tags=["v*"])]
    ui = open_ui(config)
    await push_image(ui.api, "shared/app", "v1")
    await sign_in(ui.browser, "alice")
    confirm = await ui.browser.get("/ui/delete/shared/app/v1")
    assert "immutable_tags[0]" in confirm.text
    refused = await ui.browser.post(
        "/ui/delete/shared/app/v1", data={"csrf": csrf_of(confirm.text)}
    )
    assert refused.status_code == 403
    assert "is immutable by immutable_tags[0]" in refused.text
    assert (await ui.api.get("/v2/shared/app/manifests/v1")).status_code == 200


async def test_maintenance_mode_refuses_ui_deletes(ui) -> None:
    await push_image(ui.api, "shared/app", "1")
    await ui.app.state.store.maintenance.switch_on("moving the storage")
    await sign_in(ui.browser, "alice")
    token = csrf_of((await ui.browser.get("/ui/delete/shared/app/1")).text)
    refused = await ui.browser.post("/ui/delete/shared/app/1", data={"csrf": token})
    assert refused.status_code == 405
    assert "moving the storage" in refused.text
    await ui.app.state.store.maintenance.switch_off()
    assert (await ui.api.get("/v2/shared/app/manifests/1")).status_code == 200


async def test_pages_forbid_scripts_from_elsewhere_and_files_are_never_shown_inline(ui) -> None:
    _, raw = await push_image(ui.api, "public/app", "1")
    page = await ui.browser.get("/ui/")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    layer = json.loads(raw)["layers"][0]["digest"]
    download = await ui.browser.get(
        f"/ui/files/public/app/{layer}", params={"filename": '../<x>"evil.html'}
    )
    assert download.status_code == 200
    assert download.content == b"layer of x"
    assert download.headers["content-type"] == "application/octet-stream"
    assert download.headers["content-disposition"] == 'attachment; filename="_x_evil.html"'


async def test_token_mode_signs_in_with_the_same_users_and_rules(open_ui, make_config) -> None:
    ui = open_ui(make_config("token"))
    await sign_in(ui.browser, "bob")
    assert signed_in_as((await ui.browser.get("/ui/")).text) == "bob"
    assert (await ui.browser.get("/ui/repositories/team/deep/x")).status_code == 404


async def test_a_ui_delete_is_an_event_of_the_signed_in_user(
    open_ui, make_config, tmp_path
) -> None:
    config = make_config("basic")
    config.notifications.audit.enabled = True
    config.notifications.audit.path = tmp_path / "audit.log"
    ui = open_ui(config)
    digest, _ = await push_image(ui.api, "shared/app", "1")
    await sign_in(ui.browser, "alice")
    token = csrf_of((await ui.browser.get("/ui/delete/shared/app/1")).text)
    assert (
        await ui.browser.post("/ui/delete/shared/app/1", data={"csrf": token})
    ).status_code == 303
    events = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    delete = events[-1]
    assert (delete["action"], delete["actor"], delete["tag"]) == ("delete", "alice", "1")
    assert delete["digest"] == digest


async def test_a_half_written_session_key_is_replaced_not_used(open_ui, make_config) -> None:
    ui = open_ui(make_config("basic"))
    driver = ui.app.state.store.driver
    await driver.put(paths.ui_session_key(), b"")  # a creation cut off (some S3 servers)
    await sign_in(ui.browser, "alice")
    assert signed_in_as((await ui.browser.get("/ui/")).text) == "alice"
    assert len(await driver.get(paths.ui_session_key())) == 64
