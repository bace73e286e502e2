"""The CLI as a user runs it: a real process against the test database and a real worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import PROJECT


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoice_export", *args],
        cwd=PROJECT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_export_wait_json_then_runs_show_and_list(worker) -> None:  # type: ignore[no-untyped-def]
    done = cli("export", "--org", "org_initech", "--as", "user_erin", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    expected_keys = {
        "run_id", "export_id", "org_id", "requested_by", "status", "attempts", "pages_done", "pages_total",
        "row_count", "csv_path", "download_url", "error", "requested_at", "started_at", "completed_at",
    }  # fmt: skip
    assert expected_keys <= set(run)
    assert (run["status"], run["row_count"], run["org_id"]) == ("completed", 200, "org_initech")

    shown = cli("runs", "show", run["run_id"], "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["run_id"] == run["run_id"]

    listed = cli("runs", "list", "--org", "org_initech", "--json")
    assert run["run_id"] in [r["run_id"] for r in json.loads(listed.stdout)]

    os.environ["COLUMNS"] = "40"  # piped into a narrow terminal: ids and times are never cut
    try:
        table = cli("runs", "list", "--org", "org_initech")
    finally:
        del os.environ["COLUMNS"]
    assert table.returncode == 0, table.stderr
    assert run["run_id"] in table.stdout and run["requested_at"][:19] in table.stdout


def test_bad_input_is_a_clear_error(database: str) -> None:
    outsider = cli("export", "--org", "org_acme", "--as", "user_carol")
    assert outsider.returncode == 2
    assert "not a member" in outsider.stderr
    unknown = cli("runs", "show", "exp-0000000000000000-1")
    assert unknown.returncode == 2 and "no export run" in unknown.stderr
    malformed = cli("runs", "show", "../../etc")
    assert malformed.returncode == 2 and "malformed run id" in malformed.stderr
    bad_seed = cli("db", "seed", "--extra-org", "acme:ten")
    assert bad_seed.returncode == 2 and "ORG_ID:N" in bad_seed.stderr


def test_runs_list_of_an_unknown_org_is_an_error(database: str) -> None:
    listed = cli("runs", "list", "--org", "org_nope")
    assert listed.returncode == 2 and "unknown organization 'org_nope'" in listed.stderr


def test_export_wait_says_so_when_no_worker_runs_the_queued_run(shared_worker_paused) -> None:  # type: ignore[no-untyped-def]
    """With no worker, --wait does not sit silent: after QUEUED_HINT_SECONDS it says that a worker
    must run the queued run (the run itself stays queued for the next worker)."""
    from invoice_export.exports.service import cancel_export
    from tests.conftest import invoices, make_org

    org_id, user_id = make_org(invoices(3))
    waiting = subprocess.Popen(
        [sys.executable, "-m", "invoice_export", "export", "--org", org_id, "--as", user_id, "--wait", "--json"],
        cwd=PROJECT,
        env=os.environ.copy(),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert waiting.stderr is not None
        line = waiting.stderr.readline()  # blocks until the hint (or the process ends)
        assert "is still queued after" in line and "invoice-export worker" in line, line
        assert waiting.poll() is None  # still waiting for the run
    finally:
        waiting.kill()
        waiting.wait()
    listed = cli("runs", "list", "--org", org_id, "--json")
    (run,) = json.loads(listed.stdout)
    assert run["status"] == "queued"
    cancel_export(org_id, run["run_id"], actor_id=None, via="test")


def test_serve_with_two_processes_answers_every_click_with_the_same_run(start_server, database: str) -> None:  # type: ignore[no-untyped-def]
    """`serve --processes 2`: both web processes take clicks; parallel clicks of one member, on
    many connections, all answer 202 with one run."""
    from concurrent.futures import ThreadPoolExecutor
    from datetime import timedelta

    import httpx
    from sqlalchemy import text

    from invoice_export.db.session import admin_engine
    from invoice_export.orgs.sessions import create_session
    from tests.conftest import invoices, make_org

    _, user_id = make_org(invoices(3))
    token = create_session(user_id, timedelta(hours=1))
    with admin_engine().connect() as conn:
        csrf = conn.execute(text("SELECT csrf_token FROM sessions WHERE user_id = :u"), {"u": user_id}).scalar_one()
    site = start_server(SERVE_PROCESSES="2")
    assert site.processes == 2

    def click(_: int) -> tuple[int, str]:
        with httpx.Client(base_url=site.base_url, timeout=30) as http:
            answer = http.post("/api/exports", headers={"Cookie": f"ie_session={token}", "X-CSRF-Token": csrf})
            return answer.status_code, answer.json()["run_id"]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(click, range(48)))
    assert {status for status, _ in answers} == {202}
    assert len({run_id for _, run_id in answers}) == 1
    children = subprocess.run(["pgrep", "-P", str(site.proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) >= 2, "uvicorn started fewer than two web processes"
