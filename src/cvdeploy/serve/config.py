"""The server's configuration: a YAML file validated by pydantic, plus the cloud platform it runs on.

    server:      {host, port, platform, workers, log_level, log_format, default_model, docs}
    limits:      {max_body_bytes, max_json_bytes, max_image_pixels, allowed_content_types, max_instances,
                  header_timeout_s, body_timeout_s, keep_alive_s, max_connections, max_header_bytes,
                  max_headers}
    security:    {allow_anonymous_admin, allowed_hosts, rate_limit_principal, rate_limit_source}
                 (built into one Security by security.build_security; the rate limits apply with --db)
    repository:  {max_loaded_versions, load_roots}
    defaults:    {artifact, batching, max_batch_size, max_queue_delay_ms, queue_size, instances,
                  timeout_s, threads, spinning, device}
    models:      {NAME: {path, ...any key of defaults}}
    monitor:     {sample, retention, redact, window, refresh_s, alpha, min_effect, min_requests,
                  thumbnail_px}  (cvdeploy.monitor.settings)

Every key is checked: an unknown one is refused with a message naming it and the keys allowed
there. A model's settings are ``defaults`` overlaid with what ``models.NAME`` sets, overlaid with
command-line flags.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cvdeploy.errors import ConfigError
from cvdeploy.images import IMAGE_MEDIA_TYPES
from cvdeploy.monitor.settings import MonitorConfig

PLATFORMS = ("auto", "local", "sagemaker", "vertex")
DEFAULT_PORT = 8000
CLOUD_PORT = 8080


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Strict):
    """How one model is served: which artifact, and how requests are batched and bounded."""

    path: str | None = None  # bundle folder, when the bundle is named here rather than on the command line
    artifact: str | None = None  # None = the bundle's default artifact
    # auto: batch only where a measurement at load shows it pays on this CPU (see serve.autobatch)
    batching: Literal["auto", "on", "off"] = "auto"
    max_batch_size: int = Field(
        8, ge=0, le=4096
    )  # rows per request and per runtime call; 0 or 1 = no batching
    max_queue_delay_ms: float = Field(2.0, ge=0.0, le=60_000.0)  # how long a batch may wait to fill
    queue_size: int = Field(64, ge=1, le=1_000_000)  # requests waiting at most; more are answered 503
    instances: int = Field(1, ge=1, le=64)  # runtime sessions of this model running side by side
    timeout_s: float = Field(30.0, gt=0.0, le=3600.0)  # queue + inference, per request
    threads: int | None = Field(
        None, ge=1, le=256
    )  # intra-op threads per instance; None = CPUs this process may use
    # spin-waiting intra-op threads; None = off (a server's request threads need the cores between ops)
    spinning: bool | None = None
    device: str = "cpu"


class LimitsConfig(_Strict):
    """What a request and a connection may carry and take; anything beyond is answered 4xx (or the
    connection closed) before work is done. The connection limits are enforced by the HTTP server."""

    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024, le=1 << 34)
    max_image_pixels: int = Field(50_000_000, ge=1, le=1_000_000_000)
    # the formats predict reads (JPEG, PNG, BMP, WebP, TIFF); a subset narrows what the image API takes
    allowed_content_types: list[str] = Field(default_factory=lambda: list(IMAGE_MEDIA_TYPES))
    max_json_bytes: int = Field(16 * 1024 * 1024, ge=1024, le=1 << 31)  # a JSON document (not binary tensors)
    max_instances: int = Field(64, ge=1, le=4096)  # instances per cloud request (and never over the queue)
    header_timeout_s: float = Field(10.0, gt=0, le=600)  # a request's head must arrive within this
    body_timeout_s: float = Field(60.0, gt=0, le=3600)  # ... and its body within this
    keep_alive_s: float = Field(15.0, gt=0, le=3600)  # an idle keep-alive connection is closed after this
    max_connections: int = Field(512, ge=1, le=100_000)  # open connections; more are answered 503
    max_header_bytes: int = Field(32 * 1024, ge=1024, le=1 << 20)  # request line + headers, in bytes
    max_headers: int = Field(100, ge=8, le=10_000)  # header fields per request

    @field_validator("allowed_content_types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        unknown = [t for t in value if t not in IMAGE_MEDIA_TYPES]
        if unknown:
            raise ValueError(
                f"{unknown[0]!r} is not an image format cvdeploy reads; use some of {', '.join(IMAGE_MEDIA_TYPES)}"
            )
        return value


class SecurityConfig(_Strict):
    """Who may change model state, which ``Host`` names the server answers to, and (with ``--db``) how
    many requests a principal and a source address may make: ``"50/s,burst=100"``, ``"600/min"``;
    None: not limited."""

    # let anonymous callers load, unload and roll back (local experiments only)
    allow_anonymous_admin: bool = False
    # None: loopback names (+ the bind address); a wildcard bind or a cloud platform: any. ["*"]: any
    allowed_hosts: list[str] | None = None
    rate_limit_principal: str | None = "50/s,burst=100"
    rate_limit_source: str | None = "100/s,burst=200"

    @field_validator("rate_limit_principal", "rate_limit_source")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        if value is not None:
            from cvdeploy.security.ratelimit import Rate

            try:
                Rate.parse(value)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return value


class RepositoryConfig(_Strict):
    """The model repository: how many versions stay loaded, and where bundles may be loaded from."""

    max_loaded_versions: int = Field(2, ge=1, le=64)  # per model: the serving one plus rollback targets
    # run-time loads must name a bundle under one of these; None = the folders of the bundles given at start
    load_roots: list[str] | None = None


class ServerConfig(_Strict):
    host: str | None = None
    port: int | None = Field(None, ge=0, le=65535)
    platform: Literal["auto", "local", "sagemaker", "vertex"] = "auto"
    workers: int = Field(default_factory=lambda: max(2, min(8, os.cpu_count() or 2)), ge=1, le=256)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"
    default_model: str | None = None  # the model SageMaker /invocations and Vertex predict use
    docs: bool = False  # serve /docs and /openapi.json


class ServeConfig(_Strict):
    """The whole server configuration."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    repository: RepositoryConfig = Field(default_factory=RepositoryConfig)
    defaults: ModelConfig = Field(default_factory=ModelConfig)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)

    def model(self, name: str) -> ModelConfig:
        """``defaults`` overlaid with the keys ``models.NAME`` sets."""
        own = self.models.get(name)
        if own is None:
            return self.defaults.model_copy()
        return self.defaults.model_copy(update={k: getattr(own, k) for k in own.model_fields_set})

    def with_overrides(self, **fields: Any) -> ServeConfig:
        """A copy where every model takes ``fields`` (flags win over the file); None values are ignored."""
        upd = {k: v for k, v in fields.items() if v is not None}
        if not upd:
            return self
        try:
            ModelConfig.model_validate({**self.defaults.model_dump(), **upd})
        except ValidationError as exc:
            raise ConfigError(f"invalid option: {_describe(exc, 'defaults')}") from None
        out = self.model_copy(deep=True)
        out.defaults = out.defaults.model_copy(update=upd)
        for name, m in out.models.items():
            out.models[name] = m.model_copy(update=upd)
            out.models[name].model_fields_set.update(upd)
        return out


