"""The web UI in a real browser: Playwright drives Debian's chromium against a running
registry (basic auth, two workers) holding images pushed by docker, an index, and an ORAS
artifact with a signature referrer. Screenshots of each page go under the test's tmp_path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import oras.oci
import oras.provider
import pytest

from tests.e2e.test_access_control import login
from tests.e2e.test_docker import pushed_digest
from tests.e2e.test_oras import ArtifactClient
from tests.support.auth import write_users
from tests.support.dockerd import DockerDaemon
from tests.support.required import unavailable
from tests.support.server import RegistryProcess

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
PASSWORDS = {"root": "root-pw", "alice": "alice-pw", "bob": "bob-pw"}
AUTH = {
    "mode": "basic",
    "admins": ["root"],
    "rules": [
        {"repositories": ["team/**"], "users": ["alice"], "actions": ["pull", "push", "delete"]},
        {"repositories": ["team/**"], "users": ["bob"], "actions": ["pull"]},
    ],
}
SIGNATURE_TYPE = "application/vnd.dev.cosign.signature.v1"
TOOL_TYPE = "application/vnd.dockyard.tool.v1"

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - the test extras install it
    sync_playwright = None


class BasicArtifactClient(ArtifactClient):
    """The ORAS tests' client, signed in with basic credentials."""

    def __init__(self, host: str, user: str, password: str) -> None:
        oras.provider.Registry.__init__(self, hostname=host, insecure=True, auth_backend="basic")
        self.artifact_type = None
        self.auth.set_basic_auth(user, password)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryProcess]:
    users = write_users(tmp_path / "htpasswd", PASSWORDS)
    config = {"auth": {**AUTH, "htpasswd": str(users)}}
    with RegistryProcess(tmp_path / "registry", config, workers=2) as server:
        yield server


@pytest.fixture
def browser() -> Iterator[Browser]:
    if sync_playwright is None:
        unavailable("playwright is not installed")
    if not os.path.exists(CHROMIUM):
        unavailable(f"{CHROMIUM} is not installed (apt-get install chromium)")
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=CHROMIUM)
        except Exception as error:  # any launch failure means no browser here
            unavailable(f"chromium cannot start under Playwright: {error}")
        yield launched
        launched.close()


@pytest.fixture
def content(
    dockerd: DockerDaemon, registry: RegistryProcess, tmp_path: Path
) -> Iterator[dict[str, str]]:
    """team/app:1 and :2 (one image), team/multi:1 (an index), team/tool:1.0 (an ORAS
    artifact) signed by a referrer; pushed by root."""
    host = registry.host
    app, second = f"{host}/team/app:1", f"{host}/team/app:2"
    platform, listed = f"{host}/team/multi:amd64", f"{host}/team/multi:1"
    login(dockerd, host, "root", PASSWORDS["root"])
    try:
        dockerd.build_image(app, tmp_path / "context")
        digest = pushed_digest(dockerd.run("push", app).stdout)
        for tag in (second, platform):
            dockerd.run("tag", app, tag)
            dockerd.run("push", tag)
        dockerd.run("manifest", "create", "--insecure", listed, platform)
        dockerd.run("manifest", "annotate", "--os", "linux", "--arch", "amd64", listed, platform)
        index = dockerd.run("manifest", "push", "--insecure", "--purge", listed).stdout.strip()
    finally:
        dockerd.run("rmi", "--force", app, second, platform, check=False)
        dockerd.run("logout", host, check=False)

    files = tmp_path / "files"
    files.mkdir()
    (files / "tool.bin").write_bytes(b"the tool\n")
    (files / "tool.sig").write_text("signature of the tool\n")
    oras_client = BasicArtifactClient(host, "root", PASSWORDS["root"])
    tool = oras_client.push_artifact(
        f"{host}/team/tool:1.0", TOOL_TYPE, files=[str(files / "tool.bin")]
    )
    manifest = httpx.get(
        f"{registry.url}/v2/team/tool/manifests/{tool}", auth=("root", PASSWORDS["root"])
    )
    signature = oras_client.push_artifact(
        f"{host}/team/tool:signature",
        SIGNATURE_TYPE,
        files=[str(files / "tool.sig")],
        subject=oras.oci.Subject(manifest.headers["content-type"], tool, len(manifest.content)),
        manifest_annotations={"dev.sigstore.signer": "ci@example.test"},
    )
    yield {"image": digest, "index": index, "tool": tool, "signature": signature}


def shot(page: Page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / "screenshots" / f"{name}.png"), full_page=True)


def sign_in(page: Page, user: str) -> None:
    page.get_by_role("link", name="Sign in").first.click()
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(PASSWORDS[user])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text(f"Signed in as {user}")).to_be_visible()


