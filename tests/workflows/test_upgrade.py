"""Upgrading the code: a run started by the previous build is finished by the new one.

The previous build is a copy of `src/` whose workflow source differs (one trace-only failpoint
more), so the engine's code-hash version of the two builds differs; the run is recovered anyway
because the version is pinned (`workflows/queue.py` APP_VERSION)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from invoice_export.exports.service import start_export
from invoice_export.workflows.queue import APP_NAME, APP_VERSION
from tests.conftest import (
    PROJECT,
    audit_count,
    engine_run,
    invoices,
    make_org,
    reference_file,
    wait_for_status,
)

PAGES = 5
PAGE_SIZE = 10
PROBE = (
    "import invoice_export.workflows.export as export\n"
    "from dbos._dbos import _get_or_create_dbos_registry\n"
    "print(export.__file__)\n"
    f"print(_get_or_create_dbos_registry().compute_app_version({APP_NAME!r}))\n"
)


def previous_build(tmp_path: Path) -> Path:
    """A copy of the source whose workflow also marks, in the failpoint trace, that it ran."""
    src = tmp_path / "previous" / "src"
    shutil.copytree(PROJECT / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
    workflow = src / "invoice_export" / "workflows" / "export.py"
    anchor = "    request = ExportRequest.model_validate(payload)\n"
    source = workflow.read_text()
    assert source.count(anchor) == 1
    workflow.write_text(source.replace(anchor, '    hit("build.previous")\n' + anchor))
    return src


def imported_workflow(**env: str) -> tuple[Path, str]:
    """(file the workflow module is imported from, the engine's code-hash version) for a process
    started like a worker with `env`."""
    probe = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=PROJECT,
        env=os.environ | env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    path, version = probe.stdout.split()
    return Path(path), version


def test_a_run_started_by_the_previous_build_completes_after_the_upgrade(  # type: ignore[no-untyped-def]
    shared_worker_paused, start_worker, page_size, tmp_path: Path
) -> None:
    previous = previous_build(tmp_path)
    old_module, old_version = imported_workflow(PYTHONPATH=str(previous))
    new_module, new_version = imported_workflow()
    assert old_module == previous / "invoice_export" / "workflows" / "export.py"
    assert new_module == PROJECT / "src" / "invoice_export" / "workflows" / "export.py"
    assert old_version != new_version

    org_id, user_id = make_org(invoices(PAGES * PAGE_SIZE))
    page_size(PAGE_SIZE, concurrency=1)
    worker = start_worker()
    expected = reference_file(org_id, user_id)
    trace = tmp_path / "trace"

    worker.restart(
        PYTHONPATH=str(previous),
        INVOICE_EXPORT_FAILPOINTS="between-pages@2=kill",
        INVOICE_EXPORT_FAILPOINT_TRACE=str(trace),
    )
    old_pid = worker.proc.pid
    run = start_export(org_id, user_id)
    worker.wait_killed()
    started = engine_run(run.run_id)
    assert (started.status, started.app_version, started.executor_id) == ("PENDING", APP_VERSION, worker.worker_id)  # type: ignore[attr-defined]

    worker.restart(INVOICE_EXPORT_FAILPOINT_TRACE=str(trace))
    new_pid = worker.proc.pid
    view = wait_for_status(org_id, user_id, run.run_id)

    assert view.status == "completed", view.error
    assert Path(view.csv_path).read_bytes() == expected  # type: ignore[arg-type]
    assert (view.row_count, view.pages_done, view.attempts) == (PAGES * PAGE_SIZE, PAGES, 2)
    assert audit_count("export.completed", view.export_id) == 1
    hits = [line.split()[:2] for line in trace.read_text().splitlines()]
    assert ["build.previous", str(old_pid)] in hits
    assert ["build.previous", str(new_pid)] not in hits
    written = [(int(point.partition("@")[2]), int(pid)) for point, pid in hits if point.startswith("page.written@")]
    assert sorted(page for page, _ in written) == list(range(1, PAGES + 1))  # each page once
    assert {page for page, pid in written if pid == old_pid} == {1, 2}
