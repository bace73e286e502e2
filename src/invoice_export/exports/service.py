"""Starting exports and reading their state. Used by the web process and the CLI; neither
imports workflow code."""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Select, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from invoice_export.db.models import EXPORT_STATUSES, Export, Member, User
from invoice_export.db.session import tenant_transaction
from invoice_export.errors import Conflict, InvalidInput, LinkExpired, NotFound
from invoice_export.exports.schemas import RUN_ID_PATTERN, ExportRequest, ExportView
from invoice_export.exports.storage import get_storage
from invoice_export.exports.tokens import DownloadGrant
from invoice_export.orgs.service import Membership, list_memberships, require_membership, require_org
from invoice_export.settings import get_settings
from invoice_export.workflows.queue import engine_client, enqueue_options

RESTARTABLE = ("failed", "canceled")
ENGINE_STATUS = {"CANCELLED": "canceled", "ERROR": "failed", "MAX_RECOVERY_ATTEMPTS_EXCEEDED": "failed"}


def utc_day(now: datetime | None = None) -> date:
    return (now or datetime.now(UTC)).astimezone(UTC).date()


def idempotency_key(org_id: str, user_id: str, day: date) -> str:
    """One export per (org, requester, UTC day): the same three always give the same key."""
    return hashlib.sha256(f"{org_id}\x1f{user_id}\x1f{day.isoformat()}".encode()).hexdigest()


def run_id_for(key: str, attempt: int) -> str:
    """The workflow id: the engine runs a given id once, so enqueueing it twice is harmless."""
    return f"exp-{key[:16]}-{attempt}"


def start_export(org_id: str, user_id: str, *, now: datetime | None = None) -> ExportView:
    """Start today's export of `org_id` for `user_id`, or return the one already started.

    Guarantees: membership is checked first; concurrent starts with the same key yield one row
    and one run (the unique key plus a row lock); the row and the queued run commit together in
    one transaction; a failed or canceled run is followed by a new attempt with a new run id.
    Returns without waiting for the run.
    """
    day = utc_day(now)
    key = idempotency_key(org_id, user_id, day)
    settings = get_settings()
    with tenant_transaction(org_id, user_id) as session:
        require_membership(session, org_id, user_id)
        # A click again: today's run exists and is not to be restarted. Answered by reading
        # alone, with no lock and nothing written.
        existing = session.execute(_todays_export(org_id, user_id, day)).scalar_one_or_none()
        if existing is not None and existing.status not in RESTARTABLE:
            return _view(existing, engine_status=None)
        export = session.scalars(
            insert(Export)
            .values(
                id=uuid.uuid4(),
                organization_id=org_id,
                requested_by=user_id,
                status="queued",
                run_id=run_id_for(key, 1),
                attempt=1,
                idempotency_key=key,
                day_bucket=day,
            )
            # No arbiter named: a concurrent first start may collide on the run id's unique
            # index before the (org, user, day) one, and that is the same row too.
            .on_conflict_do_nothing()
            .returning(Export)
        ).one_or_none()
        if export is None:
            # A concurrent start inserted it first, or it is a failed or canceled run: decide
            # under the row lock, on the row as it is now.
            export = session.execute(
                _todays_export(org_id, user_id, day).with_for_update().execution_options(populate_existing=True)
            ).scalar_one()
            if export.status not in RESTARTABLE:
                return _view(export, engine_status=None)
            _begin_new_attempt(export, key)
        request = ExportRequest(
            export_id=export.id,
            org_id=org_id,
            requested_by=user_id,
            run_id=export.run_id,
            attempt=export.attempt,
            day_bucket=day,
            page_size=settings.export_page_size,
            page_concurrency=settings.export_page_concurrency,
        )
        session.flush()
        engine_client().enqueue_in_transaction(
            session.connection(),
            enqueue_options(export.run_id, org_id),  # type: ignore[arg-type]
            request.model_dump(mode="json"),
        )
        return _view(export, engine_status=None)


