"""Configuration: YAML file, environment overrides, and refusal of unknown keys."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from registry.config import Config, ConfigError, load_config
from tests.support.server import ROOT


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKYARD_CONFIG", raising=False)
    config = load_config()
    assert (config.http.host, config.http.port) == ("0.0.0.0", 5000)
    assert config.storage.driver == "filesystem"
    assert config.storage.filesystem.root == Path("data")
    assert config.storage.delete.enabled is True


def test_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("storage:\n  filesystem:\n    root: /srv/a\n  delete:\n    enabled: false\n")
    assert load_config(path).storage.filesystem.root == Path("/srv/a")
    monkeypatch.setenv("DOCKYARD_STORAGE__FILESYSTEM__ROOT", "/srv/b")
    config = load_config(path)
    assert config.storage.filesystem.root == Path("/srv/b")
    assert config.storage.delete.enabled is False  # untouched keys keep the file's value


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("storage:\n  filesystm: {}\n", "storage.filesystm"),
        ("htp:\n  port: 1\n", "htp"),
        ("http:\n  port: 70000\n", "http.port"),
        ("storage:\n  driver: floppy\n", "storage.driver"),
        ("storage:\n  driver: s3\n", "storage.s3.bucket is required"),
        ("storage:\n  s3:\n    part_size: 1024\n", "storage.s3.part_size"),
        ("storage:\n  s3:\n    addressing: sideways\n", "storage.s3.addressing"),
        ("storage:\n  s3:\n    access_key: a\n", "given together"),
        ("storage:\n  s3:\n    buckt: c\n", "storage.s3.buckt"),
    ],
)
def test_bad_file_names_the_key(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(path)


@pytest.mark.parametrize(
    "variable", ["DOCKYARD_STORAGE__BOGUS", "DOCKYARD_BOGUS", "DOCKYARD_HTTP__PORT_NUMBER"]
)
def test_unknown_environment_variable(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "1")
    with pytest.raises(ConfigError, match=r"(?i)bogus|port_number"):
        load_config()


def test_s3_token_mode_with_a_shared_key(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "storage:\n  driver: s3\n  s3:\n    bucket: b\n"
        "auth:\n  mode: token\n  token:\n    signing_key: /etc/dockyard/key.pem\n"
    )
    assert load_config(path).auth.token.signing_key == Path("/etc/dockyard/key.pem")


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("storage: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_serve_refuses_bad_config_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("storage:\n  filesystem:\n    rot: /tmp\n")
    result = subprocess.run(
        [sys.executable, "-m", "registry", "serve", "--config", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "storage.filesystem.rot" in result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "key"),
    [
        ("DOCKYARD_HTTP__PROT", "1", "http.prot"),
        ("DOCKYARD_HTTP__WORKERS", "-3", "http.workers"),
        ("DOCKYARD_AUTH__RULES", '[{"repositories": ["a"], "actions": ["fly"]}]', "auth.rules"),
    ],
)
def test_bad_environment_variable_is_named(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, key: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as raised:
        load_config()
    assert key in str(raised.value) and variable in str(raised.value)


def test_bad_file_value_names_no_variable(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("http:\n  workers: -3\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert "http.workers" in str(raised.value) and "DOCKYARD_" not in str(raised.value)


@pytest.mark.parametrize(
    ("written", "seconds"), [("90s", 90), ("10m", 600), ("1h", 3600), ("7d", 604800), (30, 30)]
)
def test_durations_are_written_with_a_unit(written: object, seconds: float) -> None:
    assert Config(gc={"grace": written}).gc.grace == seconds


@pytest.mark.parametrize("written", ["1w", "h", "-1h", "1 hour", ""])
def test_a_malformed_duration_is_refused_naming_the_key(written: str) -> None:
    with pytest.raises(ValidationError, match=r"grace\n.*not a duration"):
        Config(gc={"grace": written})
