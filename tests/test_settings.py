from __future__ import annotations

from pathlib import Path

import pytest

from invoice_export.settings import Settings, SettingsError, load_settings

PROJECT = Path(__file__).resolve().parents[1]


def _env_example() -> dict[str, str]:
    values = {}
    for line in (PROJECT / ".env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value
    return values


def test_env_example_documents_every_setting_and_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    documented = {name.lower() for name in _env_example()}
    commented = {
        line.lstrip("# ").partition("=")[0].lower()
        for line in (PROJECT / ".env.example").read_text().splitlines()
        if line.startswith("# ") and "=" in line and line[2:3].isupper()
    }
    assert set(Settings.model_fields) <= documented | commented
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    for name, value in _env_example().items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.export_page_size >= 1


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("EXPORT_PAGE_SIZE", "0", "EXPORT_PAGE_SIZE"),
        ("EXPORT_PAGE_SIZE", "lots", "EXPORT_PAGE_SIZE"),
        ("DATABASE_URL", "mysql://x@y/z", "DATABASE_URL"),
        ("EMAIL_BACKEND", "pigeon", "EMAIL_BACKEND"),
        ("WORKER_ID", "has space", "WORKER_ID"),
    ],
)
def test_a_wrong_value_names_the_setting(monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=expected):
        load_settings()


def test_production_refuses_placeholder_secrets_without_echoing_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("DATABASE_URL", "postgresql://admin:s3cret-pw@db/x")
    with pytest.raises(SettingsError, match="SECRET_KEY") as raised:
        load_settings()
    assert "s3cret-pw" not in str(raised.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SECRET_KEY", "please-change-me-before-going-live-0123456789"),
        ("APP_DB_PASSWORD", "invoice-app-dev-password"),
        ("SMTP_PASSWORD", "changeme"),
        ("PUBLIC_BASE_URL", "http://invoices.example.net"),
    ],
)
def test_production_refuses_each_placeholder(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    real = {
        "APP_ENV": "production",
        "SECRET_KEY": "f3a9c1d07be24a6c9e8d5b2a1c0f7e6d",
        "APP_DB_PASSWORD": "Zq8-real-db-password",
        "PUBLIC_BASE_URL": "https://invoices.example.net",
    }
    for key, setting in (real | {name: value}).items():
        monkeypatch.setenv(key, setting)
    with pytest.raises(SettingsError, match=name) as raised:
        load_settings()
    assert value not in str(raised.value) or name == "PUBLIC_BASE_URL"
    monkeypatch.setenv(name, real.get(name, "Zq8-real-smtp-password"))
    assert load_settings().secure_cookies