def _todays_export(org_id: str, user_id: str, day: date) -> Select[Export]:
    return select(Export).where(
        Export.organization_id == org_id, Export.requested_by == user_id, Export.day_bucket == day
    )


def _begin_new_attempt(export: Export, key: str) -> None:
    export.attempt += 1
    export.run_id = run_id_for(key, export.attempt)
    export.status = "queued"
    export.pages_done = 0
    export.pages_total = None
    export.rows_written = 0
    export.email_handovers = 0
    export.email_accepted_at = None
    export.row_count = None
    export.error = None
    export.file_key = None
    export.download_url = None
    export.snapshot_at = None
    export.snapshot = None
    export.started_at = None
    export.completed_at = None
    export.requested_at = datetime.now(UTC)


def check_run_id(run_id: str) -> str:
    if not re.fullmatch(RUN_ID_PATTERN, run_id):
        raise InvalidInput(f"malformed run id {run_id!r}: expected exp-<16 hex>-<attempt>")
    return run_id


def find_export(session: Session, org_id: str, run_id: str) -> Export:
    export = session.execute(
        select(Export).where(Export.organization_id == org_id, Export.run_id == run_id)
    ).scalar_one_or_none()
    if export is None:
        raise NotFound(f"no export run {run_id!r} in this organization")
    return export


def get_export(org_id: str, user_id: str, run_id: str) -> ExportView:
    """The run's state from its row and the workflow engine, for a member of its org who may see it."""
    check_run_id(run_id)
    with tenant_transaction(org_id, user_id) as session:
        membership = require_membership(session, org_id, user_id)
        export = find_export(session, org_id, run_id)
        if not may_see(membership, export):
            raise NotFound(f"no export run {run_id!r} in this organization")
    return _view(export, engine_status=engine_status(run_id))


def may_see(membership: Membership, export: Export) -> bool:
    """Who sees an export: an owner sees every export of the org, a member only their own.

    Everything that shows or serves an export (pages, API, downloads, emailed links) asks this,
    and an export the user may not see is answered exactly like an unknown one.
    """
    return export.organization_id == membership.org_id and (
        membership.is_owner or export.requested_by == membership.user_id
    )


def _visible_to(membership: Membership) -> ColumnElement[bool]:
    """`may_see` as a filter, for lists."""
    in_org = Export.organization_id == membership.org_id
    return in_org if membership.is_owner else in_org & (Export.requested_by == membership.user_id)


def find_export_by_run_id(run_id: str) -> tuple[str, str]:
    """(org_id, requested_by) of a run, for the operator CLI, which runs as the database owner."""
    from invoice_export.db.session import admin_engine

    check_run_id(run_id)
    with Session(admin_engine()) as session:
        row = session.execute(
            select(Export.organization_id, Export.requested_by).where(Export.run_id == run_id)
        ).one_or_none()
    if row is None:
        raise NotFound(f"no export run {run_id!r}")
    return row.organization_id, row.requested_by


def cancel_export(org_id: str, run_id: str, *, actor_id: str | None, via: str) -> ExportView:
    """Cancel a queued or running run of `org_id`; callers have checked who may do so.

    The row becomes canceled and `export.canceled` is audited in one transaction, under the row
    lock. The worker sees the row at its next page boundary, removes the run's files and ends
    without email (`workflows/export.py`). Canceling a canceled run returns it unchanged; a
    completed or failed run, or one whose file is already being assembled, cannot be canceled.
    """
    from invoice_export.audit.service import record

    check_run_id(run_id)
    with tenant_transaction(org_id, actor_id) as session:
        export = session.execute(
            select(Export).where(Export.organization_id == org_id, Export.run_id == run_id).with_for_update()
        ).scalar_one_or_none()
        if export is None:
            raise NotFound(f"no export run {run_id!r}")
        if export.status in ("completed", "failed"):
            raise Conflict(f"run {run_id} is already {export.status}; there is nothing to cancel")
        if export.status == "queued" or (export.status == "running" and export.file_key is None):
            export.status = "canceled"
            export.error = f"canceled by {actor_id or 'an operator'}"
            export.completed_at = datetime.now(UTC)
            record(
                session,
                org_id=org_id,
                actor_id=actor_id,
                action="export.canceled",
                target_type="export",
                target_id=str(export.id),
                metadata={"run_id": run_id, "via": via, "pages_done": export.pages_done},
            )
        elif export.status == "running":
            raise Conflict(f"run {run_id} is already assembling its file; it can no longer be canceled")
    return _view(export, engine_status=engine_status(run_id))


