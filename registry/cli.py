"""The `dockyard` command."""

from __future__ import annotations

import argparse
import os
import sys

import uvicorn

from registry.config import CONFIG_ENV, ConfigError, load_config


def _serve(args: argparse.Namespace) -> int:
    if args.config:
        os.environ[CONFIG_ENV] = os.path.abspath(args.config)
    try:
        config = load_config()  # fail here, once, rather than in every worker
    except ConfigError as error:
        print(f"dockyard: {error}", file=sys.stderr)
        return 2
    workers = args.workers if args.workers is not None else config.http.workers
    uvicorn.run(
        "registry.app:create_app",
        factory=True,
        host=args.host or config.http.host,
        port=args.port if args.port is not None else config.http.port,
        workers=workers or os.cpu_count() or 1,
        loop="uvloop",
        http="httptools",
        log_level=config.log.level,
        access_log=False,  # the app writes its own, cheaper one: registry.access_log
        proxy_headers=False,
        server_header=False,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dockyard", description="A private container registry.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the registry")
    serve.add_argument("--config", help=f"YAML configuration file (default: ${CONFIG_ENV})")
    serve.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port to listen on (default 5000)")
    serve.add_argument("--workers", type=int, help="worker processes (default: one per CPU)")
    serve.set_defaults(handler=_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
