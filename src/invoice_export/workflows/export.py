"""The durable export: plan → one checkpointed step per page → assemble → email → finalize.

Imported only by worker processes. Every step is safe to run again, because a step that was in
flight when a worker died is re-run on recovery; completed steps are replayed from their
checkpoints and never redone. Steps return small metadata (never rows) so checkpoints stay tiny.
The plan fixes where every page ends, so `page_concurrency` pages are written at a time, each
still its own step; progress (`pages_done`, `rows_written`) is counted on the row by each page's
own transaction.

Cancel is cooperative: `exports/service.py:cancel_export` marks the row canceled; the row is
checked at every page boundary (inside the page's own transaction) and before assembly, and the
run then removes its files and ends without email. Once assembly has begun the run can no longer
be canceled (the assembly step claims the row first), so a canceled run never sends an email.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextvars import copy_context
from datetime import UTC, datetime
from typing import Any

from dbos import DBOS, StepOptions
from dbos._error import DBOSMaxStepRetriesExceeded
from sqlalchemy import func, select, text, update

from invoice_export.audit.service import record
from invoice_export.db.models import Export, Organization, User
from invoice_export.db.session import set_tenant, tenant_transaction
from invoice_export.email.backends import PermanentEmailError, get_backend
from invoice_export.email.message import export_ready_message
from invoice_export.email.service import SendOutcome, send_unless_suppressed, suppression_reason
from invoice_export.errors import ExportFailed, NothingToExport
from invoice_export.exports.csv_format import BOM, HEADER
from invoice_export.exports.schemas import ExportRequest
from invoice_export.exports.storage import get_storage
from invoice_export.exports.tokens import download_url as signed_download_url
from invoice_export.failpoints import hit
from invoice_export.invoices.repository import (
    CsvPage,
    Keyset,
    Snapshot,
    current_snapshot,
    plan_pages,
    prune_versions,
    read_csv_page,
)
from invoice_export.settings import get_settings
from invoice_export.workflows.queue import WORKFLOW_NAME
from invoice_export.workflows.runtime import datasource, tenant_write

ACTIVE = ("queued", "running")
# Email hand-overs cut off before their outcome was recorded, after which a run stops re-sending.
MAX_UNSETTLED_HANDOVERS = 3


@DBOS.workflow(name=WORKFLOW_NAME)
def export_invoices(payload: dict[str, Any]) -> dict[str, Any]:
    request = ExportRequest.model_validate(payload)
    job = request.model_dump(mode="json")
    try:
        plan = plan_export(job)
        if plan["canceled"]:
            return _stop_canceled(job)
        if plan["invoices"] == 0:
            raise NothingToExport(f"{request.org_id} had no invoices when the export started; nothing to export")
        pages = len(plan["ends"])
        written = _write_pages(job, plan)
        if written is None:
            return _stop_canceled(job)
        sizes = [page["bytes"] for page in written]
        rows = plan["invoices"]
        stored = assemble_file(job, plan, sizes)
        if stored["canceled"]:
            return _stop_canceled(job)
        hit("assembled")
        email = send_ready_email(job, rows, stored["download_url"])
        return finalize_export(job, rows, pages, stored, email)
    except ExportFailed as failure:
        _give_up(job, str(failure))
        raise
    except Exception as failure:
        reason = _reason(failure)
        _give_up(job, reason)
        raise ExportFailed(f"export failed: {reason}") from failure


def _write_pages(job: dict[str, Any], plan: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Write every page of the plan, each as its own checkpointed step, `page_concurrency` at a
    time: a new page starts as soon as any page in flight finishes. Returns the pages' results
    in page order, or None when the run was canceled.

    The steps' ids are reserved in page order (one page is started at a time, from this thread),
    so a recovered run replays every finished page from its checkpoint whatever order the pages
    finished in; only pages still in flight at a crash (at most `page_concurrency`) run again.
    After a failure or a cancel no new page starts, and the pages in flight are waited for before
    anything is raised, so nothing is still writing when a failed run removes its files.
    """
    pages = len(plan["ends"])
    concurrency = job["page_concurrency"]
    written: dict[int, dict[str, Any]] = {}
    in_flight: set[Future[dict[str, Any]]] = set()
    failure: BaseException | None = None
    canceled = False
    started = 0
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="page") as pool:
        while True:
            while failure is None and not canceled and started < pages and len(in_flight) < concurrency:
                started += 1
                in_flight.add(_start_page(pool, job, plan, started))
            if not in_flight:
                break
            done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                if (error := future.exception()) is not None:
                    failure = failure or error
                    continue
                page = future.result()
                if page["canceled"]:
                    canceled = True
                else:
                    written[page["page"]] = page
                    hit(f"between-pages@{page['page']}")
    if failure is not None:
        raise failure
    return None if canceled else [written[page] for page in range(1, pages + 1)]


