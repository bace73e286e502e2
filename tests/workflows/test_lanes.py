"""Per-org lanes across three worker processes, from the engine's own timestamps: one org's
exports never overlap in time, different orgs' exports do, and a long backlog in one org does
not hold up another org."""

from __future__ import annotations

import itertools
import secrets
import statistics
import threading
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from invoice_export.exports.service import start_export
from invoice_export.workflows.queue import engine_client
from tests.conftest import (
    Worker,
    add_member,
    engine_run,
    invoices,
    make_org,
    slow_pages,
    wait_for_engine,
)

PAGES = 4
PAGE_SIZE = 10
SECONDS_PER_PAGE = 0.4


@pytest.fixture(scope="module")
def three_workers(worker: Worker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Worker]]:
    """Three worker processes with slow pages (and no shared worker) for this module's tests."""
    worker.stop()
    logs = tmp_path_factory.mktemp("lanes")
    env = {"INVOICE_EXPORT_FAILPOINTS": slow_pages(PAGES, SECONDS_PER_PAGE)}
    workers = [Worker(f"lane-{n}-{secrets.token_hex(2)}", env, logs / f"{n}.log") for n in range(3)]
    starting = [threading.Thread(target=w.start) for w in workers]
    for thread in starting:
        thread.start()
    for thread in starting:
        thread.join()
    assert all(w.alive for w in workers)
    yield workers
    for w in workers:
        w.stop()
    worker.restart()


def span(run_id: str) -> tuple[float, float]:
    """When the run worked, in epoch seconds: from its first step's start to its last step's end,
    as the engine recorded them. (The run's own dequeue and completion times are its database
    transactions' start times, which can precede the commit that a next run waited for.)"""
    steps = engine_client().list_workflow_steps(run_id)
    assert steps and all(s["started_at_epoch_ms"] and s["completed_at_epoch_ms"] for s in steps)
    start = min(s["started_at_epoch_ms"] for s in steps)
    end = max(s["completed_at_epoch_ms"] for s in steps)
    return start / 1000, end / 1000  # type: ignore[operator]


def test_one_org_runs_one_export_at_a_time_while_orgs_run_side_by_side(three_workers, page_size) -> None:  # type: ignore[no-untyped-def]
    page_size(PAGE_SIZE, concurrency=1)
    orgs = []
    for _ in range(3):
        org_id, owner = make_org(invoices(PAGES * PAGE_SIZE))
        orgs.append((org_id, [owner, add_member(org_id), add_member(org_id)]))
    runs: dict[str, list[str]] = defaultdict(list)
    for member in range(3):  # the same day: two members of one org are two runs
        for org_id, members in orgs:
            runs[org_id].append(start_export(org_id, members[member]).run_id)
    assert len({run for org_runs in runs.values() for run in org_runs}) == 9

    for org_runs in runs.values():
        for run_id in org_runs:
            assert wait_for_engine(run_id, timeout=120) == "SUCCESS"
    spans = {org_id: sorted(span(run_id) for run_id in org_runs) for org_id, org_runs in runs.items()}
    executors = {engine_run(run_id).executor_id for org_runs in runs.values() for run_id in org_runs}  # type: ignore[attr-defined]

    for org_spans in spans.values():
        for (_, earlier_end), (later_start, _) in itertools.pairwise(org_spans):
            assert later_start >= earlier_end, f"one org's runs overlap: {org_spans}"
    firsts = [org_spans[0] for org_spans in spans.values()]
    assert max(start for start, _ in firsts) < min(end for _, end in firsts), f"orgs did not overlap: {firsts}"
    assert len(executors) >= 2, f"all runs on one worker: {executors}"


def test_a_backlog_in_one_org_does_not_hold_up_another(three_workers, page_size) -> None:  # type: ignore[no-untyped-def]
    page_size(PAGE_SIZE, concurrency=1)
    backlog = 12
    busy_org, busy_user = make_org(invoices(PAGES * PAGE_SIZE))
    other_org, other_user = make_org(invoices(PAGES * PAGE_SIZE))
    today = datetime.now(UTC)
    busy = [start_export(busy_org, busy_user, now=today - timedelta(days=n)).run_id for n in range(backlog)]
    other = start_export(other_org, other_user).run_id

    assert wait_for_engine(other, timeout=120) == "SUCCESS"
    for run_id in busy:
        assert wait_for_engine(run_id, timeout=120) == "SUCCESS"
    other_record = engine_run(other)
    other_latency = (other_record.completed_at - other_record.created_at) / 1000  # type: ignore[attr-defined]
    busy_spans = [span(run_id) for run_id in busy]
    busy_run = statistics.median(end - start for start, end in busy_spans)
    drained_after = max(end for _, end in busy_spans) - engine_run(busy[0]).created_at / 1000  # type: ignore[attr-defined]
    waiting_when_other_done = sum(start > other_record.completed_at / 1000 for start, _ in busy_spans)  # type: ignore[attr-defined]
    print(
        f"backlog of {backlog} in one org drained in {drained_after:.1f}s (median run {busy_run:.2f}s); "
        f"the other org's run finished {other_latency:.2f}s after it was started, "
        f"with {waiting_when_other_done} of the backlog not yet begun"
    )

    assert other_latency < 2 * busy_run + 1.0
    assert waiting_when_other_done >= backlog // 2
    assert drained_after > 4 * other_latency