def cancel_export_for_user(user_id: str, run_id: str) -> ExportView:
    """Cancel a run the user may see (`may_see`: an owner any run of the org, a member their own);
    any other run is reported exactly like an unknown one."""
    check_run_id(run_id)
    for membership in _memberships(user_id):
        with tenant_transaction(membership.org_id, user_id) as session:
            found = session.execute(
                select(Export.id).where(_visible_to(membership), Export.run_id == run_id)
            ).scalar_one_or_none()
        if found is not None:
            return cancel_export(membership.org_id, run_id, actor_id=user_id, via="api")
    raise NotFound(f"no export run {run_id!r}")


def list_exports(org_id: str, user_id: str, limit: int = 20, status: str | None = None) -> list[ExportView]:
    """The org's recent exports that this user may see (see `may_see`), newest first; `status`
    keeps only runs in that state."""
    if status is not None and status not in EXPORT_STATUSES:
        raise InvalidInput(f"unknown status {status!r}: expected one of {', '.join(EXPORT_STATUSES)}")
    with tenant_transaction(org_id, user_id) as session:
        membership = require_membership(session, org_id, user_id)
        query = select(Export).where(_visible_to(membership))
        if status is not None:
            query = query.where(Export.status == status)
        exports = session.execute(query.order_by(Export.requested_at.desc()).limit(limit)).scalars()
        return [_view(export, engine_status=None) for export in exports]


def latest_export(org_id: str, user_id: str) -> ExportView | None:
    """The user's own newest export in the org, with the engine's view of it (attempts, rows
    written so far), for the inspector's panel."""
    with tenant_transaction(org_id, user_id) as session:
        require_membership(session, org_id, user_id)
        export = session.execute(
            select(Export)
            .where(Export.organization_id == org_id, Export.requested_by == user_id)
            .order_by(Export.requested_at.desc())
            .limit(1)
        ).scalar_one_or_none()
    return _view(export, engine_status=engine_status(export.run_id)) if export is not None else None


def member_names(org_id: str, user_id: str) -> dict[str, str]:
    """Display names of the org's members by user id, for "who" columns."""
    with tenant_transaction(org_id, user_id) as session:
        rows = session.execute(
            select(User.id, User.name).join(Member, Member.user_id == User.id).where(Member.organization_id == org_id)
        ).all()
    return {row.id: row.name for row in rows}


def engine_status(run_id: str) -> dict[str, Any] | None:
    """The workflow engine's view of a run (status, start attempts, error), if it knows the run.
    Progress is not read here: the run's pages count it on the row."""
    found = engine_client().list_workflows(workflow_ids=[run_id], load_input=False, load_output=False)
    if not found:
        return None
    status = found[0]
    return {
        "status": status.status,
        "attempts": status.recovery_attempts or 0,
        "error": str(status.error) if status.error else None,
        "executor_id": status.executor_id,
    }


def _view(export: Export, engine_status: dict[str, Any] | None) -> ExportView:
    status = export.status
    error = export.error
    attempts = 0
    if engine_status is not None:
        attempts = engine_status["attempts"]
        if status in ("queued", "running") and engine_status["status"] in ENGINE_STATUS:
            status = ENGINE_STATUS[engine_status["status"]]
            error = error or engine_status["error"]
    path = get_storage().local_path(export.file_key) if export.file_key else None
    return ExportView(
        run_id=export.run_id,
        export_id=export.id,
        org_id=export.organization_id,
        requested_by=export.requested_by,
        status=status,  # type: ignore[arg-type]
        attempts=attempts,
        pages_done=export.pages_done,
        pages_total=export.pages_total,
        row_count=export.row_count,
        rows_written=export.row_count if export.row_count is not None else export.rows_written,
        csv_path=str(path) if path else None,
        download_url=export.download_url,
        error=error,
        requested_at=export.requested_at,
        started_at=export.started_at,
        completed_at=export.completed_at,
    )