def _start_page(
    pool: ThreadPoolExecutor, job: dict[str, Any], plan: dict[str, Any], page: int
) -> Future[dict[str, Any]]:
    """Reserve page `page`'s step id now, and run the step in `pool`, in a copy of the workflow's
    context (which the reserved step needs)."""
    reservation = DBOS.reserve_step()

    def step() -> dict[str, Any]:
        return reservation.run(WRITE_PAGE, write_page, job, plan["snapshot"], page, *_page_range(plan, job, page))

    return pool.submit(copy_context().run, step)


PageRange = tuple[dict[str, Any] | None, dict[str, Any], int]


def _page_range(plan: dict[str, Any], job: dict[str, Any], page: int) -> PageRange:
    """Page `page` of the plan: the key it starts after (none for the first), its last key, and
    how many rows it holds (a full page, except a short last one)."""
    ends = plan["ends"]
    rows = min(job["page_size"], plan["invoices"] - (page - 1) * job["page_size"])
    return (ends[page - 2] if page > 1 else None), ends[page - 1], rows


def _reason(failure: Exception) -> str:
    """A reason a person can act on: for exhausted retries, the last underlying error."""
    if isinstance(failure, DBOSMaxStepRetriesExceeded) and failure.errors:
        last = failure.errors[-1]
        return f"{failure.step_name} failed {len(failure.errors)} times; last error: {type(last).__name__}: {last}"
    return f"{type(failure).__name__}: {failure}"


def _give_up(job: dict[str, Any], reason: str) -> None:
    """End a failed run: its files go first, so a row that says failed never has files left
    behind it; the row is marked failed even if removing them fails."""
    try:
        remove_files(job)
    finally:
        fail_export(job, reason)


def _stop_canceled(job: dict[str, Any]) -> dict[str, Any]:
    """The row was canceled (by `cancel_export`, which also audited it): drop the files, send nothing."""
    remove_files(job)
    return {"status": "canceled"}


def _attempt() -> int:
    """Which try of the running step this is (1 = first). The engine records only a step's final
    outcome, so a retrying step reports its attempt in its output for the run page."""
    status = DBOS.step_status
    return (status.current_attempt or 0) + 1 if status is not None else 1


@DBOS.step()
def plan_export(job: dict[str, Any]) -> dict[str, Any]:
    """Fix the snapshot (the invoices exactly as they are now), count them, find where each page
    ends, and mark the row running.

    The snapshot is recorded on the row in the same transaction, so versions it needs are kept
    until the run ends (see `prune_versions`); a re-run of this step takes a fresh snapshot, which
    is harmless because no page has been written yet. The output holds one key per page (about
    50 bytes each), which every page step reads from the checkpoint.
    """
    with tenant_transaction(job["org_id"]) as session:
        prune_versions(session, job["org_id"], keep_for_export=job["export_id"])
        snapshot = current_snapshot(session)
        snapshot_at = session.execute(select(func.now())).scalar_one()
        pages = plan_pages(session, job["org_id"], snapshot, job["page_size"])
        claimed = session.execute(
            update(Export)
            .where(Export.id == job["export_id"], Export.run_id == job["run_id"], Export.status.in_(ACTIVE))
            .values(
                status="running",
                started_at=func.coalesce(Export.started_at, func.now()),
                snapshot_at=snapshot_at,
                snapshot=snapshot.text,
                pages_total=len(pages.ends),
                pages_done=0,
                rows_written=0,
            )
            .returning(Export.id)
        ).scalar_one_or_none()
    return {
        "snapshot": snapshot.as_dict(),
        "snapshot_at": snapshot_at.isoformat(),
        "invoices": pages.invoices,
        "pages_total": len(pages.ends),
        "ends": [end.as_dict() for end in pages.ends],
        "canceled": claimed is None,
    }


