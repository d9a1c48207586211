"""`dockyard serve` before the workers start: flags, TLS files, the startup line, --version."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization

from registry import cli
from registry.config import CONFIG_ENV, Config, ConfigError, TlsConfig
from registry.startup import check_tls, startup_line
from tests.support.auth import write_users
from tests.support.server import ROOT, RegistryProcess
from tests.support.tls import Pki, make_pki


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """`dockyard serve` in-process with `config` as its file; uvicorn is never reached."""
    for variable in [v for v in os.environ if v.startswith("DOCKYARD_")]:
        monkeypatch.delenv(variable)
    started: list[dict[str, Any]] = []
    monkeypatch.setattr(
        uvicorn, "run", lambda app, **options: started.append({"app": app, **options})
    )

    def run(config: str, *flags: str) -> tuple[int, list[dict[str, Any]]]:
        path = tmp_path / "config.yaml"
        path.write_text(config)
        monkeypatch.setenv(CONFIG_ENV, str(path))
        return cli.main(["serve", *flags]), started

    return run


@pytest.mark.parametrize(
    ("flags", "named"),
    [(["--workers", "-1"], "--workers"), (["--port", "70000"], "--port")],
)
def test_flags_are_held_to_the_config_limits(serve: Any, capsys, flags, named) -> None:
    code, started = serve("", *flags)
    assert code == 2 and not started
    assert named in capsys.readouterr().err


def test_the_workers_run_the_app_that_freezes_its_startup_objects(serve: Any) -> None:
    code, started = serve("")
    assert code == 0
    assert started[0]["app"] == "registry.app:create_served_app"
    assert started[0]["factory"] is True


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def test_missing_certificate_is_named_without_a_traceback(tmp_path: Path, pki: Pki) -> None:
    config = tmp_path / "config.yaml"
    missing = tmp_path / "nope.crt"
    config.write_text(f"tls: {{certificate: {missing}, key: {pki.server_key}}}\n")
    result = subprocess.run(
        [sys.executable, "-m", "registry", "serve", "--config", str(config), "--port", "0",
         "--workers", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"tls.certificate: cannot read {missing}" in result.stderr
    assert "Traceback" not in result.stderr


def _encrypted(key: Path, target: Path) -> Path:
    private = serialization.load_pem_private_key(key.read_bytes(), None)
    target.write_bytes(
        private.private_bytes(  # type: ignore[union-attr]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    return target


TLS_CASES = [
    "missing key",
    "directory as certificate",
    "key as certificate",
    "certificate as key",
    "encrypted key",
    "someone else's key",
    "key as client CA",
]


@pytest.mark.parametrize("case", TLS_CASES)
def test_unusable_tls_files_are_named(tmp_path: Path, pki: Pki, case: str) -> None:
    cert, key, missing, here = pki.server_cert, pki.server_key, tmp_path / "missing.key", tmp_path
    encrypted = _encrypted(key, tmp_path / "encrypted.key")
    certificate, key_file, client_ca, message = {
        "missing key": (cert, missing, None, f"tls.key: cannot read {missing}: No such file"),
        "directory as certificate": (here, key, None, f"tls.certificate: cannot read {here}:"),
        "key as certificate": (key, key, None, f"tls.certificate: {key} holds no PEM certificate"),
        "certificate as key": (cert, cert, None, f"tls.key: {cert} is not an unencrypted PEM"),
        "encrypted key": (cert, encrypted, None, f"tls.key: {encrypted} is not an unencrypted"),
        "someone else's key": (
            cert, pki.client_key, None, f"tls.key: {pki.client_key} is not the key of"
        ),
        "key as client CA": (cert, key, key, f"tls.client_ca: {key} holds no PEM certificate"),
    }[case]  # fmt: skip
    with pytest.raises(ConfigError) as raised:
        check_tls(TlsConfig(certificate=certificate, key=key_file, client_ca=client_ca))
    assert message in str(raised.value)


def test_usable_tls_files_pass(pki: Pki) -> None:
    check_tls(TlsConfig(certificate=pki.server_cert, key=pki.server_key, client_ca=pki.ca))


def test_startup_line_says_where_and_how(tmp_path: Path) -> None:
    version = importlib.metadata.version("dockyard")
    config = Config(
        storage={"filesystem": {"root": str(tmp_path / "data")}},
        auth={"mode": "basic", "htpasswd": str(tmp_path / "users")},
    )
    line = startup_line(config, config.http.model_copy(update={"port": 5001}), 2)
    assert line == (
        f"dockyard {version} listening on http://0.0.0.0:5001 (2 workers), storage filesystem "
        f"at {tmp_path / 'data'}, auth basic (users {tmp_path / 'users'})"
    )


def test_startup_line_never_holds_a_secret(tmp_path: Path) -> None:
    key = tmp_path / "signing.pem"
    config = Config(
        storage={
            "driver": "s3",
            "s3": {"bucket": "b", "access_key": "AKIDEXAMPLE", "secret_key": "s3-Secret-Key"},
        },
        auth={"mode": "token", "token": {"signing_key": str(key)}},
    )
    line = startup_line(config, config.http, 1)
    assert "storage s3 bucket b" in line and f"signing key {key}" in line
    assert "s3-Secret-Key" not in line and "(1 worker)" in line


def test_serve_prints_the_startup_line_once(tmp_path: Path) -> None:
    users = write_users(tmp_path / "users", {"alice": "pw"})
    config = {"auth": {"mode": "basic", "htpasswd": str(users)}}
    with RegistryProcess(tmp_path / "registry", config, workers=2) as registry:
        lines = [line for line in registry.log().splitlines() if "listening on" in line]
    data = tmp_path / "registry" / "data"
    assert lines == [
        f"dockyard {importlib.metadata.version('dockyard')} listening on "
        f"http://127.0.0.1:{registry.port} (2 workers), storage filesystem at {data}, "
        f"auth basic (users {users})"
    ]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"dockyard {importlib.metadata.version('dockyard')}\n"
