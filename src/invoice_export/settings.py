"""One validated settings object, read from the environment (and `.env` when present).

Every setting is documented in `.env.example`. A wrong value stops start-up with a message that
names the setting and says what is expected (see `load_settings`).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRET = "dev-only-change-me-0123456789abcdef"


def _looks_like_placeholder(secret: str) -> bool:
    lowered = secret.lower()
    return any(word in lowered for word in ("change-me", "changeme", "dev-only", "placeholder", "example"))


class SettingsError(Exception):
    """Raised when the environment does not describe a runnable configuration."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    app_env: Literal["development", "test", "production"] = Field(
        "development", description="development | test | production"
    )
    database_url: str | None = Field(
        None,
        description="admin/owner URL of the PostgreSQL database; unset = embedded PostgreSQL in the data dir",
    )
    app_database_url: str | None = Field(
        None, description="URL the app and worker use (role invoice_app); derived from DATABASE_URL when unset"
    )
    app_db_password: str = Field("invoice-app-dev-password", description="password of role invoice_app")
    invoice_export_data_dir: Path = Field(Path(".data"), description="where files, outbox and embedded db live")
    secret_key: str = Field(PLACEHOLDER_SECRET, min_length=32, description="signs sessions and download links")
    export_page_size: int = Field(5000, ge=1, le=1_000_000, description="invoices per checkpointed page")
    export_page_concurrency: int = Field(
        4, ge=1, le=8, description="pages of one export written at the same time (each is its own checkpoint)"
    )
    queue_poll_seconds: float = Field(0.2, gt=0, le=60, description="how often a worker looks for queued runs")
    worker_id: str | None = Field(None, description="unique, stable engine executor id of this worker process")
    public_base_url: str = Field("http://127.0.0.1:8000", description="base of links in emails")
    email_backend: Literal["file", "smtp"] = "file"
    email_from: str = "exports@invoice-export.local"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    smtp_timeout_seconds: float = Field(10.0, gt=0)
    download_link_ttl_days: int = Field(7, ge=1, le=365)
    session_ttl_hours: int = Field(12, ge=1, le=24 * 90)
    signin_free_failures_per_account: int = Field(
        5, ge=1, le=1000, description="failed sign-ins of one account before each next try must wait"
    )
    signin_free_failures_per_client: int = Field(
        20, ge=1, le=100_000, description="failed sign-ins from one client address before each next try must wait"
    )
    max_body_bytes: int = Field(64 * 1024, ge=1024, le=100 * 1024 * 1024, description="largest request body accepted")

    @field_validator("database_url", "app_database_url")
    @classmethod
    def _postgres_only(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not re.match(r"^postgres(ql)?(\+psycopg)?://", value):
            raise ValueError("expected a PostgreSQL URL such as postgresql://user@host:5432/dbname")
        return value

    @field_validator("worker_id")
    @classmethod
    def _worker_id_shape(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}", value):
            raise ValueError("expected 1-63 characters of letters, digits, '_', '.', ':' or '-'")
        return value

    @model_validator(mode="after")
    def _production_needs_real_secrets(self) -> Settings:
        """Production refuses the documented placeholders (and anything that still says it is one),
        and needs an https base URL, because its cookies are Secure and its links go into emails."""
        if self.app_env == "production":
            if self.secret_key == PLACEHOLDER_SECRET or _looks_like_placeholder(self.secret_key):
                raise ValueError("SECRET_KEY must be set to a real secret in production")
            if self.app_db_password == "invoice-app-dev-password" or _looks_like_placeholder(self.app_db_password):
                raise ValueError("APP_DB_PASSWORD must be set to a real password in production")
            if self.smtp_password is not None and _looks_like_placeholder(self.smtp_password):
                raise ValueError("SMTP_PASSWORD must be set to a real password in production")
            if not self.public_base_url.startswith("https://"):
                raise ValueError("PUBLIC_BASE_URL must be an https:// URL in production")
        return self

    @property
    def secure_cookies(self) -> bool:
        """Cookies are marked Secure (HTTPS only) everywhere but local development and tests,
        which run on plain http://127.0.0.1."""
        return self.app_env == "production"

    @property
    def data_dir(self) -> Path:
        return self.invoice_export_data_dir.expanduser().resolve()

    @property
    def embedded(self) -> bool:
        return self.database_url is None


_SECRET_NAMES = {"SECRET_KEY", "APP_DB_PASSWORD", "SMTP_PASSWORD", "DATABASE_URL", "APP_DATABASE_URL"}


def load_settings() -> Settings:
    """Read and validate the settings; raise SettingsError naming each bad setting."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]).upper() or "settings"
            secret = name in _SECRET_NAMES or not error["loc"]
            shown = "" if secret else f" (got {error.get('input')!r})"
            problems.append(f"{name}: {error['msg']}{shown}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems)) from None


@functools.cache
def get_settings() -> Settings:
    return load_settings()
