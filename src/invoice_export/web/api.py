"""JSON API behind the inspector. Every endpoint checks membership of the org it touches; a run
of another org answers 404 exactly like an unknown one."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from invoice_export.exports.schemas import ExportView
from invoice_export.exports.service import cancel_export_for_user, get_export, get_export_for_user, start_export
from invoice_export.web.deps import CurrentMember, CurrentUser, csrf_header
from invoice_export.web.live import RunChanges, wait_for_change
from invoice_export.web.problems import problem_responses

router = APIRouter(prefix="/api", responses=problem_responses(401, 403, 404, 409, 413, 415, 422))

TERMINAL = ("completed", "failed", "canceled")
# Tells the browser how soon to reconnect a dropped stream (milliseconds).
RECONNECT_MS = 2000


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


@router.get("/exports/{run_id}/events", response_class=EventSourceResponse)
async def api_export_events(run_id: str, request: Request, user: CurrentUser) -> EventSourceResponse:
    """Server-Sent Events: an `export` event with the run's view (the JSON of GET
    /api/exports/{run_id}) now and whenever it changes; the stream ends after a final state.

    The first read happens before the stream opens, so a malformed, unknown or foreign run
    answers 422/404 like the JSON endpoint. Membership is checked again on every read, so a
    member removed from the org stops receiving events.
    """
    view = await run_in_threadpool(get_export_for_user, user.user_id, run_id)
    return EventSourceResponse(_changes(request, user.user_id, view), ping=15)


async def _changes(request: Request, user_id: str, view: ExportView) -> AsyncIterator[ServerSentEvent]:
    """The run's view now and after every change of its row (`web/live.py`), until it ends."""
    changes: RunChanges = request.app.state.run_changes
    async with changes.watch(view.run_id) as changed:
        changed.set()  # one more read once watching: nothing falls between the first read and the watch
        sent = None
        while True:
            body = view.model_dump_json()
            if body != sent:
                yield ServerSentEvent(data=body, event="export", retry=RECONNECT_MS)
                sent = body
            if view.status in TERMINAL or await request.is_disconnected():
                return
            await wait_for_change(changed)
            view = await run_in_threadpool(get_export, view.org_id, user_id, view.run_id)
