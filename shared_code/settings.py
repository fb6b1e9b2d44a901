"""One validated settings object, read from ARCHIVER_* environment variables or Function app settings."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from .errors import ConfigError

ENV_PREFIX = "ARCHIVER_"
_QUEUE = r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$"  # valid for both Storage queues and Service Bus
# schema.table as PostgreSQL spells them, unquoted: anything but dots and control characters (spaces, quotes, unicode
# allowed); they are only ever matched against the catalog as values, never spliced into SQL.
_IDENT = re.compile(r"^[^.\x00-\x1f]+\.[^.\x00-\x1f]+$|^[^.\x00-\x1f]+$")


def _split_list(value: Any) -> Any:
    """Accept a JSON list or a comma-separated string."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


def _parse_dict(value: Any) -> Any:
    """Accept a JSON object or `name=value,name=value`."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return {}
        if text.startswith("{"):
            return json.loads(text)
        pairs = {}
        for item in text.split(","):
            name, sep, number = item.partition("=")
            if not sep:
                raise ValueError(f"expected name=value, got {item.strip()!r}")
            pairs[name.strip()] = number.strip()
        return pairs
    return value


def _cores() -> int:
    """Default parallelism: the machine's cores, at most 4."""
    return max(1, min(os.cpu_count() or 1, 4))


