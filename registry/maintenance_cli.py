"""`dockyard maintenance on|off|status`: switch the storage's maintenance flag.

Every process and replica serving the storage honours a change within
`storage.maintenance.REFRESH_SECONDS`, with no restart.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from datetime import UTC, datetime

from registry.config import Config
from storage.driver import StorageError
from storage.store import Store


def add_parser(commands: argparse._SubParsersAction, load: Callable[..., Config | None]) -> None:
    parser = commands.add_parser("maintenance", help="switch read-only maintenance mode")
    parser.add_argument("--config", help="YAML configuration file (default: $DOCKYARD_CONFIG)")
    parser.add_argument("action", choices=["on", "off", "status"])
    parser.add_argument("--message", help="what refused writes are told (with `on`)")
    parser.set_defaults(handler=lambda args: _maintenance(args, load))


def _maintenance(args: argparse.Namespace, load: Callable[..., Config | None]) -> int:
    config = load(args)
    if config is None:
        return 2
    try:
        print(asyncio.run(_switch(config, args.action, args.message)))
    except StorageError as error:
        print(f"dockyard: the storage failed: {error}", file=sys.stderr)
        return 1
    return 0


async def _switch(config: Config, action: str, message: str | None) -> str:
    from registry.drivers import create_driver

    store = Store(create_driver(config))
    try:
        if action == "on":
            await store.maintenance.switch_on(message)
        elif action == "off":
            await store.maintenance.switch_off()
        state = await store.maintenance.read()
    finally:
        await store.close()
    if state is None:
        return "maintenance: off"
    since = datetime.fromtimestamp(state.since, UTC).isoformat(timespec="seconds")
    return f"maintenance: on since {since}: {state.message}"
