"""A bench run rewrites the sections of RESULTS.md it measured and keeps the others."""

from __future__ import annotations

from bench.report import merge_section


def test_a_section_is_replaced_and_the_others_kept() -> None:
    document = merge_section("", "comparison", "# table\nold figures\n")
    document = merge_section(document, "costs", "## costs\nfirst run")
    document = merge_section(document, "comparison", "# table\nnew figures")
    assert document == (
        "<!-- bench: comparison -->\n# table\nnew figures\n<!-- /bench: comparison -->\n"
        "\n<!-- bench: costs -->\n## costs\nfirst run\n<!-- /bench: costs -->\n"
    )
    assert merge_section(document, "costs", "## costs\nsecond run").count("first run") == 0


def test_a_file_without_sections_is_an_older_whole_table_and_goes() -> None:
    assert merge_section("# table\nold\n", "costs", "## costs") == (
        "<!-- bench: costs -->\n## costs\n<!-- /bench: costs -->\n"
    )
