"""Idempotent starts under real concurrency: thirty separate processes, released together, start
the same org, member and UTC day. (One process starting another day, or after a failed or
canceled run, is covered in test_service.py and test_cancel.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from invoice_export.exports.service import idempotency_key, run_id_for
from tests.conftest import PROJECT, make_org, wait_for_engine, wait_for_status

STARTERS = 30
DAY = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
# Each process connects first and says so; then, for every start time it reads on stdin, it
# waits for that moment and starts the export.
STARTER = """
import json, sys, time
from datetime import datetime
from invoice_export.db.session import app_engine
from invoice_export.exports.service import start_export

org_id, user_id, now = sys.argv[1:4]
with app_engine().connect():
    pass
print("ready", flush=True)
for line in sys.stdin:
    time.sleep(max(0.0, float(line) - time.time()))
    began = time.time()
    view = start_export(org_id, user_id, now=datetime.fromisoformat(now))
    print(json.dumps({"run_id": view.run_id, "export_id": str(view.export_id), "began": began}), flush=True)
"""


class Starters:
    """STARTERS processes that start the same export together, as often as asked."""

    def __init__(self, org_id: str, user_id: str, now: datetime) -> None:
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-c", STARTER, org_id, user_id, now.isoformat()],
                cwd=PROJECT,
                env=os.environ.copy(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(STARTERS)
        ]
        for proc in self.procs:
            assert self._line(proc) == "ready", proc.stderr.read()  # type: ignore[union-attr]

    @staticmethod
    def _line(proc: subprocess.Popen[str]) -> str:
        assert proc.stdout is not None
        return proc.stdout.readline().strip()

    def start_together(self) -> list[dict[str, object]]:
        """Release every process at one moment (half a second from now); their answers."""
        start_at = f"{time.time() + 0.5}\n"
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(start_at)
            proc.stdin.flush()
        answers = []
        for proc in self.procs:
            line = self._line(proc)
            assert line, proc.stderr.read()  # type: ignore[union-attr]
            answers.append(json.loads(line))
        began = [float(a["began"]) for a in answers]
        assert max(began) - min(began) < 0.2, "the starters were not released together"
        return answers

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.communicate()


@pytest.fixture
def empty_org() -> tuple[str, str]:
    return make_org([])  # no invoices: its run fails at once, permanently


@pytest.fixture
def starters(empty_org: tuple[str, str]) -> Iterator[Starters]:
    started = Starters(*empty_org, DAY)
    yield started
    started.close()


def test_thirty_concurrent_starts_give_one_run_and_after_a_failure_one_new_attempt(  # type: ignore[no-untyped-def]
    worker, admin_conn, empty_org: tuple[str, str], starters: Starters
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

    first = starters.start_together()
    assert {a["run_id"] for a in first} == {run_id_for(key, 1)}
    assert len({a["export_id"] for a in first}) == 1
    export_id = str(first[0]["export_id"])
    assert [(str(i), r, n) for i, r, n in rows()] == [(export_id, run_id_for(key, 1), 1)]
    assert engine_workflows() == [run_id_for(key, 1)]
    assert wait_for_engine(run_id_for(key, 1)) == "ERROR"
    assert wait_for_status(org_id, user_id, run_id_for(key, 1)).status == "failed"  # type: ignore[attr-defined]

    second = starters.start_together()
    assert {a["run_id"] for a in second} == {run_id_for(key, 2)}
    assert {a["export_id"] for a in second} == {export_id}
    assert [(str(i), r, n) for i, r, n in rows()] == [(export_id, run_id_for(key, 2), 2)]
    assert engine_workflows() == [run_id_for(key, 1), run_id_for(key, 2)]
