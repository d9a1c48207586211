"""Configuration: a YAML file, every key overridable by a `DOCKYARD_` environment variable.

Nested keys join with `__`: `DOCKYARD_STORAGE__FILESYSTEM__ROOT=/srv/registry`.
Unknown keys are refused, naming the key, so a typo never silently falls back to
a default. `config.example.yaml` documents every option with its default.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from oci.globs import compile_tag_pattern
from oci.references import is_name
from storage.maintenance import DEFAULT_MESSAGE

CONFIG_ENV = "DOCKYARD_CONFIG"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HttpConfig(Section):
    host: str = "0.0.0.0"
    port: int = Field(5000, ge=0, le=65535)
    workers: int = Field(0, ge=0, description="0 means one per CPU")
    access_log: bool = True
    header_timeout: float = Field(
        60.0, gt=0, description="seconds for a request's headers, from connect or first byte"
    )
    body_timeout: float = Field(
        120.0, gt=0, description="seconds without a body byte while reading a request body"
    )
    max_header_bytes: int = Field(
        128 << 10,
        ge=1024,
        description="largest request head (request line and headers); room for a bearer"
        " token of 64 KiB, the largest the token check reads",
    )
    keepalive_timeout: float = Field(
        75.0, gt=0, description="seconds an idle connection stays open between requests"
    )
    max_connections: int = Field(
        1000, ge=1, description="open connections per worker; new ones beyond are closed"
    )


class FilesystemConfig(Section):
    root: Path = Path("./data")


class S3Config(Section):
    """`storage.s3`: where the bucket is and how to reach it (see README, "S3 storage")."""

    bucket: str = ""
    prefix: str = Field("", description="key prefix (root directory) inside the bucket")
    region: str | None = None
    endpoint_url: str | None = Field(None, description="for MinIO, SeaweedFS, Ceph...")
    access_key: str | None = Field(None, description="absent: boto3's default credential chain")
    secret_key: SecretStr | None = None
    addressing: Literal["auto", "path", "virtual"] = "auto"
    part_size: int = Field(10 << 20, ge=5 << 20, le=5 << 30)
    buffer_memory: int = Field(
        40 << 20,
        description="bytes of in-memory part buffers per process, at least two parts;"
        " uploads beyond them buffer their part in a temporary file",
    )
    server_side_encryption: Literal["AES256", "aws:kms"] | None = None
    kms_key_id: str | None = None
    redirect: bool = Field(False, description="answer blob GETs with 307 to a presigned URL")
    max_concurrency: int = Field(16, ge=1, le=256)
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(60.0, gt=0)
    max_attempts: int = Field(3, ge=1, le=10)

    @model_validator(mode="after")
    def _keys_come_in_pairs(self) -> S3Config:
        if (self.access_key is None) != (self.secret_key is None):
            raise ValueError("access_key and secret_key must be given together")
        return self

    @model_validator(mode="after")
    def _buffers_hold_two_parts(self) -> S3Config:
        if self.buffer_memory < 2 * self.part_size:
            raise ValueError(
                f"buffer_memory ({self.buffer_memory}) must hold at least two parts"
                f" of part_size ({self.part_size}) bytes"
            )
        return self


class DeleteConfig(Section):
    enabled: bool = True


class StorageConfig(Section):
    driver: Literal["filesystem", "memory", "s3"] = "filesystem"
    filesystem: FilesystemConfig = FilesystemConfig()
    s3: S3Config = S3Config()
    delete: DeleteConfig = DeleteConfig()

    @model_validator(mode="after")
    def _s3_needs_a_bucket(self) -> StorageConfig:
        if self.driver == "s3" and not self.s3.bucket:
            raise ValueError("storage.s3.bucket is required when storage.driver is s3")
        return self


_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhd])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> float:
    """Seconds in a duration written `90s`, `10m`, `1h` or `7d` (a bare number is seconds)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.fullmatch(str(value).strip())
    if match is None:
        raise ValueError(f"{value!r} is not a duration such as 90s, 10m, 1h or 7d")
    return float(match[1]) * _SECONDS[match[2]]


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
"""Seconds, written in config and flags as `90s`, `10m`, `1h` or `7d`."""


def format_duration(seconds: float) -> str:
    """`seconds` as written in the config: in the largest unit that divides it."""
    for unit in ("d", "h", "m"):
        if seconds and seconds % _SECONDS[unit] == 0:
            return f"{int(seconds // _SECONDS[unit])}{unit}"
    return f"{seconds:g}s"


def _valid_tag_pattern(pattern: str) -> str:
    compile_tag_pattern(pattern)
    return pattern


TagPattern = Annotated[str, AfterValidator(_valid_tag_pattern)]
"""A tag glob (`v*`), or a regular expression between slashes (`/^v[0-9]+$/`)."""


