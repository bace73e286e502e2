"""The web app in-process (FastAPI TestClient) against the real database and a real worker."""

from __future__ import annotations

import csv
import io
import time

from fastapi.testclient import TestClient

from tests.web.conftest import sign_in


def test_sign_in_rejects_a_wrong_password(client: TestClient) -> None:
    response = client.post("/signin", data={"email": "alice@example.com", "password": "nope"})
    assert response.status_code == 401
    assert "do not match" in response.text
    assert client.get("/inspector", follow_redirects=False).status_code == 303


def test_inspector_export_progress_and_download(client: TestClient, worker) -> None:  # type: ignore[no-untyped-def]
    csrf = sign_in(client, "dave@example.com")
    page = client.get("/inspector")
    assert "Export invoices" in page.text and 'role="progressbar"' in page.text

    started = time.perf_counter()
    response = client.post("/api/exports", headers={"X-CSRF-Token": csrf, "Accept": "application/json"})
    assert response.status_code == 202, response.text
    run = response.json()
    assert time.perf_counter() - started < 2
    assert run["org_id"] == "org_initech" and run["status"] in ("queued", "running", "completed")

    deadline = time.monotonic() + 60
    while run["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
        run = client.get(f"/api/exports/{run['run_id']}").json()
    assert run["status"] == "completed" and run["row_count"] == 200
    assert run["attempts"] == 1 and run["pages_done"] == run["pages_total"]

    download = client.get(f"/exports/{run['export_id']}/download")
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(download.content.decode("utf-8-sig"), newline="")))
    assert len(rows) == 201
    assert "Download" in client.get("/inspector").text


def test_other_orgs_runs_and_files_answer_404(client: TestClient, worker) -> None:  # type: ignore[no-untyped-def]
    csrf = sign_in(client, "carol@example.com")
    run = client.post("/api/exports", headers={"X-CSRF-Token": csrf}).json()
    client.cookies.clear()
    sign_in(client, "dave@example.com")
    assert client.get(f"/api/exports/{run['run_id']}").status_code == 404
    assert client.get(f"/api/exports/{run['run_id'][:-1]}9").status_code == 404
    assert client.get(f"/exports/{run['export_id']}/download").status_code == 404
    assert client.get("/api/exports/not-a-run-id").status_code == 422


def test_state_changes_need_the_csrf_token(client: TestClient) -> None:
    sign_in(client, "erin@example.com")
    assert client.post("/api/exports").status_code == 403
    assert client.post("/exports", data={"csrf_token": "forged"}).status_code == 403


def test_signed_out_api_is_401_problem_json(client: TestClient) -> None:
    response = client.get("/api/exports/exp-0123456789abcdef-1")
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
