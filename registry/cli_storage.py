"""`dockyard du` and `dockyard check`: storage use and storage verification, run against
the configured storage (the registry may be serving from it meanwhile)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from oci.errors import RegistryError
from oci.references import parse_name
from registry.config import CONFIG_ENV, Config
from storage.store import Store
from storage.usage import UsageReport, usage_report

LoadConfig = Callable[[argparse.Namespace], Config | None]


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _time(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _store(config: Config) -> Store:
    from registry.drivers import create_driver

    return Store(create_driver(config))


def _render_usage(report: UsageReport) -> str:
    rows = [("REPOSITORY", "TAGS", "SIZE", "UNIQUE", "LAST PUSH")]
    for row in report.repositories:
        summary = row.summary
        rows.append(
            (
                row.name,
                str(summary.tags),
                human_size(summary.bytes),
                human_size(row.unique_bytes),
                _time(summary.last_push) or "-",
            )
        )
    width = [max(len(row[column]) for row in rows) for column in range(4)]
    lines = [
        f"{name:<{width[0]}}  {tags:>{width[1]}}  {size:>{width[2]}}  {unique:>{width[3]}}  {last}"
        for name, tags, size, unique, last in rows
    ]
    count = len(report.repositories)
    lines.append(
        f"total: {human_size(report.total_bytes)} ({report.total_bytes} bytes) in {count} "
        f"{'repository' if count == 1 else 'repositories'}, shared blobs counted once"
    )
    return "\n".join(lines)


def _usage_json(report: UsageReport) -> dict[str, Any]:
    return {
        "repositories": [
            {
                "name": row.name,
                "tags": row.summary.tags,
                "manifests": row.summary.manifests,
                "blobs": row.summary.blobs,
                "bytes": row.summary.bytes,
                "unique_bytes": row.unique_bytes,
                "last_push": _time(row.summary.last_push),
            }
            for row in report.repositories
        ],
        "total_bytes": report.total_bytes,
    }


async def _du_report(store: Store, names: list[str] | None) -> UsageReport | str:
    try:
        if names:
            unknown = [name for name in names if not await store.catalog.exists(name)]
            if unknown:
                return f"no repository {', '.join(unknown)}"
        return await usage_report(store.usage, store.catalog, names or None)
    finally:
        await store.close()


def _du(args: argparse.Namespace, load: LoadConfig) -> int:
    config = load(args)
    if config is None:
        return 2
    try:
        names = [parse_name(name) for name in args.repositories]
    except RegistryError as error:
        print(f"dockyard: {error}", file=sys.stderr)
        return 2
    report = asyncio.run(_du_report(_store(config), names))
    if isinstance(report, str):
        print(f"dockyard: {report}", file=sys.stderr)
        return 1
    print(json.dumps(_usage_json(report), indent=2) if args.json else _render_usage(report))
    return 0


async def _run_check(store: Store, config: Config, repair: bool, parallelism: int) -> Any:
    from registry.routes.manifests import required_blobs
    from storage.check import Checker

    policy = config.validation.manifests
    checker = Checker(
        store,
        repair=repair,
        parallelism=parallelism,
        required_blobs=lambda manifest: required_blobs(manifest, policy),
        children_required=not policy.allow_missing_manifests,
        pulled_through=lambda name: any(
            name.startswith(upstream.prefix + "/") for upstream in config.proxy.upstreams
        ),
    )
    try:
        return await checker.run()
    finally:
        await store.close()


def _check(args: argparse.Namespace, load: LoadConfig) -> int:
    from storage.check import render, to_json

    config = load(args)
    if config is None:
        return 2
    report = asyncio.run(_run_check(_store(config), config, args.repair, args.parallelism))
    print(to_json(report) if args.json else render(report, args.repair))
    return 1 if report.problems else 0


def add_commands(commands: Any, load: LoadConfig) -> None:
    """Register `du` and `check` on the `dockyard` subcommands."""
    du = commands.add_parser("du", help="storage used per repository, and the total")
    du.add_argument("repositories", nargs="*", metavar="REPOSITORY", help="only these")
    du.add_argument("--config", help=f"YAML configuration file (default: ${CONFIG_ENV})")
    du.add_argument("--json", action="store_true", help="print JSON")
    du.set_defaults(handler=lambda args: _du(args, load))

    check = commands.add_parser(
        "check", help="verify every blob, manifest and tag; exit 1 if anything is wrong"
    )
    check.add_argument("--config", help=f"YAML configuration file (default: ${CONFIG_ENV})")
    check.add_argument(
        "--repair",
        action="store_true",
        help="remove dangling tags and links, move corrupt blobs to quarantine/",
    )
    check.add_argument("--json", action="store_true", help="print JSON")
    check.add_argument(
        "--parallelism", type=int, default=4, help="blobs hashed at once (default 4)"
    )
    check.set_defaults(handler=lambda args: _check(args, load))