class PageMismatch(RuntimeError):
    """A page read back a different number of rows than the plan counted for it: the snapshot
    did not hold, and a file built from it would be wrong."""


# Before a page is read: its transaction need not wait for its own WAL flush (its step's
# checkpoint, committed right after it on the same server, waits for a flush that covers it; lost
# in a server crash before that, the page simply has no checkpoint and runs again), and the run
# must still own its row and not be canceled.
PAGE_PRELUDE = text(
    "SELECT set_config('synchronous_commit', 'off', true),"
    " (SELECT status FROM exports WHERE id = :export_id AND run_id = :run_id) = ANY(:active)"
)

# After a page is stored: record the part once and raise the row's progress, in one statement,
# unless the run was canceled meanwhile. The row lock is taken last, so concurrent pages of the
# run wait for each other only for this statement, and a cancel (which takes the same lock) is
# seen either before or after, never half-way. A re-run finds the part recorded and counts nothing.
COUNT_PART = text(
    """WITH run AS (
           SELECT id FROM exports
           WHERE id = :export_id AND run_id = :run_id AND status = ANY(:active)
           FOR UPDATE),
       part AS (
           INSERT INTO export_parts (export_id, attempt, page, organization_id, rows, bytes)
           SELECT id, :attempt, :page, :org_id, :rows, :bytes FROM run
           ON CONFLICT DO NOTHING
           RETURNING export_id),
       progress AS (
           UPDATE exports SET pages_done = pages_done + 1, rows_written = rows_written + :rows
           FROM part WHERE exports.id = part.export_id)
       SELECT EXISTS (SELECT FROM run)"""
)

# The page step's options, used through `DBOS.reserve_step` (see `_start_page`).
WRITE_PAGE: StepOptions = {
    "name": "write_page",
    "retries_allowed": True,
    "max_attempts": 5,
    "interval_seconds": 0.5,
    "backoff_rate": 2.0,
}


def write_page(
    job: dict[str, Any],
    snapshot: dict[str, str],
    page: int,
    after: dict[str, Any] | None,
    last: dict[str, Any],
    expected_rows: int,
) -> dict[str, Any]:
    """Read page `page` of the snapshot (keys after `after`, up to `last`) as CSV, store it as
    part `page`, and count it on the row. A re-run writes the same bytes (the snapshot and the
    two keys fix the page) and counts nothing twice (`COUNT_PART`). A canceled row stops the
    run here: before the page is read, or after, when the page is not counted."""
    run = {"export_id": job["export_id"], "run_id": job["run_id"], "active": list(ACTIVE)}
    with tenant_transaction(job["org_id"]) as session:
        active = session.execute(PAGE_PRELUDE, run).one()[1]
        hit(f"page.read@{page}", session)
        if not active:
            return {"page": page, "rows": 0, "bytes": 0, "canceled": True}
        csv_page = _read_page(session, job, snapshot, page, after, last, expected_rows)
        size = get_storage().write_part(job["export_id"], job["attempt"], page, csv_page.data)
        hit(f"page.written@{page}", session)
        part = {"attempt": job["attempt"], "page": page, "org_id": job["org_id"], "rows": csv_page.rows, "bytes": size}
        counted = session.execute(COUNT_PART, run | part).scalar_one()
    return {"page": page, "rows": csv_page.rows, "bytes": size, "canceled": not counted, "attempt": _attempt()}


def _read_page(
    session: Any,
    job: dict[str, Any],
    snapshot: dict[str, str],
    page: int,
    after: dict[str, Any] | None,
    last: dict[str, Any],
    expected_rows: int,
) -> CsvPage:
    """Page `page` of the snapshot as CSV, checked against the plan's count for it."""
    csv_page = read_csv_page(
        session,
        job["org_id"],
        Snapshot(**snapshot),
        Keyset(**after) if after else None,
        Keyset(**last),
        job["page_size"],
    )
    if csv_page.rows != expected_rows:
        raise PageMismatch(f"page {page} read {csv_page.rows} rows where the plan counted {expected_rows}")
    return csv_page


