"""Idempotent starts under real concurrency: thirty separate processes, released together, start
the same org, member and UTC day. (One process starting another day, or after a failed or
canceled run, is covered in test_service.py and test_cancel.py.)"""

from __future__ import annotations

import functools
import multiprocessing
import os
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from invoice_export.exports.service import idempotency_key, run_id_for
from tests.conftest import make_org, wait_for_engine, wait_for_status

STARTERS = 30
DAY = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
# Separate processes, forked from a server process that imported the app (and this module) once,
# so that thirty of them start in a second rather than a minute of imports on two cores.
_processes = multiprocessing.get_context("forkserver")
_processes.set_forkserver_preload([__name__])


def _start(org_id: str, user_id: str, now: datetime, barrier: Any, start_at: Any, answers: Any) -> None:
    """One starter: connect, wait at the barrier for the others, then start the export at the
    moment the last one to arrive set (a barrier wakes its waiters one at a time)."""
    from invoice_export.db.session import app_engine
    from invoice_export.exports.service import start_export

    try:
        with app_engine().connect():
            pass
        barrier.wait(timeout=120)
        time.sleep(max(0.0, start_at.value - time.time()))
        began = time.time()
        view = start_export(org_id, user_id, now=now)
        answers.put({"run_id": view.run_id, "export_id": str(view.export_id), "began": began, "pid": os.getpid()})
    except Exception as exc:
        answers.put({"error": repr(exc)})


def _set_start(start_at: Any) -> None:
    start_at.value = time.time() + 0.5


def start_together(org_id: str, user_id: str, now: datetime) -> list[dict[str, Any]]:
    """STARTERS processes start the same export at one moment; their answers."""
    start_at = _processes.Value("d", 0.0)
    barrier = _processes.Barrier(STARTERS, action=functools.partial(_set_start, start_at))
    queue = _processes.Queue()
    procs = [
        _processes.Process(target=_start, args=(org_id, user_id, now, barrier, start_at, queue))
        for _ in range(STARTERS)
    ]
    for proc in procs:
        proc.start()
    answers = [queue.get(timeout=180) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    assert [a["error"] for a in answers if "error" in a] == []
    assert len({a["pid"] for a in answers} - {os.getpid()}) == STARTERS
    began = [a["began"] for a in answers]
    assert max(began) - min(began) < 0.2, "the starters were not released together"
    return answers


@pytest.fixture
def empty_org() -> tuple[str, str]:
    return make_org([])  # no invoices: its run fails at once, permanently


def test_thirty_concurrent_starts_give_one_run_and_after_a_failure_one_new_attempt(  # type: ignore[no-untyped-def]
    worker, admin_conn, empty_org: tuple[str, str]
) -> None:
    org_id, user_id = empty_org
    key = idempotency_key(org_id, user_id, DAY.date())

    def rows() -> list[tuple[object, ...]]:
        found = admin_conn.execute(
            text("SELECT id, run_id, attempt FROM exports WHERE organization_id = :o"), {"o": org_id}
        )
        return [tuple(row) for row in found]

    def engine_workflows() -> list[str]:
        found = admin_conn.execute(
            text("SELECT workflow_uuid FROM dbos.workflow_status WHERE workflow_uuid LIKE :p ORDER BY 1"),
            {"p": f"exp-{key[:16]}-%"},
        )
        return list(found.scalars())

    first = start_together(org_id, user_id, DAY)
    assert {a["run_id"] for a in first} == {run_id_for(key, 1)}
    assert len({a["export_id"] for a in first}) == 1
    export_id = str(first[0]["export_id"])
    assert [(str(i), r, n) for i, r, n in rows()] == [(export_id, run_id_for(key, 1), 1)]
    assert engine_workflows() == [run_id_for(key, 1)]
    assert wait_for_engine(run_id_for(key, 1)) == "ERROR"
    assert wait_for_status(org_id, user_id, run_id_for(key, 1)).status == "failed"  # type: ignore[attr-defined]

    second = start_together(org_id, user_id, DAY)
    assert {a["run_id"] for a in second} == {run_id_for(key, 2)}
    assert {a["export_id"] for a in second} == {export_id}
    assert [(str(i), r, n) for i, r, n in rows()] == [(export_id, run_id_for(key, 2), 2)]
    assert engine_workflows() == [run_id_for(key, 1), run_id_for(key, 2)]
