"""Cancel from the CLI and the API against a real worker: the run stops at its next page
boundary, the row is canceled, partial files are removed, nothing is sent."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from invoice_export.exports.service import cancel_export, get_export, start_export
from invoice_export.settings import get_settings
from invoice_export.web.app import create_app
from tests.conftest import (
    PROJECT,
    audit_count,
    export_files,
    invoices,
    make_org,
    outbox_for,
    wait_for_engine,
    wait_for_status,
)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoice_export", *args],
        cwd=PROJECT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def wait_for_pages(org_id: str, user_id: str, run_id: str, pages: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while get_export(org_id, user_id, run_id).pages_done < pages:
        assert time.monotonic() < deadline, "run made no progress"
        time.sleep(0.02)


def page_steps(admin_conn, run_id: str) -> int:  # type: ignore[no-untyped-def]
    """write_page steps the engine recorded, including those that found the row canceled."""
    return int(
        admin_conn.execute(
            text(
                "SELECT count(*) FROM dbos.operation_outputs WHERE workflow_uuid = :r AND function_name = 'write_page'"
            ),
            {"r": run_id},
        ).scalar_one()
    )


def parts_counted(admin_conn, export_id: object) -> int:  # type: ignore[no-untyped-def]
    """Pages whose transaction counted them on the row (a page that found the row canceled is not)."""
    return int(
        admin_conn.execute(
            text("SELECT count(*) FROM export_parts WHERE export_id = :e"), {"e": str(export_id)}
        ).scalar_one()
    )


def test_cli_cancel_stops_a_running_export_at_the_next_page(  # type: ignore[no-untyped-def]
    worker, page_size, admin_conn, data_dir: Path
) -> None:
    org_id, user_id = make_org(invoices(600))
    page_size(1)
    run = start_export(org_id, user_id)
    wait_for_pages(org_id, user_id, run.run_id, 3)

    done = cli("runs", "cancel", run.run_id, "--json")
    assert done.returncode == 0, done.stderr
    canceled = json.loads(done.stdout)
    assert canceled["status"] == "canceled" and canceled["run_id"] == run.run_id

    assert wait_for_engine(run.run_id) == "SUCCESS"
    view = get_export(org_id, user_id, run.run_id)
    assert view.status == "canceled" and view.error == "canceled by an operator"
    # Pages already in flight when the cancel committed find it when they are counted: at most
    # EXPORT_PAGE_CONCURRENCY pages run after the cancel, and none of them is counted.
    assert parts_counted(admin_conn, view.export_id) == canceled["pages_done"] == view.pages_done
    concurrency = get_settings().export_page_concurrency
    assert canceled["pages_done"] <= page_steps(admin_conn, run.run_id) <= canceled["pages_done"] + concurrency < 600
    assert export_files(data_dir, view.export_id) == []
    assert outbox_for(data_dir, run.run_id) == []
    assert audit_count("export.canceled", view.export_id) == 1
    assert audit_count("export.completed", view.export_id) == 0
    assert audit_count("export.failed", view.export_id) == 0

    again = cli("runs", "cancel", run.run_id, "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["status"] == "canceled"
    assert audit_count("export.canceled", view.export_id) == 1

    page_size(500)
    retry = start_export(org_id, user_id)
    assert retry.run_id.endswith("-2") and retry.status == "queued"
    assert wait_for_status(org_id, user_id, retry.run_id).status == "completed"


def test_cli_cancel_refuses_finished_and_unknown_runs(worker) -> None:  # type: ignore[no-untyped-def]
    org_id, user_id = make_org(invoices(5))
    run = start_export(org_id, user_id)
    assert wait_for_status(org_id, user_id, run.run_id).status == "completed"
    finished = cli("runs", "cancel", run.run_id)
    assert finished.returncode == 2
    assert "already completed" in finished.stderr
    assert cli("runs", "cancel", "exp-0000000000000000-1").returncode == 2
    malformed = cli("runs", "cancel", "nope")
    assert malformed.returncode == 2 and "malformed run id" in malformed.stderr


def test_canceling_a_queued_run_means_it_never_writes(  # type: ignore[no-untyped-def]
    worker, page_size, admin_conn, data_dir: Path
) -> None:
    from tests.conftest import add_member

    org_id, first = make_org(invoices(80))
    second = add_member(org_id)
    page_size(1)
    ahead = start_export(org_id, first)
    behind = start_export(org_id, second)  # same org: waits in the org's lane
    wait_for_pages(org_id, first, ahead.run_id, 1)
    assert get_export(org_id, second, behind.run_id).status == "queued"

    assert cancel_export(org_id, behind.run_id, actor_id=second, via="test").status == "canceled"
    assert wait_for_status(org_id, first, ahead.run_id).status == "completed"
    assert wait_for_engine(behind.run_id) == "SUCCESS"
    assert page_steps(admin_conn, behind.run_id) == parts_counted(admin_conn, behind.export_id) == 0
    assert export_files(data_dir, behind.export_id) == []
    assert outbox_for(data_dir, behind.run_id) == []


@pytest.fixture
def client(database: str) -> TestClient:
    return TestClient(create_app())


def sign_in(client: TestClient, email: str, password: str) -> str:
    response = client.post("/signin", data={"email": email, "password": password}, follow_redirects=False)
    assert response.status_code == 303, response.text
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/inspector").text)
    assert match
    return match.group(1)


def test_api_cancel(client: TestClient, worker, page_size, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    org_id, user_id = make_org(invoices(200), password="cancel-password")
    csrf = sign_in(client, f"t{org_id.removeprefix('org_t')}@example.com", "cancel-password")
    page_size(1)
    run = client.post("/api/exports", headers={"X-CSRF-Token": csrf}).json()
    wait_for_pages(org_id, user_id, run["run_id"], 2)

    url = f"/api/exports/{run['run_id']}/cancel"
    assert client.post(url).status_code == 403
    assert client.post(url, headers={"X-CSRF-Token": "forged"}).status_code == 403
    response = client.post(url, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "canceled" and body["run_id"] == run["run_id"]
    assert set(body) == set(client.get(f"/api/exports/{run['run_id']}").json())
    assert client.post(url, headers={"X-CSRF-Token": csrf}).json()["status"] == "canceled"

    assert wait_for_engine(run["run_id"]) == "SUCCESS"
    assert export_files(data_dir, run["export_id"]) == []
    assert outbox_for(data_dir, run["run_id"]) == []
    assert client.get(f"/api/exports/{run['run_id']}").json()["status"] == "canceled"
    bad = client.post("/api/exports/not-a-run/cancel", headers={"X-CSRF-Token": csrf})
    assert bad.status_code == 422


def test_api_cancel_of_another_orgs_run_is_404_and_of_a_finished_run_409(  # type: ignore[no-untyped-def]
    client: TestClient, worker
) -> None:
    other_org, other_user = make_org(invoices(3))
    foreign = start_export(other_org, other_user)
    org_id, user_id = make_org(invoices(3), password="cancel-password")
    csrf = sign_in(client, f"t{org_id.removeprefix('org_t')}@example.com", "cancel-password")
    refused = client.post(f"/api/exports/{foreign.run_id}/cancel", headers={"X-CSRF-Token": csrf})
    assert refused.status_code == 404
    assert wait_for_status(other_org, other_user, foreign.run_id).status == "completed"

    own = client.post("/api/exports", headers={"X-CSRF-Token": csrf}).json()
    assert wait_for_status(org_id, user_id, own["run_id"]).status == "completed"
    late = client.post(f"/api/exports/{own['run_id']}/cancel", headers={"X-CSRF-Token": csrf})
    assert late.status_code == 409
    assert "already completed" in late.json()["detail"]