@DBOS.step(retries_allowed=True, max_attempts=3, interval_seconds=0.5)
def assemble_file(job: dict[str, Any], plan: dict[str, Any], sizes: list[int]) -> dict[str, Any]:
    """Join the parts under one header into the final file, then drop the parts.

    It first claims the row (sets `file_key`) unless the run was canceled: from then on a cancel
    is refused, so the email is never sent for a canceled run. Parts are not forced to disk as
    they are written (exports/storage.py), so a part that a machine crash lost or cut short is
    read again from the database here first: `sizes` are the byte counts the page steps
    recorded, and a planned page always reads back the same bytes."""
    storage = get_storage()
    name = f"invoices-{job['org_id']}-{job['day_bucket']}.csv"
    key = f"{job['export_id']}/{name}"
    with tenant_transaction(job["org_id"]) as session:
        claimed = session.execute(
            update(Export)
            .where(Export.id == job["export_id"], Export.run_id == job["run_id"], Export.status.in_(ACTIVE))
            .values(file_key=key)
            .returning(Export.id)
        ).scalar_one_or_none()
    if claimed is None:
        return {"canceled": True}
    if storage.stored(key) is None:
        _rewrite_lost_parts(job, plan, sizes)
    stored = storage.assemble(job["export_id"], job["attempt"], len(sizes), BOM + HEADER, name)
    storage.remove_parts(job["export_id"], job["attempt"])
    link = signed_download_url(job["export_id"], job["org_id"])
    return {"key": stored.key, "bytes": stored.size, "download_url": link, "canceled": False, "attempt": _attempt()}


def _rewrite_lost_parts(job: dict[str, Any], plan: dict[str, Any], sizes: list[int]) -> None:
    storage = get_storage()
    for page, size in enumerate(sizes, start=1):
        if storage.part_size(job["export_id"], job["attempt"], page) == size:
            continue
        with tenant_transaction(job["org_id"]) as session:
            csv_page = _read_page(session, job, plan["snapshot"], page, *_page_range(plan, job, page))
        if len(csv_page.data) != size:
            raise PageMismatch(f"page {page} read back {len(csv_page.data)} bytes where it had written {size}")
        storage.write_part(job["export_id"], job["attempt"], page, csv_page.data)
        hit(f"part.rewritten@{page}")


def _is_transient(error: BaseException) -> bool:
    return not isinstance(error, PermanentEmailError)


@DBOS.step(retries_allowed=True, max_attempts=5, interval_seconds=1.0, backoff_rate=2.0, should_retry=_is_transient)
def send_ready_email(job: dict[str, Any], rows: int, download_url: str) -> dict[str, Any]:
    """Email the requester once per run. The Message-ID is derived from the run id, so the rare
    re-send after a crash (see ARCHITECTURE.md) is recognisable as the same message.

    The database work (recipient, suppression check, counting the hand-over) is done and
    committed before the message is handed over, and the transaction that records the server's
    acceptance is open before it too (`_hand_over`): after the acceptance only that one UPDATE
    and its commit remain, which is the whole duplicate window. A re-run of the step that finds
    the acceptance recorded sends nothing. A hand-over whose outcome never came back (the worker
    died in the window) stays counted; after MAX_UNSETTLED_HANDOVERS of those the message is not
    handed over again, so a worker that keeps dying there cannot flood the requester."""
    settings = get_settings()
    run = {"export_id": job["export_id"], "run_id": job["run_id"]}
    with tenant_transaction(job["org_id"]) as session:
        user = session.get(User, job["requested_by"])
        org_name = session.execute(select(Organization.name).where(Organization.id == job["org_id"])).scalar_one()
        assert user is not None
        message = export_ready_message(
            sender=settings.email_from,
            to_email=user.email,
            to_name=user.name,
            org_name=org_name,
            row_count=rows,
            download_url=download_url,
            run_id=job["run_id"],
            ttl_days=settings.download_link_ttl_days,
        )
        accepted_at = session.execute(
            select(Export.email_accepted_at).where(Export.id == job["export_id"], Export.run_id == job["run_id"])
        ).scalar_one()
        if accepted_at is not None:  # accepted before a restart: recorded, though the step was not
            sent = {"sent": True, "message_id": str(message["Message-ID"]), "skipped_reason": None}
            return sent | {"attempt": _attempt()}
        suppressed = suppression_reason(session, user.email)
        unsettled = 0 if suppressed is not None else _count_handover(session, job, +1) - 1
    if unsettled >= MAX_UNSETTLED_HANDOVERS:
        outcome = SendOutcome(
            sent=False,
            message_id=str(message["Message-ID"]),
            skipped_reason=f"not handed over again: {unsettled} earlier hand-overs were cut off before the "
            "mail server's answer was recorded, so the requester has most likely received it",
        )
    elif suppressed is not None:
        outcome = send_unless_suppressed(get_backend(settings), message, suppressed)
    else:
        outcome = _hand_over(job, run, message)
    return {
        "sent": outcome.sent,
        "message_id": outcome.message_id,
        "skipped_reason": outcome.skipped_reason,
        "attempt": _attempt(),
    }


