"""One way to answer an error: problem details JSON (RFC 9457) for the API and for clients that
ask for JSON, a friendly page for browsers, a redirect to sign-in for a signed-out browser."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel

from invoice_export.web.templating import templates


class Problem(BaseModel):
    """Problem details (RFC 9457) plus a stable machine-readable `code`."""

    type: str
    title: str
    status: int
    detail: str
    code: str


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for API routes: these statuses answer with problem details."""
    return {
        status: {"model": Problem, "content": {"application/problem+json": {}}, "description": "problem details"}
        for status in statuses
    }


def wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or "application/json" in request.headers.get("accept", "")


def problem(request: Request, status: int, title: str, detail: str, code: str) -> Response:
    if wants_json(request):
        return JSONResponse(
            {"type": f"about:blank#{code}", "title": title, "status": status, "detail": detail, "code": code},
            status_code=status,
            media_type="application/problem+json",
        )
    if status == 401:
        return RedirectResponse(f"/signin?next={request.url.path}", status_code=303)
    return templates.TemplateResponse(
        request, "error.html", {"title": title, "detail": detail, "status": status}, status_code=status
    )
