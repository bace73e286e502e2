"""SIGKILL the worker at chosen points of a run, restart it with the same WORKER_ID, and check
that the run completes with the file of an uninterrupted export, no finished page redone (only
the pages in flight at the kill: at most EXPORT_PAGE_CONCURRENCY of them), one
completion audit row, a consistent row, and one email (except where the mail server accepted the
message and the process died before recording it: the documented window, same Message-ID)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from invoice_export.email.message import message_id_for
from invoice_export.exports.service import get_export, start_export
from invoice_export.settings import get_settings
from tests.conftest import audit_count, export_files, invoices, make_org, reference_file, wait_for_status

PAGES = 5
PAGE_SIZE = 10


def checkpointed_before_kill(trace: Path) -> set[int]:
    """Pages whose checkpoint the killed worker had seen recorded (it reached between-pages@N;
    the trace's first process is the one that was killed)."""
    lines = [line.split() for line in trace.read_text().splitlines()]
    return {int(name.partition("@")[2]) for name, pid, _ in lines if pid == lines[0][1] and name.startswith("between-")}


def trace_counts(trace: Path) -> Counter[str]:
    return Counter(line.split()[0] for line in trace.read_text().splitlines())


@pytest.mark.parametrize(
    ("point", "redone_page"),
    [
        ("page.written@3", 3),  # inside a page: part 3 stored, its transaction not committed
        ("between-pages@3", None),  # page 3 checkpointed, others maybe in flight
        ("assembled", None),
        ("email.handed-over", None),  # accepted by the server, acceptance not yet recorded
        ("email.recorded", None),  # acceptance recorded, the email step's checkpoint not yet
        ("finalize.before-commit", None),
    ],
)
def test_kill_and_restart_completes_with_the_same_file(  # type: ignore[no-untyped-def]
    point: str, redone_page: int | None, sole_worker, smtp_server, page_size, tmp_path: Path, data_dir: Path
) -> None:
    org_id, user_id = make_org(invoices(PAGES * PAGE_SIZE))
    page_size(PAGE_SIZE)
    worker = sole_worker(**smtp_server.env())
    expected = reference_file(org_id, user_id)
    smtp_server.accepted.clear()
    trace = tmp_path / "trace"

    worker.restart(
        **smtp_server.env(), INVOICE_EXPORT_FAILPOINTS=f"{point}=kill", INVOICE_EXPORT_FAILPOINT_TRACE=str(trace)
    )
    run = start_export(org_id, user_id)
    worker.wait_killed()
    assert get_export(org_id, user_id, run.run_id).status == "running"

    worker.restart(**smtp_server.env(), INVOICE_EXPORT_FAILPOINT_TRACE=str(trace))
    view = wait_for_status(org_id, user_id, run.run_id)

    assert view.status == "completed", view.error
    assert Path(view.csv_path).read_bytes() == expected  # type: ignore[arg-type]
    assert (view.row_count, view.pages_done, view.pages_total, view.error) == (PAGES * PAGE_SIZE, PAGES, PAGES, None)
    assert view.completed_at is not None and view.attempts == 2
    assert export_files(data_dir, view.export_id) == [Path(view.csv_path)]  # type: ignore[arg-type]
    assert audit_count("export.completed", view.export_id) == 1
    assert audit_count("export.failed", view.export_id) == 0

    hits = trace_counts(trace)
    written = {page: hits[f"page.written@{page}"] for page in range(1, PAGES + 1)}
    # At most the pages in flight at the kill are written again (the killed page, if the kill was
    # inside one, and pages running beside it): never more than EXPORT_PAGE_CONCURRENCY, never
    # one whose checkpoint had been recorded, none after assembly.
    redone = {page for page, n in written.items() if n > 1}
    assert all(n in (1, 2) for n in written.values()) and sorted(written) == list(range(1, PAGES + 1))
    assert len(redone) <= (get_settings().export_page_concurrency if "@" in point else 0)
    assert not redone & checkpointed_before_kill(trace)
    if redone_page:
        assert written[redone_page] == 2

    ids = [m["Message-ID"] for m in smtp_server.messages()]  # type: ignore[index]
    if point == "email.handed-over":
        # The documented duplicate window: accepted, then killed before the step was recorded.
        assert ids == [message_id_for(run.run_id)] * 2
        keys = {m["X-Idempotency-Key"] for m in smtp_server.messages()}  # type: ignore[index]
        assert keys == {run.run_id}
    else:
        assert ids == [message_id_for(run.run_id)]
        assert hits["email.handed-over"] == 1


def test_parts_a_machine_crash_lost_are_read_again_at_assembly(  # type: ignore[no-untyped-def]
    sole_worker, page_size, tmp_path: Path, data_dir: Path
) -> None:
    """Parts are not forced to disk: after a machine crash, checkpointed pages may have no part, or
    a short one. Stand-in: kill the worker after pages 1-3 are checkpointed, then delete part 1 and
    cut part 2 short. The restarted run reads exactly those pages again, and the file is the same."""
    org_id, user_id = make_org(invoices(PAGES * PAGE_SIZE))
    page_size(PAGE_SIZE, concurrency=1)
    worker = sole_worker()
    expected = reference_file(org_id, user_id)
    trace = tmp_path / "trace"

    worker.restart(INVOICE_EXPORT_FAILPOINTS="between-pages@3=kill", INVOICE_EXPORT_FAILPOINT_TRACE=str(trace))
    run = start_export(org_id, user_id)
    worker.wait_killed()
    parts = sorted((data_dir / "exports" / str(run.export_id)).rglob("*.csv"))
    assert [p.name for p in parts] == ["000001.csv", "000002.csv", "000003.csv"]
    parts[0].unlink()
    parts[1].write_bytes(parts[1].read_bytes()[:10])

    worker.restart(INVOICE_EXPORT_FAILPOINT_TRACE=str(trace))
    view = wait_for_status(org_id, user_id, run.run_id)

    assert view.status == "completed", view.error
    assert Path(view.csv_path).read_bytes() == expected  # type: ignore[arg-type]
    hits = trace_counts(trace)
    assert {point: n for point, n in hits.items() if point.startswith("part.rewritten")} == {
        "part.rewritten@1": 1,
        "part.rewritten@2": 1,
    }
    assert [hits[f"page.written@{page}"] for page in range(1, PAGES + 1)] == [1] * PAGES
    assert export_files(data_dir, view.export_id) == [Path(view.csv_path)]  # type: ignore[arg-type]


def test_a_worker_that_keeps_dying_after_handing_over_the_email_stops_resending(  # type: ignore[no-untyped-def]
    sole_worker, smtp_server, admin_conn
) -> None:
    """Each time the mail server accepts the message the worker dies before the step is recorded.
    After MAX_UNSETTLED_HANDOVERS such hand-overs the run no longer sends; it completes, and says why."""
    from sqlalchemy import text

    from invoice_export.workflows.export import MAX_UNSETTLED_HANDOVERS

    org_id, user_id = make_org(invoices(3))
    dying = {**smtp_server.env(), "INVOICE_EXPORT_FAILPOINTS": "email.handed-over=kill"}
    worker = sole_worker(**dying)
    run = start_export(org_id, user_id)
    for _ in range(MAX_UNSETTLED_HANDOVERS):
        worker.wait_killed()
        worker.restart(**dying)
    view = wait_for_status(org_id, user_id, run.run_id)

    assert view.status == "completed", view.error
    assert [m["Message-ID"] for m in smtp_server.messages()] == [message_id_for(run.run_id)] * MAX_UNSETTLED_HANDOVERS  # type: ignore[index]
    email = admin_conn.execute(
        text("SELECT metadata -> 'email' FROM audit_logs WHERE action = 'export.completed' AND target_id = :t"),
        {"t": str(view.export_id)},
    ).scalar_one()
    assert email["sent"] is False and "not handed over again" in email["skipped_reason"]