# The mail server's answer to a counted hand-over: the count goes back down, and an acceptance
# is recorded so that a re-run of the step sends nothing.
SETTLE_HANDOVER = text(
    """UPDATE exports
       SET email_handovers = email_handovers - 1,
           email_accepted_at = CASE WHEN :accepted THEN clock_timestamp() ELSE email_accepted_at END
       WHERE id = :export_id AND run_id = :run_id"""
)


def _hand_over(job: dict[str, Any], run: dict[str, Any], message: Any) -> SendOutcome:
    """Hand the message to the mail server and record its answer in a transaction opened before
    the hand-over, so that after an acceptance one statement and a commit are all that remain."""
    refused: Exception | None = None
    with tenant_transaction(job["org_id"]) as session:
        try:
            outcome = send_unless_suppressed(get_backend(get_settings()), message, None)
        except Exception as error:  # the server answered (or the line broke): counted as not delivered
            refused = error
            session.execute(SETTLE_HANDOVER, run | {"accepted": False})
        else:
            hit("email.handed-over")
            session.execute(SETTLE_HANDOVER, run | {"accepted": outcome.sent})
    if refused is not None:
        raise refused
    hit("email.recorded")
    return outcome


def _count_handover(session: Any, job: dict[str, Any], change: int) -> int:
    return int(
        session.execute(
            update(Export)
            .where(Export.id == job["export_id"], Export.run_id == job["run_id"])
            .values(email_handovers=Export.email_handovers + change)
            .returning(Export.email_handovers)
        ).scalar_one()
    )


@tenant_write
def finalize_export(
    job: dict[str, Any], rows: int, pages: int, stored: dict[str, Any], email: dict[str, Any]
) -> dict[str, Any]:
    """Mark the row completed and audit it, in ONE tenant transaction with the step's checkpoint."""
    session = datasource().sql_session()
    set_tenant(session, job["org_id"])
    session.execute(
        update(Export)
        .where(Export.id == job["export_id"], Export.run_id == job["run_id"])
        .values(
            status="completed",
            row_count=rows,
            pages_done=pages,
            file_key=stored["key"],
            download_url=stored["download_url"],
            error=None,
            completed_at=func.now(),
        )
    )
    record(
        session,
        org_id=job["org_id"],
        actor_id=job["requested_by"],
        action="export.completed",
        target_type="export",
        target_id=job["export_id"],
        metadata={"run_id": job["run_id"], "rows": rows, "pages": pages, "bytes": stored["bytes"], "email": email},
    )
    hit("finalize.before-commit")
    return {"status": "completed", "rows": rows, "pages": pages, "file_key": stored["key"]}


@tenant_write
def fail_export(job: dict[str, Any], reason: str) -> None:
    """Mark the row failed with a readable reason and audit it, in one transaction. A row that is
    no longer this run's or was canceled meanwhile is left as it is."""
    session = datasource().sql_session()
    set_tenant(session, job["org_id"])
    failed = session.execute(
        update(Export)
        .where(Export.id == job["export_id"], Export.run_id == job["run_id"], Export.status.in_(ACTIVE))
        .values(status="failed", error=reason, completed_at=func.now())
        .returning(Export.id)
    ).scalar_one_or_none()
    if failed is None:
        return
    record(
        session,
        org_id=job["org_id"],
        actor_id=job["requested_by"],
        action="export.failed",
        target_type="export",
        target_id=job["export_id"],
        metadata={"run_id": job["run_id"], "reason": reason, "at": datetime.now(UTC).isoformat()},
    )


@DBOS.step()
def remove_files(job: dict[str, Any]) -> None:
    """Drop everything the run wrote: parts and, if assembly got that far, the final file. Only a
    failed or canceled run gets here, and its row's earlier attempts ended the same way, so
    nothing under the export's folder is worth keeping."""
    get_storage().remove_export(job["export_id"])