def list_org_exports(org_id: str, limit: int = 50) -> list[ExportView]:
    """The org's runs for the operator CLI (no member check: the CLI runs with database access).
    An unknown org is an error, not an empty list."""
    with tenant_transaction(org_id) as session:
        require_org(session, org_id)
        exports = session.execute(
            select(Export).where(Export.organization_id == org_id).order_by(Export.requested_at.desc()).limit(limit)
        ).scalars()
        return [_view(export, engine_status=None) for export in exports]


def open_download(user_id: str, export_id: str) -> tuple[Path, str]:
    """The finished file of `export_id` and its download name, for a user who may see it.

    The export is looked up in each of the user's orgs in turn (RLS hides the others), so an id
    from an org the user is not in, or another member's export, is indistinguishable from an
    unknown id. Every download is audited.
    """
    try:
        wanted = uuid.UUID(export_id)
    except ValueError:
        raise InvalidInput(f"malformed export id {export_id!r}: expected a UUID") from None
    for membership in _memberships(user_id):
        found = _serve_file(membership, wanted, via="app")
        if found is not None:
            return found
    raise NotFound("no such export")


def open_download_by_token(user_id: str, grant: DownloadGrant) -> tuple[Path, str]:
    """The file an emailed link points to, for a signed-in user who may see that export of that org.

    The token binds export AND org: both must match one row, and the user must be a member who
    may see it; otherwise NotFound, as for an unknown export. An expired link is refused with
    `LinkExpired` only after the same checks, so it reveals nothing to anyone else.
    """
    membership = next((m for m in _memberships(user_id) if m.org_id == grant.org_id), None)
    if membership is None:
        raise NotFound("no such export")
    if grant.expired:
        with tenant_transaction(membership.org_id, user_id) as session:
            export = session.get(Export, grant.export_id)
            if export is None or not may_see(membership, export):
                raise NotFound("no such export")
        raise LinkExpired(membership.org_id, membership.org_name)
    found = _serve_file(membership, grant.export_id, via="email_link")
    if found is None:
        raise NotFound("no such export")
    return found


def _serve_file(membership: Membership, export_id: uuid.UUID, via: str) -> tuple[Path, str] | None:
    from invoice_export.audit.service import record

    with tenant_transaction(membership.org_id, membership.user_id) as session:
        export = session.execute(
            select(Export).where(_visible_to(membership), Export.id == export_id)
        ).scalar_one_or_none()
        if export is None:
            return None
        if export.status != "completed" or export.file_key is None:
            raise Conflict("this export has no file yet")
        path = get_storage().local_path(export.file_key)
        if path is None or not path.exists():
            raise NotFound("the export file is no longer stored; start a new export")
        record(
            session,
            org_id=membership.org_id,
            actor_id=membership.user_id,
            action="export.downloaded",
            target_type="export",
            target_id=str(export.id),
            metadata={"run_id": export.run_id, "via": via},
        )
        return path, path.name


def _memberships(user_id: str) -> list[Membership]:
    with tenant_transaction(None, user_id) as session:
        return list_memberships(session, user_id)


def get_export_for_user(user_id: str, run_id: str) -> ExportView:
    """A run of any org the user belongs to, if they may see it (`may_see`); any other run,
    of another org or another member, is reported exactly like an unknown one."""
    check_run_id(run_id)
    for membership in _memberships(user_id):
        with tenant_transaction(membership.org_id, user_id) as session:
            export = session.execute(
                select(Export).where(_visible_to(membership), Export.run_id == run_id)
            ).scalar_one_or_none()
        if export is not None:
            return _view(export, engine_status=engine_status(run_id))
    raise NotFound(f"no export run {run_id!r}")
