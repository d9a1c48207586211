"""An upstream's credentials: from the config, or from a docker `config.json`."""

from __future__ import annotations

import base64
import binascii
import json
from urllib.parse import urlsplit

from registry.config import ConfigError, ProxyConfig, UpstreamConfig


class CredentialsError(Exception):
    """The credentials file cannot be used; the message says why."""


def upstream_credentials(config: UpstreamConfig) -> tuple[str, str] | None:
    """(username, password) to present to the upstream, or None: anonymous."""
    if config.username is not None and config.password is not None:
        return config.username, config.password.get_secret_value()
    if config.credentials_file is None:
        return None
    return _from_docker_config(config.credentials_file.read_text(), config.url)


def _from_docker_config(text: str, url: str) -> tuple[str, str]:
    """The `auths` entry of a docker config.json for the host of `url` (keyed by the host,
    or by a URL of it, as `docker login` writes them)."""
    try:
        auths = json.loads(text).get("auths", {})
    except (ValueError, AttributeError):
        raise CredentialsError("not a docker config.json (a JSON object with `auths`)") from None
    host = urlsplit(url).netloc
    for key, entry in auths.items():
        if host in (key, urlsplit(key).netloc) and isinstance(entry, dict):
            if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
                return entry["username"], entry["password"]
            try:
                username, colon, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (KeyError, TypeError, binascii.Error, UnicodeDecodeError):
                raise CredentialsError(f"the entry for {key} has no usable `auth`") from None
            if colon:
                return username, password
    raise CredentialsError(f"no `auths` entry for {host}")


def check_credentials(config: ProxyConfig) -> None:
    """Refuse to start with a credentials file that cannot be used, naming it."""
    for index, upstream in enumerate(config.upstreams):
        if upstream.credentials_file is None:
            continue
        key = f"proxy.upstreams[{index}].credentials_file"
        try:
            upstream_credentials(upstream)
        except OSError as error:
            raise ConfigError(
                f"{key}: cannot read {upstream.credentials_file}: {error.strerror}"
            ) from None
        except CredentialsError as error:
            raise ConfigError(f"{key}: {upstream.credentials_file}: {error}") from None
