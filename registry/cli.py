"""The `dockyard` command."""

from __future__ import annotations

import argparse
import contextlib
import functools
import getpass
import json
import os
import resource
import signal
import socket
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from registry import cli_storage
from registry.auth import htpasswd
from registry.config import CONFIG_ENV, Config, ConfigError, HttpConfig, TlsConfig, load_config
from registry.maintenance_cli import add_parser as add_maintenance_parser
from registry.metrics import METRICS_DIR_ENV
from registry.scratch_dirs import scratch_directory
from registry.startup import check_tls, package_version, startup_line

THROTTLE_STATE_ENV = "DOCKYARD_AUTH__THROTTLE__STATE_DIR"


def _load(args: argparse.Namespace) -> Config | None:
    if args.config:
        os.environ[CONFIG_ENV] = os.path.abspath(args.config)
    try:
        return load_config()
    except ConfigError as error:
        print(f"dockyard: {error}", file=sys.stderr)
        return None


def _tls_options(tls: TlsConfig) -> dict[str, Any]:
    if not tls.enabled:
        return {}
    options: dict[str, Any] = {"ssl_certfile": str(tls.certificate), "ssl_keyfile": str(tls.key)}
    if tls.client_ca is not None:
        options.update(ssl_ca_certs=str(tls.client_ca), ssl_cert_reqs=ssl.CERT_REQUIRED)
    return options


def _connection_options(http: HttpConfig) -> dict[str, Any]:
    from registry.connections import ConnectionLimits, LimitedHttpToolsProtocol

    limits = ConnectionLimits(
        http.header_timeout, http.body_timeout, http.max_header_bytes, http.max_connections
    )
    return {
        "http": functools.partial(LimitedHttpToolsProtocol, limits=limits),
        "timeout_keep_alive": http.keepalive_timeout,
        "ws": "none",  # no websocket endpoints: no upgrades
    }


# Descriptors a worker needs beside its connections: storage files, S3 pools, logs.
_SPARE_FILES = 256


