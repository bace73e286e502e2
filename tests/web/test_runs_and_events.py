"""The event stream and the run pages in-process (FastAPI TestClient), against the real
database and a real worker."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from invoice_export.exports.runs import run_detail
from invoice_export.exports.service import start_export
from invoice_export.web.app import create_app
from tests.conftest import make_org, wait_for_status
from tests.web.conftest import sign_in

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def invoices(count: int) -> list[dict[str, object]]:
    return [{"issued_at": T0 + timedelta(hours=n), "amount_minor": n} for n in range(count)]


def events(client: TestClient, run_id: str) -> list[dict[str, object]]:
    """Every `export` event of the run's stream, read until the server ends it."""
    found: list[dict[str, object]] = []
    with client.stream("GET", f"/api/exports/{run_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event == "export":
                found.append(json.loads(line.split(":", 1)[1]))
    return found


def test_the_event_stream_follows_a_run_to_its_end(database: str, worker, page_size) -> None:  # type: ignore[no-untyped-def]
    page_size(3)
    org_id, user_id = make_org(invoices(30), password="demo-password")
    client = TestClient(create_app())
    csrf = sign_in(client, f"{user_id.removeprefix('user_')}@example.com")
    run = client.post("/api/exports", headers={"X-CSRF-Token": csrf}).json()
    assert run["org_id"] == org_id
    seen = events(client, run["run_id"])
    assert seen and seen[-1]["status"] == "completed" and seen[-1]["row_count"] == 30
    assert seen[-1]["rows_written"] == 30 and seen[-1]["pages_done"] == seen[-1]["pages_total"] == 10
    done = [e["pages_done"] for e in seen]
    assert done == sorted(done)
    assert len({json.dumps(e, sort_keys=True) for e in seen}) == len(seen), "an event only when something changed"

    again = events(client, run["run_id"])
    assert again == [seen[-1]], "a finished run's stream sends its final state once and ends"


def test_the_event_stream_of_another_orgs_run_is_not_found(database: str) -> None:
    org_id, user_id = make_org(invoices(1))
    view = start_export(org_id, user_id)
    client = TestClient(create_app())
    sign_in(client, "erin@example.com")
    assert client.get(f"/api/exports/{view.run_id}/events").status_code == 404
    assert client.get("/api/exports/nonsense/events").status_code == 422
    assert client.get(f"/runs/{view.run_id}").status_code == 404
    assert client.get(f"/runs/{view.run_id}/timeline").status_code == 404


def test_run_page_timeline_and_status_filter(database: str, worker) -> None:  # type: ignore[no-untyped-def]
    org_id, user_id = make_org(invoices(5), password="demo-password")
    view = start_export(org_id, user_id)
    wait_for_status(org_id, user_id, view.run_id)
    failed_org, failed_user = make_org([])
    failed = start_export(failed_org, failed_user)
    wait_for_status(failed_org, failed_user, failed.run_id)

    detail = run_detail(org_id, user_id, view.run_id)
    assert [s.kind for s in detail.steps] == ["plan", "pages", "assemble", "email", "finalize"]
    assert all(s.state == "done" for s in detail.steps)
    assert detail.steps[1].pages[0].rows == 5 and detail.steps[1].pages[0].attempt == 1
    assert detail.recoveries == 0 and detail.worker == worker.worker_id

    bad = run_detail(failed_org, failed_user, failed.run_id)
    assert [s.kind for s in bad.steps] == ["plan", "cleanup", "fail"]
    assert bad.export.status == "failed" and "nothing to export" in (bad.export.error or "")

    client = TestClient(create_app())
    sign_in(client, f"{user_id.removeprefix('user_')}@example.com")
    page = client.get(f"/runs/{view.run_id}")
    assert page.status_code == 200
    assert "Write pages" in page.text and "1 of 1 pages · 5 rows" in page.text and "never" in page.text
    assert client.get("/runs?status=completed").text.count('data-run-id="') == 1
    assert "No failed runs." in client.get("/runs?status=failed").text
    assert client.get("/runs?status=bogus").status_code == 422
    assert client.get(f"/runs/{failed.run_id}").status_code == 404


def test_a_change_of_the_row_reaches_an_open_stream_at_once(database: str, admin_conn) -> None:  # type: ignore[no-untyped-def]
    """The stream is woken by the row's change notice, not by its fallback timer: with no worker
    and no engine run behind it, a row changed by hand shows up well before FALLBACK_SECONDS."""
    import threading
    import time

    from sqlalchemy import text

    from invoice_export.web.live import FALLBACK_SECONDS
    from tests.web.conftest import completed_export

    org_id, user_id = make_org(invoices(1), password="demo-password")
    run = completed_export(org_id, user_id, T0.date())
    admin_conn.execute(
        text(
            "UPDATE exports SET status = 'running', pages_done = 0, pages_total = 3, completed_at = NULL WHERE id = :i"
        ),
        {"i": run["export_id"]},
    )
    admin_conn.commit()

    def change(pages_done: int, status: str) -> None:
        time.sleep(1.0)
        admin_conn.execute(
            text("UPDATE exports SET pages_done = :p, status = :s WHERE id = :i"),
            {"p": pages_done, "s": status, "i": run["export_id"]},
        )
        admin_conn.commit()
        changed_at.append(time.monotonic())

    changed_at: list[float] = []
    client = TestClient(create_app())
    sign_in(client, f"{user_id.removeprefix('user_')}@example.com")
    seen: list[tuple[float, dict[str, object]]] = []
    writer = threading.Thread(target=lambda: (change(1, "running"), change(3, "completed")))
    with client.stream("GET", f"/api/exports/{run['run_id']}/events") as response:
        for line in response.iter_lines():
            if line.startswith("data:"):
                seen.append((time.monotonic(), json.loads(line.split(":", 1)[1])))
                if len(seen) == 1:
                    writer.start()
    writer.join()

    assert [(e["status"], e["pages_done"]) for _, e in seen] == [("running", 0), ("running", 1), ("completed", 3)]
    delays = [arrived - changed for (arrived, _), changed in zip(seen[1:], changed_at, strict=True)]
    assert all(0 <= delay < 1.0 < FALLBACK_SECONDS for delay in delays), delays
