"""The emailed download link: signed, bound to export and org, still needs a signed-in member who
may see the export, expires into a page that offers a new export, and every download is audited."""

from __future__ import annotations

import csv
import io
import re
import time
from datetime import date
from email import message_from_bytes, policy
from urllib.parse import urlparse

import pytest
from fastapi.testclient import TestClient
from itsdangerous import TimestampSigner
from sqlalchemy import text

from invoice_export.exports.tokens import issue_download_token
from invoice_export.settings import get_settings
from tests.web.conftest import completed_export, sign_in


def downloads_audited(admin_conn, export_id: str) -> int:  # type: ignore[no-untyped-def]
    return admin_conn.execute(
        text("SELECT count(*) FROM audit_logs WHERE action = 'export.downloaded' AND target_id = :id"),
        {"id": export_id},
    ).scalar_one()


def test_the_emailed_link_downloads_for_members_who_may_see_it(client: TestClient, worker, admin_conn) -> None:  # type: ignore[no-untyped-def]
    csrf = sign_in(client, "erin@example.com")
    run = client.post("/api/exports", headers={"X-CSRF-Token": csrf}).json()
    deadline = time.monotonic() + 60
    while run["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
        run = client.get(f"/api/exports/{run['run_id']}").json()
    assert run["status"] == "completed"

    eml = get_settings().data_dir / "outbox" / f"{run['run_id']}@invoice-export.eml"
    body = message_from_bytes(eml.read_bytes(), policy=policy.default).get_body(("plain",)).get_content()  # type: ignore[union-attr]
    link = re.search(r"https?://\S+", body)
    assert link, body
    path = urlparse(link.group(0)).path
    assert re.fullmatch(r"/downloads/[A-Za-z0-9_.-]{60,}", path)
    assert run["export_id"] not in path, "the link must not be a bare export id"
    assert run["download_url"] == link.group(0)

    download = client.get(path)
    assert download.status_code == 200
    assert download.headers["cache-control"] == "private, no-store"
    rows = list(csv.reader(io.StringIO(download.content.decode("utf-8-sig"), newline="")))
    assert len(rows) == 201
    assert downloads_audited(admin_conn, run["export_id"]) == 1

    client.cookies.clear()
    signed_out = client.get(path, follow_redirects=False)
    assert signed_out.status_code == 303
    assert signed_out.headers["location"] == f"/signin?next={path}"

    sign_in(client, "dave@example.com")  # owner of the same org: may see every export of it
    assert client.get(path).status_code == 200
    assert downloads_audited(admin_conn, run["export_id"]) == 2

    for outsider in ("alice@example.com", "bob@example.com"):
        client.cookies.clear()
        sign_in(client, outsider)
        response = client.get(path)
        assert response.status_code == 404
        assert "Not found" in response.text
    assert downloads_audited(admin_conn, run["export_id"]) == 2


def test_a_tampered_or_foreign_link_is_404(client: TestClient, admin_conn) -> None:  # type: ignore[no-untyped-def]
    acme = completed_export("org_acme", "user_alice", date(2025, 3, 1))
    globex = completed_export("org_globex", "user_carol", date(2025, 3, 1))
    sign_in(client, "alice@example.com")
    token = issue_download_token(acme["export_id"], "org_acme")
    assert client.get(f"/downloads/{token}").status_code == 200
    unknown = client.get(f"/downloads/{token[:-4]}AAAA")
    assert unknown.status_code == 404
    # Signed correctly but naming another org's export, or this org with that export: still 404.
    foreign = client.get(f"/downloads/{issue_download_token(globex['export_id'], 'org_globex')}")
    assert foreign.status_code == 404 and foreign.text == unknown.text
    mixed = client.get(f"/downloads/{issue_download_token(globex['export_id'], 'org_acme')}")
    assert mixed.status_code == 404 and mixed.text == unknown.text
    assert client.get("/downloads/not-a-token").status_code == 404
    assert downloads_audited(admin_conn, globex["export_id"]) == 0
    assert downloads_audited(admin_conn, acme["export_id"]) == 1


def test_an_expired_link_offers_a_new_export(
    client: TestClient,
    admin_conn,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    export = completed_export("org_globex", "user_bob", date(2025, 3, 2))
    ttl = get_settings().download_link_ttl_days
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: int(time.time()) - (ttl + 1) * 86400)
    token = issue_download_token(export["export_id"], "org_globex")
    monkeypatch.undo()

    csrf = sign_in(client, "bob@example.com")  # active org is Acme; the link is for Globex
    page = client.get(f"/downloads/{token}")
    assert page.status_code == 410
    assert "This download link has expired" in page.text and "Globex" in page.text
    assert 'name="org_id" value="org_globex"' in page.text
    assert downloads_audited(admin_conn, export["export_id"]) == 0

    started = client.post("/exports", data={"csrf_token": csrf, "org_id": "org_globex"}, follow_redirects=False)
    assert started.status_code == 303
    run_id = started.headers["location"].split("run=")[1]
    assert client.get(f"/api/exports/{run_id}").json()["org_id"] == "org_globex"
    assert "Globex (member)" in client.get("/inspector").text.split("selected>")[1][:40]

    client.cookies.clear()
    sign_in(client, "alice@example.com")  # not a member of Globex: the expired link is just unknown
    assert client.get(f"/downloads/{token}").status_code == 404
