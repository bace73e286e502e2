"""Failures inside a page, against a real worker: transient faults are retried with backoff and
the run succeeds; exhausted retries fail the run cleanly; an empty org fails once."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

from invoice_export.exports.service import start_export
from tests.conftest import (
    PROJECT,
    audit_count,
    export_files,
    invoices,
    make_org,
    outbox_for,
    wait_for_status,
)


def hit_times(trace: Path, point: str) -> list[float]:
    return [float(line.split()[2]) for line in trace.read_text().splitlines() if line.split()[0] == point]


def test_dropped_connection_and_storage_error_are_retried_with_backoff(  # type: ignore[no-untyped-def]
    sole_worker, page_size, tmp_path: Path, data_dir: Path
) -> None:
    trace = tmp_path / "trace"
    sole_worker(
        INVOICE_EXPORT_FAILPOINTS="page.read@2=drop-connection*2,page.written@3=error*2",
        INVOICE_EXPORT_FAILPOINT_TRACE=str(trace),
    )
    org_id, user_id = make_org(invoices(40))
    page_size(10)
    run = start_export(org_id, user_id)
    view = wait_for_status(org_id, user_id, run.run_id)

    assert view.status == "completed", view.error
    assert view.row_count == 40 and view.attempts == 1
    for point in ("page.read@2", "page.written@3"):
        times = hit_times(trace, point)
        assert len(times) == 3  # two faults, then success
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert gaps[0] >= 0.45 and gaps[1] >= 0.95  # backoff: 0.5 s, then 1 s
    assert len(outbox_for(data_dir, run.run_id)) == 1
    assert audit_count("export.completed", view.export_id) == 1


def test_exhausted_retries_fail_the_run_and_leave_nothing(  # type: ignore[no-untyped-def]
    sole_worker, page_size, tmp_path: Path, data_dir: Path
) -> None:
    trace = tmp_path / "trace"
    sole_worker(INVOICE_EXPORT_FAILPOINTS="page.written@3=error", INVOICE_EXPORT_FAILPOINT_TRACE=str(trace))
    org_id, user_id = make_org(invoices(40))
    page_size(10)
    run = start_export(org_id, user_id)
    view = wait_for_status(org_id, user_id, run.run_id, timeout=90)

    assert view.status == "failed"
    assert "write_page failed 5 times; last error: InjectedFault: injected fault at page.written@3" in (
        view.error or ""
    )
    assert len(hit_times(trace, "page.written@3")) == 5
    assert view.completed_at is not None
    assert audit_count("export.failed", view.export_id) == 1
    assert audit_count("export.completed", view.export_id) == 0
    assert outbox_for(data_dir, run.run_id) == []
    assert export_files(data_dir, view.export_id) == []  # pages 1 and 2 were written, then removed

    retry = start_export(org_id, user_id)
    assert retry.run_id.endswith("-2")


def test_empty_org_fails_once_with_a_readable_reason_in_the_cli(worker, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    org_id, user_id = make_org([])
    run = start_export(org_id, user_id)
    view = wait_for_status(org_id, user_id, run.run_id)
    assert (view.status, view.attempts) == ("failed", 1)
    shown = subprocess.run(
        [sys.executable, "-m", "invoice_export", "runs", "show", run.run_id, "--json"],
        cwd=PROJECT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    shown_view = json.loads(shown.stdout)
    assert shown_view["status"] == "failed" and shown_view["attempts"] == 1
    assert shown_view["error"] == f"{org_id} had no invoices when the export started; nothing to export"
    assert audit_count("export.failed", view.export_id) == 1
    assert outbox_for(data_dir, run.run_id) == []
