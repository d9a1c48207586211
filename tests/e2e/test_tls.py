"""TLS: docker and skopeo over HTTPS with a CA made by the test; mutual TLS."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import ssl
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.auth import write_users
from tests.support.dockerd import DockerDaemon
from tests.support.required import require_tool, unavailable
from tests.support.server import RegistryProcess
from tests.support.tls import Pki, make_pki

pytestmark = pytest.mark.e2e

PASSWORD = "tls-Secret-9"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def tls_registry(workdir: Path, pki: Pki, **tls: str) -> RegistryProcess:
    users = write_users(workdir / "htpasswd", {"alice": PASSWORD})
    config = {
        "auth": {"mode": "basic", "htpasswd": str(users)},
        "tls": {"certificate": str(pki.server_cert), "key": str(pki.server_key), **tls},
    }
    client_tls = None
    if "client_ca" in tls:
        client_tls = ssl.create_default_context(cafile=pki.ca)
        client_tls.load_cert_chain(pki.client_cert, pki.client_key)
    return RegistryProcess(workdir, config, scheme="https", client_tls=client_tls)


@pytest.fixture
def registry(tmp_path: Path, pki: Pki) -> Iterator[RegistryProcess]:
    with tls_registry(tmp_path / "registry", pki) as server:
        yield server


@pytest.fixture
def docker_trusts_ca(registry: RegistryProcess, pki: Pki) -> Iterator[Path]:
    """The README's step: the CA in /etc/docker/certs.d/HOST:PORT/ (the port is ours alone)."""
    directory = Path("/etc/docker/certs.d") / registry.host
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        unavailable("cannot write /etc/docker/certs.d (not root)")
    shutil.copy(pki.ca, directory / "ca.crt")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_serves_https_only_with_the_test_ca(registry: RegistryProcess, pki: Pki) -> None:
    response = httpx.get(f"{registry.url}/v2/", verify=ssl.create_default_context(cafile=pki.ca))
    assert response.status_code == 401
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{registry.url}/v2/")  # not trusted without the CA
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{registry.host}/v2/", timeout=5)  # no plain HTTP


def test_docker_push_pull_over_https(
    dockerd: DockerDaemon, registry: RegistryProcess, docker_trusts_ca: Path, tmp_path: Path
) -> None:
    # dockerd treats 127.0.0.0/8 as insecure (it would fall back to HTTP), so this proves
    # docker spoke HTTPS (the registry serves nothing else), not that it checked the CA;
    # the skopeo test below proves the CA is trusted.
    image = f"{registry.host}/team/tls:1"
    dockerd.build_image(image, tmp_path / "context", extra_layers=1)
    try:
        dockerd.run(
            "login", "-u", "alice", "--password-stdin", registry.host, input=PASSWORD.encode()
        )
        dockerd.run("push", image)
        dockerd.run("rmi", image)
        dockerd.run("pull", image)
    finally:
        dockerd.run("logout", registry.host, check=False)
        dockerd.run("rmi", image, check=False)
    assert "Invalid HTTP request" not in registry.log()


def _blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def make_oci_layout(layout: Path) -> None:
    """A one-layer OCI image layout, tagged `1`, for skopeo to copy."""
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    content = b"served over TLS\n"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    layer = _blob(layout, buffer.getvalue())
    config = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
    }
    config_descriptor = _blob(layout, json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_descriptor},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer}],
    }
    manifest_descriptor = _blob(layout, json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **manifest_descriptor,
                "annotations": {"org.opencontainers.image.ref.name": "1"},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))


def test_skopeo_verifies_the_ca(registry: RegistryProcess, pki: Pki, tmp_path: Path) -> None:
    skopeo = require_tool("skopeo")
    layout = tmp_path / "layout"
    make_oci_layout(layout)
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(pki.ca, certs / "ca.crt")
    destination = f"docker://{registry.host}/team/skopeo:1"

    def copy(*options: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [skopeo, "copy", "--dest-creds", f"alice:{PASSWORD}", *options,
             f"oci:{layout}:1", destination],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    untrusted = copy("--dest-tls-verify=true")
    assert untrusted.returncode != 0
    assert "certificate" in untrusted.stderr.lower(), untrusted.stderr
    trusted = copy("--dest-tls-verify=true", "--dest-cert-dir", str(certs))
    assert trusted.returncode == 0, trusted.stderr
    inspect = subprocess.run(
        [skopeo, "inspect", "--cert-dir", str(certs), "--creds", f"alice:{PASSWORD}", destination],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert inspect.returncode == 0, inspect.stderr
    assert json.loads(inspect.stdout)["Name"] == f"{registry.host}/team/skopeo"


def test_mutual_tls_requires_a_client_certificate(pki: Pki, tmp_path: Path) -> None:
    with tls_registry(tmp_path / "mtls", pki, client_ca=str(pki.ca)) as server:
        trusting = ssl.create_default_context(cafile=pki.ca)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{server.url}/v2/", verify=trusting)
        with_cert = ssl.create_default_context(cafile=pki.ca)
        with_cert.load_cert_chain(pki.client_cert, pki.client_key)
        assert httpx.get(f"{server.url}/v2/", verify=with_cert).status_code == 401
