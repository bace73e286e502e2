"""JSON API behind the inspector. Every endpoint checks membership of the org it touches; a run
of another org answers 404 exactly like an unknown one."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from invoice_export.exports.schemas import ExportView
from invoice_export.exports.service import cancel_export_for_user, get_export_for_user, start_export
from invoice_export.web.deps import CurrentMember, csrf_header
from invoice_export.web.problems import problem_responses

router = APIRouter(prefix="/api", responses=problem_responses(401, 403, 404, 409, 413, 415, 422))


@router.post("/exports", status_code=202, dependencies=[Depends(csrf_header)])
def api_start_export(ctx: CurrentMember) -> ExportView:
    """Start (or return) today's export for the signed-in member's active org. Returns at once."""
    return start_export(ctx.membership.org_id, ctx.user.user_id)


@router.get("/exports/{run_id}")
def api_get_export(run_id: str, ctx: CurrentMember) -> ExportView:
    """The run's state: status, attempts, pages done/total, rows, link, error, timestamps."""
    return get_export_for_user(ctx.user.user_id, run_id)


@router.post("/exports/{run_id}/cancel", dependencies=[Depends(csrf_header)])
def api_cancel_export(run_id: str, ctx: CurrentMember) -> ExportView:
    """Cancel a queued or running run of one of the member's orgs. It stops at its next page
    boundary, its files are removed and no email is sent. 409 when it already finished."""
    return cancel_export_for_user(ctx.user.user_id, run_id)