class Settings(BaseModel):
    """Archiver settings; see the README table for every name and default. `load_settings` reads them."""

    model_config = ConfigDict(extra="ignore")

    database_url: SecretStr = Field(description="PostgreSQL/TimescaleDB connection URL (libpq form).")
    database_auth: Literal["password", "entra"] = "password"
    lake_url: str = Field(default_factory=lambda: (Path.cwd() / "lake").as_uri())
    lake_connection_string: SecretStr | None = None
    lake_client_id: str | None = None
    vault_url: str | None = None
    vault_connection_string: SecretStr | None = None
    retention_days: int = Field(default=730, ge=1)
    retention_overrides: dict[str, int] = Field(default_factory=dict)
    integer_retention: dict[str, int] = Field(default_factory=dict)
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    partitioned_tables: list[str] = Field(default_factory=list)
    dry_run: bool = False
    ledger_schema: str = Field(default="archiver", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    batch_size_bytes: int = Field(default=4 * 1024 * 1024, ge=64 * 1024)
    row_group_rows: int = Field(default=250_000, ge=1_000)
    max_file_bytes: int = Field(default=1024 * 1024 * 1024, ge=1024 * 1024)
    zstd_level: int = Field(default=3, ge=1, le=22)
    parquet_encodings: Literal["standard", "compact"] = "standard"
    parallel_chunks: int = Field(default_factory=lambda: _cores(), ge=1, le=64)
    extract_streams: int = Field(default_factory=lambda: _cores(), ge=1, le=16)
    max_attempts: int = Field(default=5, ge=1)
    retry_backoff_seconds: int = Field(default=30, ge=1)
    lock_timeout_ms: int = Field(default=5_000, ge=1)
    drop_lock_timeout_ms: int = Field(default=500, ge=1)
    drop_retries: int = Field(default=5, ge=0)
    drop_recheck: Literal["checksum", "footer"] = "checksum"
    unsupported_as_text: bool = False
    delta_checkpoint_interval: int = Field(default=10, ge=1, le=1000)
    lake_table_names: dict[str, str] = Field(default_factory=dict)
    # Function app
    transport: Literal["servicebus", "storagequeue"] = "servicebus"
    requests_queue: str = Field(default="archive-requests", pattern=_QUEUE)
    confirmations_queue: str = Field(default="archive-confirmations", pattern=_QUEUE)
    poison_queue: str = Field(default="archive-poison", pattern=_QUEUE)
    schedule: str = Field(default="0 0 2 * * *", pattern=r"^\S+( \S+){5}$")
    drill_schedule: str | None = Field(default=None, pattern=r"^\S+( \S+){5}$")
    drill_sample: int = Field(default=10, ge=1, le=100_000)
    requeue_after_minutes: int = Field(default=90, ge=1)  # longer than host.json functionTimeout
    redelivery_limit: int = Field(default=10, ge=0, le=100)
    redelivery_backoff_seconds: int = Field(default=15, ge=1, le=3600)

    @field_validator("drill_schedule", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value  # an empty app setting means "off"

    @field_validator("include", "exclude", "partitioned_tables", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("retention_overrides", "integer_retention", "lake_table_names", mode="before")
    @classmethod
    def _dicts(cls, value: Any) -> Any:
        return _parse_dict(value)

    @field_validator("retention_overrides")
    @classmethod
    def _positive_days(cls, value: dict[str, int]) -> dict[str, int]:
        bad = [name for name, days in value.items() if days < 1]
        if bad:
            raise ValueError(f"retention days must be >= 1 for {', '.join(bad)}")
        return value

    @field_validator("partitioned_tables")
    @classmethod
    def _qualified(cls, value: list[str]) -> list[str]:
        bad = [name for name in value if not _IDENT.match(name)]
        if bad:
            raise ValueError(f"expected schema.table names, got {', '.join(map(repr, bad))}")
        return value

    @field_validator("database_url")
    @classmethod
    def _db_url(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value().strip()
        if not raw:
            raise ValueError("must not be empty")
        if "://" in raw and urlsplit(raw).scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql:// URL or a libpq 'key=value' string")
        return value

    @field_validator("vault_url", mode="before")
    @classmethod
    def _vault_off_when_empty(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("lake_url", "vault_url")
    @classmethod
    def _lake_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme == "file":
            if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
                raise ValueError("file URLs must be absolute, e.g. file:///var/lib/archive")
        elif parts.scheme in ("abfss", "abfs"):
            if "@" not in parts.netloc or not parts.netloc.split("@", 1)[0]:
                raise ValueError(
                    "expected abfss://<filesystem>@<account>.dfs.core.windows.net/<prefix>"
                )
        else:
            raise ValueError("must start with file:// or abfss://")
        return value

    @field_validator("lake_table_names")
    @classmethod
    def _lake_table_names(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [f"{k}={v}" for k, v in value.items() if k.count(".") < 1 or v.count(".") < 1 or not all(
            part.strip() for part in (*k.split(".", 1), *v.split(".", 1)))]
        if bad:
            raise ValueError(f"expected source schema.table=lake schema.table pairs; not {', '.join(bad)}")
        return value

    @model_validator(mode="after")
    def _vault_apart_from_lake(self) -> Settings:
        if self.vault_url and self.vault_url.rstrip("/") == self.lake_url.rstrip("/"):
            raise ValueError("ARCHIVER_VAULT_URL must name another container (or folder) than ARCHIVER_LAKE_URL: "
                             "the live Delta table needs renames and deletes that an immutability policy forbids")
        return self

    @model_validator(mode="after")
    def _integer_retention_positive(self) -> Settings:
        bad = [name for name, span in self.integer_retention.items() if span < 1]
        if bad:
            raise ValueError(f"ARCHIVER_INTEGER_RETENTION values must be >= 1 for {', '.join(bad)}")
        return self

    def database_dsn(self) -> str:
        """The connection string to use now, with TCP keepalives; with Entra ID auth it carries a fresh token."""
        from .database.auth import with_entra_token, with_tcp_keepalives

        dsn = with_tcp_keepalives(self.database_url.get_secret_value())
        return with_entra_token(dsn) if self.database_auth == "entra" else dsn


def _format_errors(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        loc = [str(part) for part in item.get("loc", ()) if not isinstance(part, int)]
        name = ENV_PREFIX + loc[0].upper() if loc else "settings"
        message = item.get("msg", "invalid").removeprefix("Value error, ")
        if item.get("type") == "missing":
            message = "is required but not set"
        given = item.get("input")
        shown = "" if item.get("type") == "missing" or name.endswith(("URL", "STRING")) else f" (got {given!r})"
        if isinstance(given, (dict, list)):
            shown = ""
        lines.append(f"  - {name}: {message}{shown}")
    return "Invalid configuration:\n" + "\n".join(lines)


def environment_settings(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The ARCHIVER_* variables that name a setting, by field name (the prefix and the name in any case).

    Read here rather than by pydantic-settings, whose import alone cost 0.14 s of every process's start-up."""
    fields = Settings.model_fields
    found = {}
    for key, value in (os.environ if environ is None else environ).items():
        if key.upper().startswith(ENV_PREFIX) and (name := key[len(ENV_PREFIX):].lower()) in fields:
            found[name] = value
    return found


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment, `overrides` winning; raise ConfigError listing every problem at once."""
    try:
        return Settings(**{**environment_settings(), **overrides})
    except ValidationError as error:
        raise ConfigError(_format_errors(error)) from None
    except json.JSONDecodeError as error:  # malformed JSON in a list/dict setting
        raise ConfigError(f"Invalid configuration:\n  - a JSON setting is malformed: {error}") from None
