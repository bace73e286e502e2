"""Secrets never reach the logs: not the worker's start-up and work, not the web app's handling
of sign-ins, failures, exports and download links."""

from __future__ import annotations

import logging
import time

import pytest
from fastapi.testclient import TestClient

from invoice_export.settings import get_settings
from invoice_export.web.app import create_app
from tests.web.conftest import sign_in

SECRET_KEY = "log-probe-secret-key-7d1e0b9c4a2f8e6d"
SMTP_PASSWORD = "log-probe-smtp-password-51c9"


def test_the_worker_logs_no_secret(start_worker, database: str) -> None:  # type: ignore[no-untyped-def]
    worker = start_worker(SECRET_KEY=SECRET_KEY, SMTP_PASSWORD=SMTP_PASSWORD)
    time.sleep(1)
    log = worker.log.read_text(errors="replace")
    assert f"worker {worker.worker_id} ready" in log
    for secret in (SECRET_KEY, SMTP_PASSWORD, get_settings().app_db_password):
        assert secret not in log


def test_the_web_app_logs_no_secret(
    database: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECRET_KEY", SECRET_KEY)
    get_settings.cache_clear()
    try:
        caplog.set_level(logging.DEBUG)
        client = TestClient(create_app())
        client.post("/signin", data={"email": "alice@example.com", "password": "wrong-password-probe"})
        csrf = sign_in(client, "alice@example.com")
        run = client.post("/api/exports", headers={"X-CSRF-Token": csrf}).json()
        client.get(f"/api/exports/{run['run_id']}")
        session_token = client.cookies["ie_session"]
        text = "\n".join(record.getMessage() for record in caplog.records)
        for secret in (SECRET_KEY, "wrong-password-probe", "demo-password", session_token, csrf):
            assert secret not in text
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
