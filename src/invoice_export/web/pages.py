"""HTML pages and form actions."""

from __future__ import annotations

import math
from datetime import UTC, timedelta
from pathlib import Path
from typing import Annotated
from urllib.parse import urlparse

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi import Path as Path_
from fastapi.responses import FileResponse, RedirectResponse, Response

from invoice_export.errors import LinkExpired, NotFound
from invoice_export.exports.runs import run_detail
from invoice_export.exports.schemas import ORG_ID_PATTERN
from invoice_export.exports.service import (
    get_export_for_user,
    latest_export,
    list_exports,
    member_names,
    open_download,
    open_download_by_token,
    start_export,
    utc_day,
)
from invoice_export.exports.tokens import InvalidToken, read_download_token
from invoice_export.orgs.sessions import authenticate, create_session, end_session, set_active_org
from invoice_export.orgs.throttle import ThrottleKey, record_failure, record_success, retry_after
from invoice_export.settings import get_settings
from invoice_export.web.deps import SESSION_COOKIE, CurrentMember, CurrentUser, client_address, csrf_form
from invoice_export.web.templating import templates

router = APIRouter(include_in_schema=False)


def _safe_next(target: str | None) -> str:
    """Only same-site paths: never redirect a signed-in user to another host."""
    if not target or not target.startswith("/") or target.startswith("//") or urlparse(target).netloc:
        return "/inspector"
    return target


@router.get("/")
def home() -> Response:
    return RedirectResponse("/inspector", status_code=303)


@router.get("/signin")
def signin_page(request: Request, next: str | None = None) -> Response:
    return templates.TemplateResponse(request, "signin.html", {"next": _safe_next(next), "error": None})


@router.post("/signin")
def signin(
    request: Request,
    email: Annotated[str, Form(max_length=320)],
    password: Annotated[str, Form(max_length=1024)],
    next: Annotated[str | None, Form(max_length=2048)] = None,
) -> Response:
    """Sign in and rotate the session. Repeated failures slow down further tries for the account
    and for the client address (`orgs/throttle.py`); a refused try says how long to wait."""
    settings = get_settings()
    account = ThrottleKey.account(email, settings.signin_free_failures_per_account)
    keys = [account, ThrottleKey.client(client_address(request), settings.signin_free_failures_per_client)]
    wait = retry_after(keys)
    user = authenticate(email, password) if not wait else None
    if user is None:
        if not wait:
            wait = record_failure(keys)
            error = "That email and password do not match an account."
            if wait:
                error += f" Too many failed sign-ins: wait {_duration(wait)} before trying again."
            status = 401
        else:
            error = f"Too many failed sign-ins for this account or from your network. Try again in {_duration(wait)}."
            status = 429
        refused = templates.TemplateResponse(
            request,
            "signin.html",
            {"next": _safe_next(next), "error": error, "email": email},
            status_code=status,
        )
        if wait:
            refused.headers["Retry-After"] = str(wait)
        return refused
    record_success(account)
    ttl = timedelta(hours=settings.session_ttl_hours)
    token = create_session(user.id, ttl, replaces=request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(ttl.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=settings.secure_cookies,
        path="/",
    )
    return response


def _duration(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} seconds"
    return f"{math.ceil(seconds / 60)} minutes"


@router.post("/signout", dependencies=[Depends(csrf_form)])
def signout(request: Request) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        end_session(token)
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=get_settings().secure_cookies
    )
    return response


@router.post("/orgs/active", dependencies=[Depends(csrf_form)])
def choose_org(ctx: CurrentMember, org_id: Annotated[str, Form(max_length=100)]) -> Response:
    if org_id not in {m.org_id for m in ctx.memberships}:
        raise NotFound("no such organization")
    set_active_org(ctx.user.session_id, org_id)
    return RedirectResponse("/inspector", status_code=303)


@router.get("/inspector")
def inspector(request: Request, ctx: CurrentMember) -> Response:
    """The export panel: the member's latest run, live, and the org's recent runs."""
    org_id = ctx.membership.org_id
    exports = list_exports(org_id, ctx.user.user_id, limit=8)
    latest = latest_export(org_id, ctx.user.user_id)
    return templates.TemplateResponse(
        request,
        "inspector.html",
        {
            "ctx": ctx,
            "latest": latest,
            "latest_is_today": latest is not None and latest.requested_at.astimezone(UTC).date() == utc_day(),
            "exports": exports,
            "names": member_names(org_id, ctx.user.user_id),
            "csrf_token": ctx.user.csrf_token,
        },
    )