def load_config(path: str | Path | None) -> ServeConfig:
    """Read and validate a YAML config (None = all defaults); a problem raises one-line ``ConfigError``."""
    if path is None:
        return ServeConfig()
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a text file") from None
    return parse_config(raw or {}, source=str(p))


def parse_config(raw: Any, source: str = "config") -> ServeConfig:
    """Validate an already-parsed mapping."""
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"{source}: must be a mapping of sections (server, limits, security, repository, defaults, models, "
            "monitor)"
        )
    try:
        return ServeConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from None


def _describe(exc: ValidationError, prefix: str = "") -> str:
    """The first validation error as one line; unknown keys list the keys allowed there."""
    err = exc.errors()[0]
    loc = [str(x) for x in err["loc"]]
    where = ".".join([prefix, *loc] if prefix else loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1], ModelConfig if prefix else ServeConfig)
        hint = f"; allowed here: {', '.join(allowed)}" if allowed else ""
        return f"unknown key '{where}'{hint}"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{where}: {msg} (got {err.get('input')!r})"


def _allowed_keys(loc: list[str], root: type[BaseModel]) -> list[str]:
    node: Any = root
    for part in loc:
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = node.model_fields.get(part)
            if field is None:
                return []
            node = field.annotation
        elif typing.get_origin(node) is dict:
            node = typing.get_args(node)[1]
        else:
            return []
    if typing.get_origin(node) is dict:  # the key itself is a model name
        return []
    return sorted(node.model_fields) if isinstance(node, type) and issubclass(node, BaseModel) else []