def test_browse_inspect_copy_and_delete_in_a_real_browser(
    browser: Browser, registry: RegistryProcess, content: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "screenshots").mkdir()
    context = browser.new_context(base_url=registry.url)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=registry.url)
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))

    page.goto("/ui/")
    expect(page.get_by_text("Nothing to show.")).to_be_visible()  # anonymous sees nothing
    page.keyboard.press("Tab")  # the keyboard's first stop: skip to the content, visibly
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    expect(skip).to_be_visible()
    assert skip.evaluate("link => getComputedStyle(link).outlineStyle") == "solid"
    shot(page, tmp_path, "anonymous")

    sign_in(page, "alice")
    expect(page.get_by_role("link", name="team/app", exact=True)).to_be_visible()
    shot(page, tmp_path, "repositories")

    page.get_by_label("Search").fill("mul")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("link", name="team/multi")).to_be_visible()
    expect(page.get_by_role("link", name="team/app", exact=True)).to_have_count(0)
    shot(page, tmp_path, "search")

    # The index: its platform links to the image manifest.
    page.get_by_role("link", name="team/multi").click()
    expect(page.get_by_role("heading", name="team/multi")).to_be_visible()
    page.get_by_role("link", name="1", exact=True).click()
    expect(page.get_by_role("heading", name="Platforms")).to_be_visible()
    expect(page.locator("table.platforms")).to_contain_text("linux/amd64")
    shot(page, tmp_path, "index")
    page.locator("table.platforms a").first.click()
    expect(page.get_by_role("heading", name="Layers")).to_be_visible()
    expect(page.locator("table.history")).to_contain_text("echo layer-0-")
    assert content["image"] in page.url
    shot(page, tmp_path, "image")

    # The repository: copy the pull command, then delete one of the two tags.
    page.goto("/ui/repositories/team/app")
    command = f"docker pull {registry.host}/team/app:1"
    copy = page.locator(f'button.copy[data-copy="{command}"]')
    expect(copy).to_be_visible()
    copy.click()
    expect(copy).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == command
    shot(page, tmp_path, "repository")

    page.locator("tr", has_text="docker pull " + registry.host + "/team/app:2").get_by_role(
        "link", name="Delete"
    ).click()
    expect(page.get_by_role("heading", name=re.compile("Delete tag"))).to_be_visible()
    expect(page.locator("strong.tag")).to_have_text("1")  # the other tag on the image
    shot(page, tmp_path, "delete")
    page.get_by_role("button", name="Delete tag").click()
    expect(page.get_by_role("status")).to_contain_text("Deleted 2")
    assert dialogs == ["Delete team/app:2?"]
    expect(page.locator("td.tag")).to_have_text(["1"])
    shot(page, tmp_path, "deleted")
    gone = httpx.get(f"{registry.url}/v2/team/app/manifests/2", auth=("root", PASSWORDS["root"]))
    assert gone.status_code == 404

    # The artifact, its referrers, the signature and its file.
    page.goto("/ui/images/team/tool/1.0")
    expect(page.get_by_role("heading", name=SIGNATURE_TYPE)).to_be_visible()
    expect(page.locator("ul.referrers")).to_contain_text("ci@example.test")
    shot(page, tmp_path, "artifact")
    page.locator("ul.referrers a").first.click()
    expect(page.locator("dd.kind")).to_contain_text(SIGNATURE_TYPE)
    with page.expect_download() as download:
        page.get_by_role("link", name="tool.sig").click()
    assert Path(download.value.path()).read_text() == "signature of the tool\n"
    shot(page, tmp_path, "referrer")

    page.goto("/ui/registry")
    expect(page.get_by_role("heading", name="Retention rules in force")).to_be_visible()
    expect(page.locator(".last-run")).to_be_visible()
    shot(page, tmp_path, "registry")

    page.emulate_media(color_scheme="dark")  # the system's dark theme
    background = "getComputedStyle(document.body).backgroundColor"
    assert page.evaluate(background) == "rgb(21, 24, 28)"
    shot(page, tmp_path, "dark")
    page.emulate_media(color_scheme="light")
    assert page.evaluate(background) == "rgb(255, 255, 255)"

    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    page.goto("/ui/repositories/team/app")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    shot(page, tmp_path, "phone")

    page.get_by_role("button", name="Sign out").click()
    expect(
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Sign in")
    ).to_be_visible()
    page.goto("/ui/repositories/team/app")
    expect(page.get_by_role("heading", name="Sorry")).to_be_visible()  # 404 when anonymous
    shot(page, tmp_path, "signed-out")
    context.close()

    # A read-only user sees no delete button anywhere.
    context = browser.new_context(base_url=registry.url)
    page = context.new_page()
    page.goto("/ui/")
    sign_in(page, "bob")
    page.goto("/ui/repositories/team/app")
    expect(page.locator("td.tag")).to_have_text(["1"])
    expect(page.get_by_role("link", name="Delete")).to_have_count(0)
    page.goto(f"/ui/images/team/app/{content['image']}")
    expect(page.get_by_role("heading", name="Layers")).to_be_visible()
    expect(page.get_by_role("link", name=re.compile("Delete"))).to_have_count(0)
    shot(page, tmp_path, "read-only")
    context.close()
    assert len(list((tmp_path / "screenshots").glob("*.png"))) == 15
