"""A worker that never comes back: with two workers, the runs of one that died (SIGKILL, or lost
the connection that holds its WORKER_ID) are continued by the live one within 30 s, from their
checkpoints; a live worker's runs are never taken; a restarted worker whose id a peer is holding
for a moment still starts, and a second live claimant of an id is refused."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import psycopg
from sqlalchemy import text

from invoice_export.email.message import message_id_for
from invoice_export.exports.service import get_export, start_export
from invoice_export.worker import CLAIM_WAIT_SECONDS, FENCED_EXIT_CODE, TAKEOVER_GRACE_SECONDS
from tests.conftest import (
    PROJECT,
    Worker,
    audit_count,
    engine_run,
    export_files,
    invoices,
    make_org,
    reference_file,
    slow_pages,
    wait_for_engine,
    wait_for_status,
    wait_until,
)

PAGES = 6
PAGE_SIZE = 10
TAKEOVER_BOUND_SECONDS = 30


def page_hits(trace: Path, point: str) -> dict[int, list[int]]:
    """page → pids of the processes that reached `point@page` (one entry per hit)."""
    hits: dict[int, list[int]] = defaultdict(list)
    for line in trace.read_text().splitlines():
        name, pid, _ = line.split()
        if name.startswith(f"{point}@"):
            hits[int(name.partition("@")[2])].append(int(pid))
    return dict(hits)


def pages_checkpointed(run_id: str) -> set[int]:
    """Pages whose step the engine has recorded as finished."""
    from invoice_export.workflows.queue import engine_client

    steps = engine_client().list_workflow_steps(run_id)
    return {
        step["output"]["page"]
        for step in steps
        if step["function_name"].endswith("write_page") and isinstance(step["output"], dict)
    }


def running_on(run_id: str, workers: list[Worker], org_id: str, user_id: str, pages_done: int) -> Worker | None:
    """The worker that is running `run_id`, once it has checkpointed `pages_done` pages."""
    status = engine_run(run_id)
    if status.status != "PENDING" or get_export(org_id, user_id, run_id).pages_done < pages_done:  # type: ignore[attr-defined]
        return None
    return next(w for w in workers if w.worker_id == status.executor_id)  # type: ignore[attr-defined]


def dequeued_by(run_id: str) -> str | None:
    status = engine_run(run_id)
    return status.executor_id if status.status == "PENDING" else None  # type: ignore[attr-defined]


def lock_backend(admin_conn, worker_id: str) -> int:  # type: ignore[no-untyped-def]
    return int(
        admin_conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE application_name = :a AND datname = current_database()"),
            {"a": f"invoice-export {worker_id}"},
        ).scalar_one()
    )


def test_runs_of_a_killed_worker_that_never_comes_back_are_taken_over_within_30s(  # type: ignore[no-untyped-def]
    shared_worker_paused, start_worker, smtp_server, page_size, tmp_path: Path, data_dir: Path
) -> None:
    org_id, user_id = make_org(invoices(PAGES * PAGE_SIZE))
    page_size(PAGE_SIZE, concurrency=1)
    trace = tmp_path / "trace"
    env = smtp_server.env() | {
        "INVOICE_EXPORT_FAILPOINTS": slow_pages(PAGES, 0.5),
        "INVOICE_EXPORT_FAILPOINT_TRACE": str(trace),
    }
    workers = [start_worker(**env), start_worker(**env)]
    expected = reference_file(org_id, user_id)
    smtp_server.accepted.clear()
    trace.write_text("")

    run = start_export(org_id, user_id)
    # Killed while page 3 is being read (its slow read has begun), so one page is in flight.
    victim = wait_until(
        lambda: running_on(run.run_id, workers, org_id, user_id, 2) if 3 in page_hits(trace, "page.read") else None,
        what="run mid-way on a worker, inside page 3",
    )
    survivor = next(w for w in workers if w is not victim)
    victim.kill()  # type: ignore[attr-defined]
    killed_at = time.time()
    checkpointed = pages_checkpointed(run.run_id)

    view = wait_for_status(org_id, user_id, run.run_id, timeout=TAKEOVER_BOUND_SECONDS + 30)
    assert wait_for_engine(run.run_id) == "SUCCESS"
    final = engine_run(run.run_id)
    taken_over_after = final.dequeued_at / 1000 - killed_at  # type: ignore[attr-defined]
    completed_after = final.completed_at / 1000 - killed_at  # type: ignore[attr-defined]
    print(f"taken over {taken_over_after:.1f}s after the kill, completed {completed_after:.1f}s after it")

    assert view.status == "completed", view.error
    assert final.executor_id == survivor.worker_id  # type: ignore[attr-defined]
    assert f"took over 1 run(s) of dead worker {victim.worker_id}" in survivor.output()  # type: ignore[attr-defined]
    assert TAKEOVER_GRACE_SECONDS <= taken_over_after < TAKEOVER_BOUND_SECONDS
    assert completed_after < TAKEOVER_BOUND_SECONDS
    assert Path(view.csv_path).read_bytes() == expected  # type: ignore[arg-type]
    assert (view.row_count, view.pages_done, view.attempts) == (PAGES * PAGE_SIZE, PAGES, 2)
    assert export_files(data_dir, view.export_id) == [Path(view.csv_path)]  # type: ignore[arg-type]
    assert audit_count("export.completed", view.export_id) == 1

    written = page_hits(trace, "page.written")
    in_flight = {page for page, pids in page_hits(trace, "page.read").items() if victim.proc.pid in pids} - checkpointed  # type: ignore[attr-defined]
    redone = {page for page, pids in written.items() if len(pids) > 1}
    assert len(checkpointed) >= 2 and in_flight
    assert sorted(written) == list(range(1, PAGES + 1))
    assert redone <= in_flight  # no checkpointed page is written again; at most the in-flight ones
    assert all(len(pids) <= 2 for pids in written.values())
    assert [m["Message-ID"] for m in smtp_server.messages()] == [message_id_for(run.run_id)]  # type: ignore[index]


def test_a_worker_that_loses_its_lock_connection_exits_and_a_peer_continues(  # type: ignore[no-untyped-def]
    shared_worker_paused, start_worker, page_size, admin_conn
) -> None:
    org_id, user_id = make_org(invoices(PAGES * PAGE_SIZE))
    page_size(PAGE_SIZE, concurrency=1)
    env = {"INVOICE_EXPORT_FAILPOINTS": slow_pages(PAGES, 0.5)}
    workers = [start_worker(**env), start_worker(**env)]

    run = start_export(org_id, user_id)
    fenced = wait_until(lambda: running_on(run.run_id, workers, org_id, user_id, 1), what="run on a worker")
    survivor = next(w for w in workers if w is not fenced)
    admin_conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": lock_backend(admin_conn, fenced.worker_id)})  # type: ignore[attr-defined]
    cut_at = time.monotonic()
    assert fenced.proc.wait(timeout=10) == FENCED_EXIT_CODE  # type: ignore[attr-defined]
    stopped_after = time.monotonic() - cut_at
    assert stopped_after < 3, stopped_after
    assert "lost the connection that holds its WORKER_ID" in fenced.output()  # type: ignore[attr-defined]

    view = wait_for_status(org_id, user_id, run.run_id, timeout=TAKEOVER_BOUND_SECONDS + 30)
    assert view.status == "completed", view.error
    assert engine_run(run.run_id).executor_id == survivor.worker_id  # type: ignore[attr-defined]
    assert view.row_count == PAGES * PAGE_SIZE and view.attempts == 2
    assert audit_count("export.completed", view.export_id) == 1


def test_runs_of_live_workers_are_not_taken_over(  # type: ignore[no-untyped-def]
    shared_worker_paused, start_worker, page_size
) -> None:
    """Each run lasts several takeover scans and a whole grace period while both workers scan."""
    page_size(PAGE_SIZE, concurrency=1)
    seconds_per_page = (TAKEOVER_GRACE_SECONDS + 6) / PAGES
    env = {"INVOICE_EXPORT_FAILPOINTS": slow_pages(PAGES, seconds_per_page)}
    workers = [start_worker(**env), start_worker(**env)]
    runs = []
    for _ in range(2):
        org_id, user_id = make_org(invoices(PAGES * PAGE_SIZE))
        runs.append((org_id, user_id, start_export(org_id, user_id).run_id))
    first_executor = {run_id: wait_until(lambda r=run_id: dequeued_by(r), what="run dequeued") for _, _, run_id in runs}

    for org_id, user_id, run_id in runs:
        view = wait_for_status(org_id, user_id, run_id, timeout=60)
        assert view.status == "completed", view.error
        assert view.attempts == 1
        assert engine_run(run_id).executor_id == first_executor[run_id]  # type: ignore[attr-defined]
    assert all("took over" not in w.output() for w in workers)


def test_a_restarted_worker_waits_for_a_peer_that_holds_its_id_for_a_moment(  # type: ignore[no-untyped-def]
    shared_worker_paused, start_worker, page_size, database: str
) -> None:
    """The restarted worker's id is held (as a peer does while it takes over that id's runs)
    when it starts: it waits, starts once the id is free, and its run completes."""
    from invoice_export.db.urls import get_urls

    org_id, user_id = make_org(invoices(PAGES * PAGE_SIZE))
    page_size(PAGE_SIZE, concurrency=1)
    env = {"INVOICE_EXPORT_FAILPOINTS": slow_pages(PAGES, 0.3)}
    restarted, peer = start_worker(**env), start_worker(**env)
    run = start_export(org_id, user_id)
    victim = wait_until(lambda: running_on(run.run_id, [restarted, peer], org_id, user_id, 1), what="run on a worker")
    victim.kill()  # type: ignore[attr-defined]

    held_for = 2.0
    lock = psycopg.connect(get_urls().app.set(drivername="postgresql").render_as_string(hide_password=False))
    lock.execute("SELECT pg_advisory_lock(hashtextextended('invoice-export worker ' || %s, 0))", (victim.worker_id,))  # type: ignore[attr-defined]
    threading.Timer(held_for, lock.close).start()
    began = time.monotonic()
    victim.start()  # type: ignore[attr-defined]
    assert time.monotonic() - began >= held_for

    view = wait_for_status(org_id, user_id, run.run_id, timeout=60)
    assert view.status == "completed", view.error
    assert view.row_count == PAGES * PAGE_SIZE
    assert audit_count("export.completed", view.export_id) == 1


def test_a_second_live_process_with_the_same_worker_id_is_refused(start_worker) -> None:  # type: ignore[no-untyped-def]
    live = start_worker()
    began = time.monotonic()
    second = subprocess.run(
        [sys.executable, "-m", "invoice_export", "worker"],
        cwd=PROJECT,
        env=os.environ | {"WORKER_ID": live.worker_id},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 3
    assert f"WORKER_ID {live.worker_id!r} is held by another live process" in " ".join(second.stderr.split())
    assert time.monotonic() - began >= CLAIM_WAIT_SECONDS
    assert live.alive