def _valid_name(name: str) -> str:
    if not is_name(name):
        raise ValueError(f"{name!r} is not a valid repository name")
    return name


RepositoryName = Annotated[str, AfterValidator(_valid_name)]


class UploadsConfig(Section):
    chunk_min_length: int = Field(
        5 << 20, ge=0, description="advertised as OCI-Chunk-Min-Length; 0 advertises none"
    )
    max_age: Duration = Field(
        86400.0, gt=0, description="the collector removes sessions idle this long"
    )
    manifest_max_bytes: int = Field(4 << 20, gt=0)


class ManifestValidationConfig(Section):
    """What a pushed manifest may reference that this repository does not hold."""

    allow_missing_layers: Literal["none", "foreign", "all"] = Field(
        "none",
        description="none: only non-distributable layers that give urls;"
        " foreign: any non-distributable layer; all: any layer (sparse images)",
    )
    allow_missing_manifests: bool = Field(
        False, description="indexes may name absent manifests (a partial multi-platform mirror)"
    )


class ValidationConfig(Section):
    manifests: ManifestValidationConfig = ManifestValidationConfig()


Action = Literal["pull", "push", "delete"]


class RuleConfig(Section):
    """Who may do what on which repositories; `{user}` in a pattern is the caller's name."""

    repositories: list[str] = Field(
        min_length=1, description="globs: * within a path part, ** across"
    )
    actions: list[Action] = Field(min_length=1)
    users: list[str] = Field(default_factory=list, description='"*" is every authenticated user')
    groups: list[str] = Field(default_factory=list)


class ThrottleConfig(Section):
    """Failed logins: counted per user and address, per address, and per user (README)."""

    max_failures: int = Field(
        5, ge=1, description="failed logins for one user from one address before delays start"
    )
    address_max_failures: int = Field(
        20, ge=1, description="failed logins from one address, for any users, before delays"
    )
    user_max_failures: int = Field(
        100,
        ge=1,
        description="failed logins for one user from anywhere before delays, except from"
        " addresses that user signed in from",
    )
    base_delay: float = Field(1.0, gt=0, description="first delay in seconds; doubles per failure")
    max_delay: float = Field(300.0, gt=0)
    state_dir: Path | None = Field(
        None,
        description="directory of the counters shared by the workers of one server;"
        " null: `dockyard serve` makes a private one and removes it at exit",
    )


class TokenConfig(Section):
    realm: str | None = Field(
        None, description="token endpoint URL; default <this host>/auth/token"
    )
    service: str = "dockyard"
    issuer: str = "dockyard"
    expires_in: int = Field(300, ge=60, le=86400)
    refresh_expires_in: int = Field(30 * 86400, ge=60)
    signing_key: Path | None = Field(
        None, description="path of a PEM private key file, which must exist; default generated"
    )
    public_key: Path | None = Field(None, description="PEM key of an external issuer to trust")
    jwks: Path | None = Field(None, description="JWKS file of an external issuer to trust")

    @property
    def external(self) -> bool:
        return self.public_key is not None or self.jwks is not None


def _everyone_everything() -> list[RuleConfig]:
    return [RuleConfig(repositories=["**"], users=["*"], actions=["pull", "push", "delete"])]


class AuthConfig(Section):
    mode: Literal["none", "basic", "token"] = "none"
    realm: str = "Dockyard"
    htpasswd: Path = Path("./htpasswd")
    admins: list[str] = Field(default_factory=list)
    groups: dict[str, list[str]] = Field(default_factory=dict)
    rules: list[RuleConfig] = Field(default_factory=_everyone_everything)
    anonymous_pull: list[str] = Field(default_factory=list, description="repository globs")
    user_namespaces: bool = Field(False, description="every user may do anything in {user}/**")
    cache_ttl: float = Field(60.0, ge=0, description="seconds a verified password is remembered")
    throttle: ThrottleConfig = ThrottleConfig()
    token: TokenConfig = TokenConfig()


class TlsConfig(Section):
    certificate: Path | None = None
    key: Path | None = None
    client_ca: Path | None = Field(None, description="require client certificates from this CA")

    @model_validator(mode="after")
    def _complete(self) -> TlsConfig:
        if (self.certificate is None) != (self.key is None):
            raise ValueError("tls.certificate and tls.key go together")
        if self.client_ca is not None and self.certificate is None:
            raise ValueError("tls.client_ca needs tls.certificate and tls.key")
        return self

    @property
    def enabled(self) -> bool:
        return self.certificate is not None


class LogConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


class MetricsConfig(Section):
    """`/metrics` (README "Monitoring"): on the main port, or a listener of its own."""

    enabled: bool = True
    address: str | None = Field(
        None, description="host:port of a separate listener; None: /metrics on the main port"
    )
    token: SecretStr | None = Field(None, description="bearer token a scrape must present")

    @model_validator(mode="after")
    def _address_is_host_and_port(self) -> MetricsConfig:
        if self.address is not None:
            split_address(self.address)
        return self


