"""The service's one typed configuration object (environment prefix ``SHARPWATCH_``)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.errors import ConfigurationError

DEFAULT_DATABASE_URL = "sqlite:///./sharpwatch.db"
LogLevel = Literal["debug", "info", "warning", "error"]
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


class Settings(BaseSettings):
    """Every setting, its environment variable (``SHARPWATCH_<NAME>``) and its default.

    The README's configuration table is generated from these field descriptions
    (``sharpwatch config --markdown``) and a test keeps the two in step.
    """

    model_config = SettingsConfigDict(env_prefix="SHARPWATCH_", extra="ignore", frozen=True)

    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        description="SQLAlchemy URL of the store: a SQLite file (embedded default) or "
        "`postgresql+psycopg://user@host/db`.",
    )
    redis_url: str | None = Field(
        None,
        description="Redis URL for the command broker shared by several workers; unset means the "
        "in-process broker (one worker only).",
    )
    host: str = Field("127.0.0.1", description="Address `sharpwatch serve` binds to.")
    port: int = Field(8000, ge=1, le=65535, description="Port `sharpwatch serve` listens on.")
    workers: int = Field(1, ge=1, le=64, description="Uvicorn worker processes.")
    log_level: LogLevel = Field("warning", description="Log level of the JSON logs on stderr.")
    env: Literal["dev", "prod"] = Field(
        "dev", description="`dev` allows the embedded defaults; `prod` refuses unsafe settings."
    )
    migrate_on_start: bool = Field(
        True, description="Apply database migrations before `sharpwatch serve` starts uvicorn."
    )
    max_body_bytes: int = Field(
        32 * 1024 * 1024,
        ge=1024,
        description="Largest accepted request body in bytes; larger bodies get 413.",
    )
    command_poll_max_wait: float = Field(
        30.0, gt=0, le=300, description="Longest `wait=` a command long-poll may ask for, seconds."
    )
    metrics_finished_run_grace: float = Field(
        900.0,
        ge=0,
        le=7 * 24 * 3600,
        description="Seconds a finished run stays in `/metrics` after its `finished_at`, so "
        "Prometheus records its final state; then its series leave the exposition.",
    )

    public_url: str = Field(
        "http://127.0.0.1:8000",
        description="The address people reach the service at; notifications link to "
        "`<public_url>/#/runs/<id>`, the run's live page.",
    )
    notify_worker: bool = Field(
        True, description="Run the notification delivery worker in this process."
    )
    notify_poll_interval: float = Field(
        1.0, gt=0, le=60, description="Seconds between the worker's looks at the outbox."
    )
    notify_timeout: float = Field(
        5.0, gt=0, le=60, description="Seconds one notification request may take."
    )
    notify_max_attempts: int = Field(
        8, ge=1, le=100, description="Tries before a notification is dead-lettered."
    )
    notify_backoff_base: float = Field(
        2.0,
        gt=0,
        le=3600,
        description="Seconds before the first retry; each further retry waits twice as long.",
    )
    notify_keep_sent_days: float = Field(
        30.0,
        gt=0,
        le=3650,
        description="Days a sent notification stays in the outbox (and "
        "`/api/v1/notifications/deliveries`); dead ones stay until retried or their channel "
        "is deleted.",
    )
    notify_backoff_max: float = Field(
        600.0, gt=0, le=86400, description="Longest wait between two tries, seconds."
    )

    trusted_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        LOOPBACK_HOSTS,
        description="Host names (and addresses) the service answers to, comma-separated; a "
        "request with another `Host` header gets 400 (a DNS-rebinding page cannot reach the "
        "API). `*.example.org` allows subdomains, `*` allows any host. Deployments add the "
        "names clients use, e.g. `sharpwatch.example.org,sharpwatch`.",
    )
    header_limit_bytes: int = Field(
        64 * 1024,
        ge=4096,
        le=16 * 1024 * 1024,
        description="Largest request head (request line and headers) `sharpwatch serve` "
        "accepts, bytes; a larger one closes the connection.",
    )
    client_timeout: float = Field(
        10.0,
        gt=0,
        le=600,
        description="Seconds `sharpwatch serve` gives a client to complete its request head, "
        "and the longest pause allowed inside a request body (which must also average 1 KiB/s "
        "after this long); a slower client is disconnected.",
    )

    auth: bool = Field(
        False,
        description="Require bearer tokens (`sharpwatch tokens create`). May be off only in the "
        "embedded development default: the service refuses to start without it on a "
        "non-loopback address or with `SHARPWATCH_ENV=prod`.",
    )

    @field_validator("trusted_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part for part in (p.strip() for p in value.split(",")) if part]
        if isinstance(value, (list, tuple)):
            if not value:
                raise ValueError("name at least one host (or `*` to allow any)")
            return tuple(str(part).strip().lower().rstrip(".") for part in value)
        return value

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                "must be the http(s) address people open the service at, e.g. "
                "https://sharpwatch.example.org"
            )
        return value.rstrip("/")

    @model_validator(mode="after")
    def _check_safe(self) -> Settings:
        if self.workers > 1 and not self.redis_url:
            raise ConfigurationError(
                f"SHARPWATCH_WORKERS={self.workers} needs SHARPWATCH_REDIS_URL: the in-process "
                "command broker cannot wake long-polls held by other worker processes. Set "
                "SHARPWATCH_REDIS_URL=redis://host:6379/0 or use one worker."
            )
        if not self.auth and not self.binds_loopback:
            raise ConfigurationError(
                f"SHARPWATCH_HOST={self.host} is not a loopback address and authentication is "
                "off: set SHARPWATCH_AUTH=true and create tokens with `sharpwatch tokens "
                "create`, or bind to 127.0.0.1."
            )
        if self.env == "prod" and not self.auth:
            raise ConfigurationError(
                "SHARPWATCH_ENV=prod requires SHARPWATCH_AUTH=true (create tokens with "
                "`sharpwatch tokens create --kind operator`)."
            )
        if self.env == "prod" and self.is_sqlite:
            raise ConfigurationError(
                "SHARPWATCH_ENV=prod with a SQLite database: set SHARPWATCH_DATABASE_URL to a "
                "PostgreSQL URL (postgresql+psycopg://...) for production."
            )
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def sqlite_path(self) -> Path | None:
        if not self.is_sqlite:
            return None
        _, _, rest = self.database_url.partition(":///")
        return None if rest in ("", ":memory:") else Path(rest)

    @property
    def allowed_hosts(self) -> tuple[str, ...]:
        """``trusted_hosts`` plus the address the service binds to, when that is one address."""
        bound = self.host.strip().lower().strip("[]")
        if bound in ("0.0.0.0", "::", "") or bound in self.trusted_hosts:
            return self.trusted_hosts
        return (*self.trusted_hosts, bound)

    @property
    def binds_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False
