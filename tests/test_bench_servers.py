"""How the bench reports a server that died or failed a run, and the reference's settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench.servers import ReferenceRegistry, report_if_died, report_problems


class DeadServer:
    host = url = "127.0.0.1:1"

    def __init__(self, log: str, tmp_path: Path) -> None:
        self.log_path = tmp_path / "server.log"
        self.log_path.write_text(log)
        self.process: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-c", "raise SystemExit(2)"]
        )
        self.process.wait()

    def stop(self) -> None:
        return None


def test_a_go_panic_is_shown_from_its_cause(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stacks = [f"goroutine {n} [running]:\n\tframe.go:{n}" for n in range(100)]
    log = "\n".join(["level=info msg=serving", "panic: runtime error: index out of range", *stacks])
    report_if_died("reference", DeadServer(log, tmp_path), lines=5)
    shown = capsys.readouterr().out
    assert "exited with code 2" in shown
    assert "panic: runtime error: index out of range" in shown
    assert "msg=serving" not in shown and "goroutine 99" not in shown


def test_without_a_panic_the_last_lines_are_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = "\n".join(f"line {n}" for n in range(50))
    report_if_died("dockyard", DeadServer(log, tmp_path), lines=3)
    shown = capsys.readouterr().out
    assert "line 47\nline 48\nline 49" in shown and "line 46" not in shown


def test_the_reference_runs_without_its_upload_purger(tmp_path: Path) -> None:
    settings = yaml.safe_load(ReferenceRegistry(tmp_path).config_path.read_text())
    assert settings["storage"]["maintenance"] == {"uploadpurging": {"enabled": False}}


def test_a_failed_run_shows_the_servers_last_warnings_and_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = "\n".join(
        [
            'INFO:     127.0.0.1:5 "PUT /v2/a/blobs/uploads/x HTTP/1.1" 503',
            "WARNING:  storage unavailable: S3 PutObject failed: InternalError (HTTP 500)",
            'time="..." level=error msg="response completed with error"',
            *(f"INFO:     request {n}" for n in range(100)),
        ]
    )
    report_problems("dockyard", DeadServer(log, tmp_path))
    shown = capsys.readouterr().out
    assert "storage unavailable: S3 PutObject failed" in shown
    assert "level=error" in shown
    assert "INFO" not in shown
