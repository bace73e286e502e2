"""The web process: server-rendered pages, a small JSON API, and nothing that runs workflows."""

from __future__ import annotations

from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from invoice_export.errors import DomainError
from invoice_export.web import api, pages
from invoice_export.web.deps import SignInRequired, protect_state_changes
from invoice_export.web.templating import templates

STATIC = Path(__file__).parent / "static"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or "application/json" in request.headers.get("accept", "")


def _problem(request: Request, status: int, title: str, detail: str, code: str) -> Response:
    if _wants_json(request):
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


def create_app() -> FastAPI:
    app = FastAPI(
        title="invoice-export",
        version="1",
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
        dependencies=[Depends(protect_state_changes)],
    )
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(pages.router)
    app.include_router(api.router)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):  # type: ignore[no-untyped-def]
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError) -> Response:
        if isinstance(exc, SignInRequired) and not _wants_json(request):
            return RedirectResponse(f"/signin?next={request.url.path}", status_code=303)
        return _problem(request, exc.status, exc.title, exc.detail, exc.code)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return _problem(request, 422, "Invalid input", detail, "invalid_input")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _problem(request, exc.status_code, "Request failed", str(exc.detail), f"http_{exc.status_code}")

    return app