def raise_open_files_limit(max_connections: int) -> str | None:
    """Raise the soft open-file limit to the hard one; a warning if it is still too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    if soft != resource.RLIM_INFINITY and soft < max_connections + _SPARE_FILES:
        return (
            f"the open-file limit ({soft}) leaves little room beside http.max_connections"
            f" ({max_connections}): raise it (ulimit -n) or lower http.max_connections"
        )
    return None


def _prepare_access(config: Config) -> str | None:
    """Check the users file and create the token signing key before workers start."""
    from registry.auth.setup import build_access

    refusals: tuple[type[Exception], ...] = (htpasswd.HtpasswdError,)
    if config.auth.mode == "token":  # the key modules load PyJWT: a single worker runs here
        from registry.auth.keys import KeyConfigError

        refusals += (KeyConfigError,)
    try:
        build_access(config)
    except refusals as error:
        return str(error)
    return None


def _http(args: argparse.Namespace, config: Config) -> HttpConfig | None:
    """`http` with the command-line flags applied, held to the same limits as the file."""
    flags = {name: getattr(args, name, None) for name in ("host", "port", "workers")}
    given = {name: value for name, value in flags.items() if value is not None}
    try:
        return HttpConfig.model_validate({**config.http.model_dump(), **given})
    except ValidationError as error:
        for problem in error.errors():
            print(f"dockyard: --{problem['loc'][0]}: {problem['msg']}", file=sys.stderr)
        return None


@contextlib.contextmanager
def _metrics_directory() -> Iterator[None]:
    """A fresh directory for this server's workers to publish their metrics in (see
    registry/metrics.py), removed at exit. After its graceful shutdown uvicorn raises
    the SIGTERM it caught again; exiting (status 0) on it, rather than dying of it,
    lets the removal run."""
    with scratch_directory("metrics") as directory:
        os.environ[METRICS_DIR_ENV] = directory
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)
            del os.environ[METRICS_DIR_ENV]


def _serve(args: argparse.Namespace) -> int:
    # What only serving needs is imported here: the other commands (`healthcheck` runs
    # every few seconds in a container, `gc` is timed) start without it.
    from proxy.credentials import check_credentials
    from registry.metrics_exposition import start_listener

    config = _load(args)  # fail here, once, rather than in every worker
    http = _http(args, config) if config is not None else None
    if config is None or http is None:
        return 2
    try:
        check_tls(config.tls)
        check_credentials(config.proxy)
    except ConfigError as error:
        print(f"dockyard: {error}", file=sys.stderr)
        return 2
    if problem := _prepare_access(config):
        print(f"dockyard: {problem}", file=sys.stderr)
        return 2
    if warning := raise_open_files_limit(http.max_connections):  # workers inherit it
        print(f"dockyard: warning: {warning}", file=sys.stderr)
    workers = http.workers or os.cpu_count() or 1
    print(startup_line(config, http, workers), file=sys.stderr, flush=True)
    with _throttle_state(config), _metrics_directory():
        if config.metrics.enabled and config.metrics.address is not None:
            try:
                start_listener(config.metrics)
            except OSError as error:
                print(f"dockyard: metrics.address: {error.strerror}", file=sys.stderr)
                return 2
        _run(config, http, workers)
    return 0


@contextlib.contextmanager
def _throttle_state(config: Config) -> Iterator[None]:
    """A directory where the workers share their failed-login counters, unless configured."""
    if config.auth.mode == "none" or config.auth.throttle.state_dir is not None:
        yield
        return
    with scratch_directory("throttle") as state_dir:
        os.environ[THROTTLE_STATE_ENV] = state_dir  # the workers read it with their config
        try:
            yield
        finally:
            del os.environ[THROTTLE_STATE_ENV]


def _run(config: Config, http: HttpConfig, workers: int) -> None:
    import uvicorn

    from registry.logs import log_config

    uvicorn.run(
        "registry.app:create_served_app",
        factory=True,
        host=http.host,
        port=http.port,
        workers=workers,
        loop="uvloop",
        **_connection_options(http),
        log_level=config.log.level,
        log_config=log_config(config.log),
        access_log=False,  # the app writes its own, cheaper one: registry.access_log
        proxy_headers=False,
        server_header=False,
        **_tls_options(config.tls),
    )


def _healthcheck(args: argparse.Namespace) -> int:
    """Exit 0 when the local registry is ready (`/readyz`); else print why and exit 1."""
    config = _load(args)
    http = _http(args, config) if config is not None else None
    if config is None or http is None:
        return 2
    port = http.port
    if config.tls.client_ca is not None:  # we hold no client certificate: a connect must do
        try:
            socket.create_connection(("127.0.0.1", port), timeout=args.timeout).close()
        except OSError as error:
            print(f"dockyard: not serving on port {port}: {error.strerror}", file=sys.stderr)
            return 1
        return 0
    scheme, context = "http", None
    if config.tls.enabled:  # our own server on loopback: its certificate names another host
        scheme, context = "https", ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    url = f"{scheme}://127.0.0.1:{port}/readyz"
    try:
        urllib.request.urlopen(url, timeout=args.timeout, context=context).close()
    except urllib.error.HTTPError as error:
        print(f"dockyard: not ready: {_reason(error)}", file=sys.stderr)
        return 1
    except OSError as error:
        reason = getattr(error, "reason", None) or error.strerror or error
        print(f"dockyard: no answer from {url}: {reason}", file=sys.stderr)
        return 1
    return 0


def _reason(error: urllib.error.HTTPError) -> str:
    """The `reason` of a `/readyz` answer, else its status."""
    try:
        return str(json.loads(error.read())["reason"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"HTTP {error.code}"


def _users_file(args: argparse.Namespace) -> Path | None:
    if args.htpasswd:
        return Path(args.htpasswd)
    config = _load(args)
    return config.auth.htpasswd if config is not None else None


def _read_password(name: str) -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    password = getpass.getpass(f"Password for {name}: ")
    if getpass.getpass("Repeat it: ") != password:
        raise htpasswd.HtpasswdError("the passwords differ")
    return password


def _user(args: argparse.Namespace) -> int:
    path = _users_file(args)
    if path is None:
        return 2
    try:
        if args.action != "add" and not path.exists():
            raise htpasswd.HtpasswdError(
                f"no users file {path}; create it with `dockyard user add NAME`"
            )
        users = htpasswd.read(path)
        if args.action == "list":
            for name in sorted(users):
                print(name)
            return 0
        name = htpasswd.check_username(args.name)
        if args.action == "add":
            users[name] = htpasswd.hash_password(_read_password(name))
            message = f"user {name} saved in {path}"
        elif users.pop(name, None) is None:
            raise htpasswd.HtpasswdError(f"no user {name} in {path}")
        else:
            message = f"user {name} removed from {path}"
        htpasswd.write(path, users)
    except (htpasswd.HtpasswdError, OSError) as error:
        print(f"dockyard: {error}", file=sys.stderr)
        return 1
    print(message, file=sys.stderr)
    return 0


def _users_file_options(parser: argparse.ArgumentParser, default: Any = None) -> None:
    # An action's options default to SUPPRESS so they never undo the same option given
    # before the action (argparse copies everything a subparser sets).
    parser.add_argument(
        "--config", default=default, help=f"YAML configuration file (default: ${CONFIG_ENV})"
    )
    parser.add_argument(
        "--htpasswd", default=default, help="users file (default: auth.htpasswd of the config)"
    )


def _gc(args: argparse.Namespace) -> int:
    from collector.cli import run_gc

    config = _load(args)
    return 2 if config is None else run_gc(config, args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dockyard", description="A private container registry.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the registry")
    serve.add_argument("--config", help=f"YAML configuration file (default: ${CONFIG_ENV})")
    serve.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port to listen on (default 5000)")
    serve.add_argument("--workers", type=int, help="worker processes (default: one per CPU)")
    serve.set_defaults(handler=_serve)

    check = commands.add_parser("healthcheck", help="exit 0 if the local registry is ready")
    check.add_argument("--config", help=f"YAML configuration file (default: ${CONFIG_ENV})")
    check.add_argument("--port", type=int, help="port to probe (default: http.port)")
    check.add_argument("--timeout", type=float, default=5.0, help="seconds to wait")
    check.set_defaults(handler=_healthcheck)

    gc = commands.add_parser("gc", help="collect garbage once (safe while servers run)")
    gc.add_argument("--config", help=f"YAML configuration file (default: ${CONFIG_ENV})")
    gc.add_argument("--dry-run", action="store_true", help="print what would go; delete nothing")
    gc.add_argument("--json", action="store_true", help="print JSON lines")
    gc.set_defaults(handler=_gc)

    user = commands.add_parser("user", help="manage the users file (htpasswd, bcrypt)")
    _users_file_options(user)
    actions = user.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="add a user or set a password (prompt or stdin)")
    add.add_argument("name")
    remove = actions.add_parser("remove", help="remove a user")
    remove.add_argument("name")
    listing = actions.add_parser("list", help="list the users")
    for action in (add, remove, listing):  # `user add bob --config c.yaml` too
        _users_file_options(action, default=argparse.SUPPRESS)
    user.set_defaults(handler=_user)
    cli_storage.add_commands(commands, _load)

    add_maintenance_parser(commands, _load)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