# ---- the platform: local, SageMaker or Vertex AI -------------------------------------------------


@dataclass(frozen=True)
class Platform:
    """Where the server runs and what follows from it: bind address and the cloud routes."""

    kind: Literal["local", "sagemaker", "vertex"]
    host: str
    port: int
    predict_route: str | None = None  # Vertex AI: AIP_PREDICT_ROUTE
    health_route: str | None = None  # Vertex AI: AIP_HEALTH_ROUTE
    model_dir: str | None = None  # where the platform puts model files (SageMaker /opt/ml/model)


def detect_platform(env: Mapping[str, str]) -> Literal["local", "sagemaker", "vertex"]:
    """``sagemaker`` when ``SM_*``/``SAGEMAKER_*`` variables are set, ``vertex`` for ``AIP_*``, else local."""
    if any(k.startswith("AIP_") for k in env):
        return "vertex"
    if any(k.startswith(("SM_", "SAGEMAKER_")) for k in env):
        return "sagemaker"
    return "local"


def resolve_platform(
    flag: str | None, server: ServerConfig, host: str | None = None, port: int | None = None,
    env: Mapping[str, str] | None = None,
) -> Platform:  # fmt: skip
    """Command line beats config beats environment; cloud platforms listen on 0.0.0.0:8080 by default."""
    env = os.environ if env is None else env
    choice = flag or server.platform
    if choice not in PLATFORMS:
        raise ConfigError(f"unknown platform {choice!r}: use one of {', '.join(PLATFORMS)}")
    kind: Literal["local", "sagemaker", "vertex"] = (
        detect_platform(env) if choice == "auto" else choice  # type: ignore[assignment]
    )
    bind_host = host or server.host
    bind_port = port if port is not None else server.port
    if kind == "local":
        return Platform("local", bind_host or "127.0.0.1", DEFAULT_PORT if bind_port is None else bind_port)
    if kind == "sagemaker":
        env_port = _env_port(env, "SAGEMAKER_BIND_TO_PORT", CLOUD_PORT)
        return Platform(
            "sagemaker",
            bind_host or "0.0.0.0",
            env_port if bind_port is None else bind_port,
            model_dir=env.get("SM_MODEL_DIR", "/opt/ml/model"),
        )
    env_port = _env_port(env, "AIP_HTTP_PORT", CLOUD_PORT)
    predict = env.get("AIP_PREDICT_ROUTE") or "/predict"
    health = env.get("AIP_HEALTH_ROUTE") or "/health"
    for what, route in (("AIP_PREDICT_ROUTE", predict), ("AIP_HEALTH_ROUTE", health)):
        if not route.startswith("/"):
            raise ConfigError(f"{what}={route!r} must be a path starting with '/'")
    return Platform(
        "vertex", bind_host or "0.0.0.0", env_port if bind_port is None else bind_port, predict, health,
        model_dir=env.get("AIP_STORAGE_URI") if env.get("AIP_STORAGE_URI", "").startswith("/") else None,
    )  # fmt: skip


def _env_port(env: Mapping[str, str], key: str, default: int) -> int:
    value = env.get(key)
    if not value:
        return default
    try:
        port = int(value)
    except ValueError:
        raise ConfigError(f"{key}={value!r} is not a port number") from None
    if not 0 < port < 65536:
        raise ConfigError(f"{key}={port} is not a port number (1-65535)")
    return port
