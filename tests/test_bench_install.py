"""`python -m bench` installs nothing to answer --help, and never into the system Python."""

from __future__ import annotations

import runpy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import install


class Exec(Exception):
    """os.execv was called (it would replace the test process)."""


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every command the installer would run; nothing is found installed."""
    ran: list[list[str]] = []

    def run(command: list[str], **options: Any) -> subprocess.CompletedProcess[bytes]:
        ran.append([str(part) for part in command])
        return subprocess.CompletedProcess(command, 0)

    def execv(path: str, argv: list[str]) -> None:
        ran.append(["exec", *map(str, argv)])
        raise Exec

    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(install.os, "execv", execv)
    monkeypatch.setattr(shutil, "which", lambda command: None)
    return ran


@pytest.mark.parametrize(("argv", "code"), [(["--help"], 0), (["--variant", "floppy"], 2)])
def test_help_and_bad_flags_install_nothing(
    commands: list[list[str]], monkeypatch: pytest.MonkeyPatch, argv: list[str], code: int
) -> None:
    monkeypatch.setattr(sys, "argv", ["bench", *argv])
    with pytest.raises(SystemExit) as exited:
        runpy.run_module("bench", run_name="__main__")
    assert exited.value.code == code
    assert commands == []


def test_python_modules_go_into_the_project_venv_not_the_system(
    commands: list[list[str]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    venv = tmp_path / ".venv"
    monkeypatch.setattr(install, "VENV", venv)
    monkeypatch.setattr(install, "VENV_PYTHON", venv / "bin" / "python")
    monkeypatch.setattr(install.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(sys, "argv", ["bench", "--quick"])
    with pytest.raises(Exec):
        install.ensure_installed()
    assert [sys.executable, "-m", "venv", str(venv)] in commands
    assert commands[-1] == ["exec", str(venv / "bin" / "python"), "-m", "bench", "--quick"]
    assert not [command for command in commands if "pip" in command]
