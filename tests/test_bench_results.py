"""A bench run rewrites the sections of RESULTS.md it measured and keeps the others."""

from __future__ import annotations

from pathlib import Path

from bench.arguments import parse_arguments, results_files
from bench.figures import FIGURES, TARGETS
from bench.report import merge_section, verdict


def test_a_section_is_replaced_and_the_others_kept() -> None:
    document = merge_section("", "comparison", "# table\nold figures\n")
    document = merge_section(document, "costs", "## costs\nfirst run")
    document = merge_section(document, "comparison", "# table\nnew figures")
    assert document == (
        "<!-- bench: comparison -->\n# table\nnew figures\n<!-- /bench: comparison -->\n"
        "\n<!-- bench: costs -->\n## costs\nfirst run\n<!-- /bench: costs -->\n"
    )
    assert merge_section(document, "costs", "## costs\nsecond run").count("first run") == 0


def test_a_hand_written_section_with_a_hyphenated_name_is_kept() -> None:
    """`proxy-cost` (written by hand) went with every gc run before."""
    document = merge_section("", "proxy-cost", "## by hand")
    document = merge_section(document, "gc", "## gc\nfirst run")
    assert "## by hand" in merge_section(document, "gc", "## gc\nsecond run")


def test_a_file_without_sections_is_an_older_whole_table_and_goes() -> None:
    assert merge_section("# table\nold\n", "costs", "## costs") == (
        "<!-- bench: costs -->\n## costs\n<!-- /bench: costs -->\n"
    )


def test_targets_come_from_the_one_table_by_variant() -> None:
    figures = {figure.key: figure for figure in FIGURES}
    assert verdict(figures["manifest_rps"], 7.9, "filesystem") == ">= 8x: MISSED"
    assert verdict(figures["head_rps"], 3.1, "s3") == ">= 3x: met"
    assert verdict(figures["downloads"], 0.9, "s3-redirect") == ">= 1x: MISSED"
    assert verdict(figures["pull"], 0.99, "auth") == "<= 1x: met"
    assert all(key in figures for table in TARGETS.values() for key in table)


def test_a_partial_comparison_never_replaces_the_whole_table() -> None:
    def files(*argv: str) -> tuple[Path | None, Path | None]:
        return results_files(parse_arguments(list(argv)), Path("bench"))

    whole, sections = Path("bench/RESULTS.md"), Path("bench/RESULTS.md")
    assert files() == (whole, sections)
    assert files("--only", "proxy") == (Path("bench/RESULTS-proxy.md"), sections)
    assert files("--only", "rates", "--only", "blobs", "--variant", "s3") == (
        Path("bench/RESULTS-s3-blobs-rates.md"),
        Path("bench/RESULTS-s3.md"),
    )
    assert files("--only", "proxy", "--results", "x.md") == (Path("x.md"), Path("x.md"))
    assert files("--quick") == (None, None)
