"""What `dockyard serve` checks and says once, in the parent, before any worker starts."""

from __future__ import annotations

import importlib.metadata
import ssl
from pathlib import Path

from registry.config import Config, ConfigError, HttpConfig, TlsConfig


def package_version() -> str:
    try:
        return importlib.metadata.version("dockyard")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown"


def _readable(key: str, path: Path) -> None:
    try:
        path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{key}: cannot read {path}: {error.strerror}") from None


def _holds_certificates(key: str, path: Path) -> None:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except ssl.SSLError:
        raise ConfigError(f"{key}: {path} holds no PEM certificate") from None


def check_tls(tls: TlsConfig) -> None:
    """Load the TLS files as the server will, naming the key and file that cannot be used."""
    if tls.certificate is None or tls.key is None:
        return
    files = {"tls.certificate": tls.certificate, "tls.key": tls.key, "tls.client_ca": tls.client_ca}
    for key, path in files.items():
        if path is not None:
            _readable(key, path)
    _holds_certificates("tls.certificate", tls.certificate)
    try:
        # A password of b"" makes an encrypted key fail here instead of prompting for one.
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(tls.certificate, tls.key, b"")
    except ssl.SSLError as error:
        if error.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(
                f"tls.key: {tls.key} is not the key of tls.certificate {tls.certificate}"
            ) from None
        raise ConfigError(f"tls.key: {tls.key} is not an unencrypted PEM private key") from None
    if tls.client_ca is not None:
        _holds_certificates("tls.client_ca", tls.client_ca)


def _storage(config: Config) -> str:
    storage = config.storage
    if storage.driver == "filesystem":
        return f"storage filesystem at {storage.filesystem.root.resolve()}"
    if storage.driver == "memory":
        return "storage memory (lost on exit, one per worker process)"
    where = f"storage s3 bucket {storage.s3.bucket}"
    if storage.s3.prefix:
        where += f" prefix {storage.s3.prefix}"
    return where + f" at {storage.s3.endpoint_url or 'AWS'}"


def _auth(config: Config) -> str:
    from registry.auth.setup import (  # the auth package only when needed
        SIGNING_KEY_NAME,
        key_in_bucket,
        signing_key_path,
    )

    auth = config.auth
    if auth.mode == "none":
        return "auth none (anyone may pull and push)"
    users = f"users {auth.htpasswd.resolve()}"
    if auth.mode == "basic":
        return f"auth basic ({users})"
    if auth.token.external:
        return f"auth token (tokens of issuer {auth.token.issuer})"
    if key_in_bucket(config):
        return f"auth token ({users}, signing key {SIGNING_KEY_NAME} in the bucket)"
    return f"auth token ({users}, signing key {signing_key_path(config).resolve()})"


def startup_line(config: Config, http: HttpConfig, workers: int) -> str:
    """Where it listens, where the data goes, and who may do what; never a secret."""
    scheme = "https" if config.tls.enabled else "http"
    host = f"[{http.host}]" if ":" in http.host else http.host
    listening = f"{scheme}://{host}:{http.port} ({workers} worker{'s' if workers > 1 else ''})"
    if config.tls.client_ca is not None:
        listening += " requiring client certificates"
    return (
        f"dockyard {package_version()} listening on {listening}, "
        f"{_storage(config)}, {_auth(config)}"
    )
