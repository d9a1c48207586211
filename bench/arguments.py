"""The command line of `python -m bench`; imports nothing that may still need installing."""

from __future__ import annotations

import argparse
from pathlib import Path

COMPARED = ("blobs", "rates", "docker", "proxy")  # Dockyard against the reference registry
# costs: one feature toggled; ui: the web UI (Dockyard's); gc: bench/gc.py, its own data
GROUPS = (*COMPARED, "costs", "ui", "gc")


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse (answering --help and bad flags) before anything is installed."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Dockyard against the reference registry (CNCF distribution), side by "
        "side; installs what a run needs (Debian packages, the project's .venv) when it starts.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one round (development)")
    parser.add_argument("--rounds", type=int, help="rounds of A/B measurements")
    parser.add_argument(
        "--only",
        choices=GROUPS,
        action="append",
        help="measure only this group of figures (repeatable; default: all of them)",
    )
    parser.add_argument(
        "--variant",
        choices=["filesystem", "auth", "s3", "s3-redirect"],
        default="filesystem",
        help="auth: basic auth on both servers; s3: both on one SeaweedFS; s3-redirect: "
        "the same, blob GETs redirected to S3 (results in RESULTS-VARIANT.md)",
    )
    parser.add_argument(
        "--gc-blobs",
        type=int,
        help="blobs in the gc figure's registry (default 100,000; 2,000 with --quick)",
    )
    parser.add_argument(
        "--results", type=Path, help="where to write the table (default: none with --quick)"
    )
    return parser.parse_args(argv)


def chosen_groups(args: argparse.Namespace) -> set[str]:
    """The groups the run measures: those named with --only, or all of them."""
    return set(args.only or GROUPS)


def results_files(args: argparse.Namespace, folder: Path) -> tuple[Path | None, Path | None]:
    """Where the run writes (None: to the screen): the comparison table, and the other
    sections. A comparison that leaves groups out goes to a file named after the groups
    it has (`--only proxy`: RESULTS-proxy.md), never over the whole table."""
    if args.results or args.quick:
        return args.results, args.results
    stem = "RESULTS" if args.variant == "filesystem" else f"RESULTS-{args.variant}"
    measured = [group for group in COMPARED if group in chosen_groups(args)]
    partial = "-" + "-".join(measured) if 0 < len(measured) < len(COMPARED) else ""
    return folder / f"{stem}{partial}.md", folder / f"{stem}.md"