def _status_filter(status: str | None) -> str | None:
    return status or None


@router.get("/runs")
def runs(request: Request, ctx: CurrentMember, status: str | None = None) -> Response:
    """The active org's runs, newest first, optionally only those in one state."""
    org_id = ctx.membership.org_id
    return templates.TemplateResponse(
        request,
        "runs.html",
        {
            "ctx": ctx,
            "run": None,
            "runs": list_exports(org_id, ctx.user.user_id, limit=100, status=_status_filter(status)),
            "status": _status_filter(status),
            "names": member_names(org_id, ctx.user.user_id),
            "csrf_token": ctx.user.csrf_token,
        },
    )


@router.get("/runs/table")
def runs_table(request: Request, ctx: CurrentMember, limit: Annotated[int, Query(ge=1, le=100)] = 8) -> Response:
    """The inspector's "Recent exports" table alone, fetched again when a run starts or ends."""
    org_id = ctx.membership.org_id
    return templates.TemplateResponse(
        request,
        "_runs_table.html",
        {
            "runs": list_exports(org_id, ctx.user.user_id, limit=limit),
            "names": member_names(org_id, ctx.user.user_id),
            "caption": f"Recent exports of {ctx.membership.org_name}",
            "empty": "No exports yet.",
        },
    )


@router.get("/runs/{run_id}")
def run_page(request: Request, ctx: CurrentMember, run_id: str, status: str | None = None) -> Response:
    """One run's timeline from the engine's step history, beside the list of its org's runs."""
    org_id = get_export_for_user(ctx.user.user_id, run_id).org_id
    return templates.TemplateResponse(
        request,
        "runs.html",
        {
            "ctx": ctx,
            "run": run_detail(org_id, ctx.user.user_id, run_id),
            "runs": list_exports(org_id, ctx.user.user_id, limit=100, status=_status_filter(status)),
            "status": _status_filter(status),
            "names": member_names(org_id, ctx.user.user_id),
            "csrf_token": ctx.user.csrf_token,
        },
    )


@router.get("/runs/{run_id}/timeline")
def run_timeline(request: Request, user: CurrentUser, run_id: str) -> Response:
    """The run page's summary and timeline alone, which the page fetches again as the run moves."""
    org_id = get_export_for_user(user.user_id, run_id).org_id
    return templates.TemplateResponse(
        request,
        "_run_detail.html",
        {"run": run_detail(org_id, user.user_id, run_id), "names": member_names(org_id, user.user_id)},
    )


@router.post("/exports", dependencies=[Depends(csrf_form)])
def start_export_action(
    ctx: CurrentMember, org_id: Annotated[str | None, Form(max_length=100, pattern=ORG_ID_PATTERN)] = None
) -> Response:
    """Start today's export of the active org, or of `org_id` (one of the user's orgs, which then
    becomes the active one: the expired-link page names the org the link was for)."""
    if org_id is not None and org_id != ctx.membership.org_id:
        if org_id not in {m.org_id for m in ctx.memberships}:
            raise NotFound("no such organization")
        set_active_org(ctx.user.session_id, org_id)
    view = start_export(org_id or ctx.membership.org_id, ctx.user.user_id)
    return RedirectResponse(f"/inspector?run={view.run_id}", status_code=303)


def _csv_file(path: Path, name: str) -> Response:
    return FileResponse(
        path, media_type="text/csv; charset=utf-8", filename=name, headers={"Cache-Control": "private, no-store"}
    )


@router.get("/exports/{export_id}/download")
def download(user: CurrentUser, export_id: str) -> Response:
    """The in-app link: the session's user must be allowed to see the export (`may_see`)."""
    return _csv_file(*open_download(user.user_id, export_id))


@router.get("/downloads/{token}")
def download_link(request: Request, ctx: CurrentMember, token: Annotated[str, Path_(max_length=512)]) -> Response:
    """The emailed link. Signed out: sign in first and come back. Tampered, foreign or not
    visible: 404 like an unknown export. Expired: a page that offers a fresh export."""
    try:
        grant = read_download_token(token)
    except InvalidToken:
        raise NotFound("no such export") from None
    try:
        return _csv_file(*open_download_by_token(ctx.user.user_id, grant))
    except LinkExpired as expired:
        return templates.TemplateResponse(
            request,
            "link_expired.html",
            {
                "ctx": ctx,
                "csrf_token": ctx.user.csrf_token,
                "org_id": expired.org_id,
                "org_name": expired.org_name,
                "ttl_days": get_settings().download_link_ttl_days,
            },
            status_code=expired.status,
        )
