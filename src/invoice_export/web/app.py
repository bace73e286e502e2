"""The web process: server-rendered pages, a small JSON API, and nothing that runs workflows."""

from __future__ import annotations

import multiprocessing
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from invoice_export.db.embedded import release_embedded
from invoice_export.errors import DomainError
from invoice_export.settings import get_settings
from invoice_export.web import api, pages
from invoice_export.web.deps import SignInRequired, protect_state_changes
from invoice_export.web.limits import RequestLimits
from invoice_export.web.live import RunChanges
from invoice_export.web.problems import problem, wants_json

STATIC = Path(__file__).parent / "static"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
# Pages, API answers and files are per user: never kept by a shared cache. Static assets may be.
NO_STORE = "no-store"
HSTS = "max-age=31536000; includeSubDomains"


class SecurityHeaders:
    """The security headers on every answer, pages, API, files, streams and refusals alike. Pure
    ASGI (it only edits the response's start message), so streamed answers pass straight through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cacheable = scope["path"].startswith("/static/")
        production = get_settings().app_env == "production"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                if not cacheable:
                    headers.setdefault("Cache-Control", NO_STORE)
                if production:
                    headers.setdefault("Strict-Transport-Security", HSTS)
            await send(message)

        await self.app(scope, receive, send_with_headers)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    await app.state.run_changes.close()
    settings = get_settings()
    if settings.embedded and multiprocessing.parent_process() is not None:
        # One of several web processes (`serve --processes N`): leave the embedded server to the
        # parent, which owns it too and stops it when the last owner exits.
        release_embedded(settings.data_dir)


def create_app() -> FastAPI:
    app = FastAPI(
        title="invoice-export",
        version="1",
        lifespan=lifespan,
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
        dependencies=[Depends(protect_state_changes)],
    )
    app.state.run_changes = RunChanges()
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(pages.router)
    app.include_router(api.router)

    app.add_middleware(RequestLimits)
    app.add_middleware(SecurityHeaders)  # outermost: refusals by RequestLimits carry the headers too

    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError) -> Response:
        if isinstance(exc, SignInRequired) and not wants_json(request):
            return RedirectResponse(f"/signin?next={request.url.path}", status_code=303)
        return problem(request, exc.status, exc.title, exc.detail, exc.code)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return problem(request, 422, "Invalid input", detail, "invalid_input")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return problem(request, exc.status_code, "Request failed", str(exc.detail), f"http_{exc.status_code}")

    return app