def split_address(address: str) -> tuple[str, int]:
    """`host:port` (`[v6]:port` for IPv6) as a host and a port number; ValueError if not."""
    host, _, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not host:port")
    return host, int(port)


class HealthConfig(Section):
    timeout: float = Field(2.0, gt=0, description="seconds storage has to answer /readyz")


class MaintenanceConfig(Section):
    """`maintenance`: a registry held read-only by its config (beside `dockyard maintenance`)."""

    readonly: bool = Field(False, description="refuse every write (405 UNSUPPORTED)")
    message: str = Field(DEFAULT_MESSAGE, min_length=1, description="the message writes get")


class WebhookEndpoint(Section):
    """One receiver of events; empty filters let everything through."""

    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,100}$", description="names its cursor")
    url: str = Field(pattern=r"^https?://", description="where events are POSTed")
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = Field(5.0, gt=0)
    actions: list[Literal["push", "pull", "mount", "delete"]] = Field(default_factory=list)
    repositories: list[str] = Field(default_factory=list, description="globs, as in auth rules")
    media_types: list[str] = Field(
        default_factory=list, description="target media types (deletes carry none: they pass)"
    )
    format: Literal["distribution", "cloudevents"] = "distribution"
    secret: SecretStr | None = Field(
        None, description="signs each delivery: X-Dockyard-Signature: sha256=<HMAC-SHA256>"
    )


class AuditConfig(Section):
    enabled: bool = False
    path: Path | None = Field(None, description="file the JSON lines are appended to; null: stdout")


class NotificationsConfig(Section):
    endpoints: list[WebhookEndpoint] = Field(default_factory=list)
    outbox_max_batches: int = Field(
        10000,
        ge=1,
        description="outbox segments (an object a record on S3, a file of up to 1 MiB on the "
        "filesystem); beyond it new events are dropped, with a log line",
    )
    outbox_sync: Literal["background", "before_answer"] = Field(
        "background",
        description="filesystem storage: an event is written to the outbox before its request "
        "answers and outlives a kill -9 of the server; it is on disk (fdatasync) within 0.1 s "
        "(background: a crash of the machine can lose that last 0.1 s) or before the request "
        "answers (before_answer: ~40% fewer manifest GETs a second, bench/RESULTS.md)",
    )
    max_backoff: Duration = Field(300.0, gt=0, description="longest wait between two tries")
    audit: AuditConfig = AuditConfig()

    @model_validator(mode="after")
    def _names_are_unique(self) -> NotificationsConfig:
        names = [endpoint.name for endpoint in self.endpoints]
        if len(set(names)) != len(names):
            raise ValueError("notifications.endpoints: every endpoint needs its own name")
        return self


class GcConfig(Section):
    """`gc`: the online garbage collector (one at a time across every process sharing storage)."""

    enabled: bool = Field(True, description="run the collector in the background")
    interval: Duration = Field(3600.0, gt=0, description="time between two runs")
    grace: Duration = Field(3600.0, description="nothing younger is ever deleted")
    background_share: float = Field(
        0.1,
        gt=0,
        le=1,
        description="of the time, what a server's background run may work (it rests the"
        " rest, between steps); `dockyard gc` always runs at full speed",
    )
    cache_dir: Path | None = Field(
        None,
        description="local folder of the file where runs keep what each manifest references,"
        " so later runs need not read it again; default $XDG_CACHE_HOME/dockyard or"
        " ~/.cache/dockyard",
    )
    cache_bytes: int = Field(
        64 * 1024 * 1024, ge=0, description="bound of that file in bytes; 0: no cache"
    )


class RetentionRule(Section):
    """What to keep in the repositories a rule names; a tag any keep condition matches stays."""

    repositories: list[str] = Field(min_length=1, description="globs, as in the access rules")
    keep_last: int | None = Field(None, ge=0, description="the N most recently pushed tags")
    keep_tags: list[TagPattern] = Field(
        default_factory=list, description="tag globs (or /regexes/) always kept"
    )
    keep_newer_than: Duration | None = None
    keep_pulled_within: Duration | None = None
    untagged_after: Duration | None = Field(
        None, description="delete manifests with no tag, index or subject after this; off if unset"
    )


class RetentionConfig(Section):
    policies: list[RetentionRule] = Field(default_factory=list)


class ImmutableTagRule(Section):
    """Tags that, once pushed, never move and are never deleted."""

    repositories: list[str] = Field(min_length=1, description="globs, as in the access rules")
    tags: list[TagPattern] = Field(min_length=1, description="tag globs (or /regexes/), e.g. v*")


