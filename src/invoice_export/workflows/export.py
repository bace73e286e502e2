"""The durable export: plan → one checkpointed step per page → assemble → email → finalize.

Imported only by worker processes. Every step is safe to run again, because the step that was in
flight when a worker died is re-run on recovery; completed steps are replayed from their
checkpoints and never redone. Steps return small metadata (never rows) so checkpoints stay tiny.

Cancel is cooperative: `exports/service.py:cancel_export` marks the row canceled; the row is
checked at every page boundary (inside the page's own transaction) and before assembly, and the
run then removes its files and ends without email. Once assembly has begun the run can no longer
be canceled (the assembly step claims the row first), so a canceled run never sends an email.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from dbos import DBOS
from dbos._error import DBOSMaxStepRetriesExceeded
from sqlalchemy import func, select, update

from invoice_export.audit.service import record
from invoice_export.db.models import Export, Organization, User
from invoice_export.db.session import set_tenant, tenant_transaction
from invoice_export.email.backends import PermanentEmailError, get_backend
from invoice_export.email.message import export_ready_message
from invoice_export.email.service import send_unless_suppressed, suppression_reason
from invoice_export.errors import ExportFailed, NothingToExport
from invoice_export.exports.csv_format import BOM, HEADER
from invoice_export.exports.schemas import ExportRequest
from invoice_export.exports.storage import get_storage
from invoice_export.exports.tokens import download_url as signed_download_url
from invoice_export.failpoints import hit
from invoice_export.invoices.repository import (
    Keyset,
    Snapshot,
    count_invoices,
    current_snapshot,
    prune_versions,
    read_csv_page,
)
from invoice_export.settings import get_settings
from invoice_export.workflows.queue import PROGRESS_EVENT, WORKFLOW_NAME
from invoice_export.workflows.runtime import datasource, tenant_write

ACTIVE = ("queued", "running")


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
        _publish(plan["pages_total"], 0, 0)
        after: dict[str, Any] | None = None
        rows = pages = 0
        for page in range(1, plan["pages_total"] + 1):
            written = write_page(job, page, plan["snapshot"], after)
            if written["canceled"]:
                return _stop_canceled(job)
            hit(f"between-pages@{page}")
            if written["rows"] == 0:
                break
            pages, rows, after = page, rows + written["rows"], written["last"]
            _publish(plan["pages_total"], pages, rows)
        stored = assemble_file(job, pages)
        if stored["canceled"]:
            return _stop_canceled(job)
        hit("assembled")
        email = send_ready_email(job, rows, stored["download_url"])
        return finalize_export(job, rows, pages, stored, email)
    except ExportFailed as failure:
        fail_export(job, str(failure))
        remove_files(job)
        raise
    except Exception as failure:
        reason = _reason(failure)
        fail_export(job, reason)
        remove_files(job)
        raise ExportFailed(f"export failed: {reason}") from failure


def _reason(failure: Exception) -> str:
    """A reason a person can act on: for exhausted retries, the last underlying error."""
    if isinstance(failure, DBOSMaxStepRetriesExceeded) and failure.errors:
        last = failure.errors[-1]
        return f"{failure.step_name} failed {len(failure.errors)} times; last error: {type(last).__name__}: {last}"
    return f"{type(failure).__name__}: {failure}"


def _stop_canceled(job: dict[str, Any]) -> dict[str, Any]:
    """The row was canceled (by `cancel_export`, which also audited it): drop the files, send nothing."""
    remove_files(job)
    return {"status": "canceled"}


def _still_active(session: Any, job: dict[str, Any]) -> bool:
    """Whether this run still owns its row and has not been canceled. A cancel that commits while
    the page runs makes the page's own row update fail (REPEATABLE READ), so the page is retried
    and stops here."""
    status = session.execute(
        select(Export.status).where(Export.id == job["export_id"], Export.run_id == job["run_id"])
    ).scalar_one_or_none()
    return status in ACTIVE


def _publish(pages_total: int, pages_done: int, rows: int) -> None:
    DBOS.set_event(PROGRESS_EVENT, {"pages_total": pages_total, "pages_done": pages_done, "rows": rows})


def _attempt() -> int:
    """Which try of the running step this is (1 = first). The engine records only a step's final
    outcome, so a retrying step reports its attempt in its output for the run page."""
    status = DBOS.step_status
    return (status.current_attempt or 0) + 1 if status is not None else 1


@DBOS.step()
def plan_export(job: dict[str, Any]) -> dict[str, Any]:
    """Fix the snapshot (the invoices exactly as they are now), count them and mark the row running.

    The snapshot is recorded on the row in the same transaction, so versions it needs are kept
    until the run ends (see `prune_versions`); a re-run of this step takes a fresh snapshot, which
    is harmless because no page has been written yet.
    """
    page_size = job["page_size"]
    with tenant_transaction(job["org_id"]) as session:
        prune_versions(session, job["org_id"], keep_for_export=job["export_id"])
        snapshot = current_snapshot(session)
        snapshot_at = session.execute(select(func.now())).scalar_one()
        invoices = count_invoices(session, job["org_id"], snapshot)
        pages_total = math.ceil(invoices / page_size)
        claimed = session.execute(
            update(Export)
            .where(Export.id == job["export_id"], Export.run_id == job["run_id"], Export.status.in_(ACTIVE))
            .values(
                status="running",
                started_at=func.coalesce(Export.started_at, func.now()),
                snapshot_at=snapshot_at,
                snapshot=snapshot.text,
                pages_total=pages_total,
                pages_done=0,
            )
            .returning(Export.id)
        ).scalar_one_or_none()
    return {
        "snapshot": snapshot.as_dict(),
        "snapshot_at": snapshot_at.isoformat(),
        "invoices": invoices,
        "pages_total": pages_total,
        "canceled": claimed is None,
    }


@DBOS.step(retries_allowed=True, max_attempts=5, interval_seconds=0.5, backoff_rate=2.0)
def write_page(
    job: dict[str, Any], page: int, snapshot: dict[str, str], after: dict[str, Any] | None
) -> dict[str, Any]:
    """Read one keyset page of the snapshot as CSV, store it as part `page`, and record progress
    on the row. A re-run writes the same bytes: the snapshot and the keyset fix the page. A
    canceled row stops the run here, before the page is read."""
    with tenant_transaction(job["org_id"], isolation_level="REPEATABLE READ") as session:
        hit(f"page.read@{page}", session)
        if not _still_active(session, job):
            return {"page": page, "rows": 0, "bytes": 0, "last": None, "canceled": True}
        csv_page = read_csv_page(
            session,
            job["org_id"],
            Snapshot(**snapshot),
            Keyset(**after) if after else None,
            job["page_size"],
        )
        size = get_storage().write_part(job["export_id"], job["attempt"], page, csv_page.data)
        hit(f"page.written@{page}", session)
        session.execute(
            update(Export)
            .where(Export.id == job["export_id"], Export.run_id == job["run_id"])
            .values(pages_done=func.greatest(Export.pages_done, page))
        )
    return {
        "page": page,
        "rows": csv_page.rows,
        "bytes": size,
        "last": csv_page.last.as_dict() if csv_page.last else None,
        "canceled": False,
        "attempt": _attempt(),
    }


@DBOS.step(retries_allowed=True, max_attempts=3, interval_seconds=0.5)
def assemble_file(job: dict[str, Any], pages: int) -> dict[str, Any]:
    """Join the parts under one header into the final file, then drop the parts.

    It first claims the row (sets `file_key`) unless the run was canceled: from then on a cancel
    is refused, so the email is never sent for a canceled run."""
    storage = get_storage()
    name = f"invoices-{job['org_id']}-{job['day_bucket']}.csv"
    with tenant_transaction(job["org_id"]) as session:
        claimed = session.execute(
            update(Export)
            .where(Export.id == job["export_id"], Export.run_id == job["run_id"], Export.status.in_(ACTIVE))
            .values(file_key=f"{job['export_id']}/{name}")
            .returning(Export.id)
        ).scalar_one_or_none()
    if claimed is None:
        return {"canceled": True}
    stored = storage.assemble(job["export_id"], job["attempt"], pages, BOM + HEADER, name)
    storage.remove_parts(job["export_id"], job["attempt"])
    link = signed_download_url(job["export_id"], job["org_id"])
    return {"key": stored.key, "bytes": stored.size, "download_url": link, "canceled": False, "attempt": _attempt()}


def _is_transient(error: BaseException) -> bool:
    return not isinstance(error, PermanentEmailError)


@DBOS.step(retries_allowed=True, max_attempts=5, interval_seconds=1.0, backoff_rate=2.0, should_retry=_is_transient)
def send_ready_email(job: dict[str, Any], rows: int, download_url: str) -> dict[str, Any]:
    """Email the requester once per run. The Message-ID is derived from the run id, so the rare
    re-send after a crash (see ARCHITECTURE.md) is recognisable as the same message.

    The database work (recipient, suppression check) is done and committed before the message is
    handed over, so that after the mail server's acceptance only the step's checkpoint remains
    to be written: that is the whole duplicate window."""
    settings = get_settings()
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
        suppressed = suppression_reason(session, user.email)
    outcome = send_unless_suppressed(get_backend(settings), message, suppressed)
    hit("email.handed-over")
    return {
        "sent": outcome.sent,
        "message_id": outcome.message_id,
        "skipped_reason": outcome.skipped_reason,
        "attempt": _attempt(),
    }


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
