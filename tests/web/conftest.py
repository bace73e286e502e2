"""Web test helpers: an in-process client, signing in, and finished exports made directly."""

from __future__ import annotations

import re
import secrets
import uuid
from datetime import UTC, date, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from invoice_export.web.app import create_app


@pytest.fixture
def client(database: str) -> TestClient:
    return TestClient(create_app())


def sign_in(client: TestClient, email: str, password: str = "demo-password") -> str:
    """Sign in through the form; returns the session's CSRF token as the pages show it."""
    response = client.post("/signin", data={"email": email, "password": password}, follow_redirects=False)
    assert response.status_code == 303, response.text
    page = client.get("/inspector")
    assert page.status_code == 200, page.text
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match
    return match.group(1)


def completed_export(org_id: str, user_id: str, day: date, body: bytes = b"invoice_number\r\n") -> dict[str, Any]:
    """A finished export row with its file, written as the database owner (no worker needed)."""
    from invoice_export.db.models import Export
    from invoice_export.db.session import admin_engine
    from invoice_export.exports.service import idempotency_key, run_id_for
    from invoice_export.exports.storage import get_storage
    from invoice_export.settings import get_settings

    export_id = uuid.uuid4()
    key = f"{export_id}/invoices-{org_id}-{day}.csv"
    path = get_settings().data_dir / "exports" / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    assert get_storage().local_path(key) == path.resolve()
    run_id = run_id_for(idempotency_key(org_id, user_id, day) + secrets.token_hex(2), 1)
    with Session(admin_engine()) as session, session.begin():
        session.add(
            Export(
                id=export_id,
                organization_id=org_id,
                requested_by=user_id,
                status="completed",
                run_id=run_id,
                attempt=1,
                idempotency_key=idempotency_key(org_id, user_id, day),
                day_bucket=day,
                pages_done=1,
                pages_total=1,
                row_count=0,
                file_key=key,
                completed_at=datetime.now(UTC),
            )
        )
    return {"export_id": str(export_id), "run_id": run_id, "org_id": org_id, "requested_by": user_id}
