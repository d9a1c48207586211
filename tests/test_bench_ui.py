"""`python -m bench --only ui`: the web UI's figure runs on its own, without servers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench import run, ui
from bench.arguments import parse_arguments


def test_only_ui_measures_the_repository_list_and_starts_no_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(ui, "REPOSITORIES", 120)
    monkeypatch.setattr(run, "WORKDIR", tmp_path / "work")
    monkeypatch.setattr(run, "start_dockyard", lambda *args: pytest.fail("a server started"))
    results = tmp_path / "RESULTS.md"
    assert run.main(parse_arguments(["--only", "ui", "--quick", "--results", str(results)])) == 0
    table = results.read_text()
    assert table.startswith("<!-- bench: ui -->")  # its own section of the results file
    assert re.search(
        r"\| repository list, first page of 120 repositories, by name \| [0-9.]+ \|", table
    )
    assert "sorted by last push (reads all 120 summaries)" in table
    assert not (tmp_path / "work" / "ui").exists()