class UpstreamConfig(Section):
    """One registry mirrored under a local namespace (README, "Pull-through cache")."""

    prefix: RepositoryName = Field(
        description="local namespace: <prefix>/<name> is the upstream's <name>"
    )
    url: str = Field(pattern=r"^https?://[^/]+/?$", description="the upstream's base URL")
    registry: str | None = Field(
        None, description="the name clients give it in ?ns= (containerd), e.g. docker.io"
    )
    default: bool = Field(
        False, description="names under no prefix that are not local repositories come here"
    )
    username: str | None = None
    password: SecretStr | None = None
    credentials_file: Path | None = Field(
        None, description="a docker config.json whose `auths` entry for the url's host is used"
    )
    tag_ttl: Duration = Field(600.0, description="how long a cached tag is served unchecked")
    timeout: Duration = Field(
        30.0, gt=0, description="seconds to connect and between bytes; then served stale"
    )
    repositories: list[str] = Field(
        default_factory=list, description="globs of upstream names that may be fetched; empty: all"
    )

    @model_validator(mode="after")
    def _one_kind_of_credentials(self) -> UpstreamConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password must be given together")
        if self.username is not None and self.credentials_file is not None:
            raise ValueError("give username/password or credentials_file, not both")
        return self


class ProxyConfig(Section):
    upstreams: list[UpstreamConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _prefixes_apart(self) -> ProxyConfig:
        prefixes = [upstream.prefix for upstream in self.upstreams]
        for prefix in prefixes:
            if sum(other == prefix or other.startswith(prefix + "/") for other in prefixes) > 1:
                raise ValueError(f"proxy.upstreams: prefix {prefix!r} overlaps another")
        if sum(upstream.default for upstream in self.upstreams) > 1:
            raise ValueError("proxy.upstreams: at most one upstream may be the default")
        return self


class UiConfig(Section):
    """`ui`: the web UI under /ui/ (README "Web UI")."""

    enabled: bool = True
    session_lifetime: Duration = Field(
        8 * 3600.0, gt=0, description="a sign-in lasts this long, then the user signs in again"
    )
    page_size: int = Field(50, ge=1, le=1000, description="repositories or tags per page")


class Config(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DOCKYARD_",
        env_nested_delimiter="__",
        extra="forbid",
        nested_model_default_partial_update=True,
    )

    http: HttpConfig = HttpConfig()
    storage: StorageConfig = StorageConfig()
    uploads: UploadsConfig = UploadsConfig()
    validation: ValidationConfig = ValidationConfig()
    auth: AuthConfig = AuthConfig()
    tls: TlsConfig = TlsConfig()
    log: LogConfig = LogConfig()
    gc: GcConfig = GcConfig()
    maintenance: MaintenanceConfig = MaintenanceConfig()
    notifications: NotificationsConfig = NotificationsConfig()
    retention: RetentionConfig = RetentionConfig()
    immutable_tags: list[ImmutableTagRule] = Field(default_factory=list)
    metrics: MetricsConfig = MetricsConfig()
    health: HealthConfig = HealthConfig()
    proxy: ProxyConfig = ProxyConfig()
    ui: UiConfig = UiConfig()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment variables override the file, which is passed as init arguments.
        return env_settings, init_settings


class ConfigError(Exception):
    """The configuration cannot be used; the message names the offending key."""


def _variable_for(loc: tuple[int | str, ...]) -> str | None:
    """The environment variable that set the value at `loc` (or a section holding it)."""
    variables = {name.upper(): name for name in os.environ}
    for end in range(len(loc), 0, -1):
        name = "DOCKYARD_" + "__".join(str(part) for part in loc[:end]).upper()
        if name in variables:
            return variables[name]
    return None


def _describe(error: ValidationError) -> str:
    lines = []
    for problem in error.errors():
        key = ".".join(str(part) for part in problem["loc"])
        if variable := _variable_for(problem["loc"]):
            key = f"{key} (set by {variable})"
        lines.append(f"  {key}: {problem['msg']}")
    return "invalid configuration:\n" + "\n".join(lines)


def _refuse_unknown_environment() -> None:
    known = {name.upper() for name in Config.model_fields} | {"CONFIG"}
    for variable in os.environ:
        if variable.startswith("DOCKYARD_"):
            section = variable.removeprefix("DOCKYARD_").split("__", 1)[0]
            if section not in known:
                raise ConfigError(f"unknown configuration variable {variable}")


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read the YAML file at `path` (or `$DOCKYARD_CONFIG`), then apply the environment."""
    path = path or os.environ.get(CONFIG_ENV)
    data: Any = {}
    if path:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as error:
            raise ConfigError(f"cannot read configuration file {path}: {error.strerror}") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"configuration file {path} is not valid YAML: {error}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"configuration file {path} must hold a mapping at the top")
    _refuse_unknown_environment()
    try:
        return Config(**data)
    except ValidationError as error:
        raise ConfigError(_describe(error)) from None
