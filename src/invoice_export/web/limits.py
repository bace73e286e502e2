"""Request bodies are checked before any route runs: too large → 413, a body of a type the
route cannot read → 415. Either way the request never reaches a handler, so nothing is written.

Forms (`application/x-www-form-urlencoded`, `multipart/form-data`) are accepted by pages, JSON by
`/api/`. A body is read at most up to the limit (a lying or missing Content-Length does not
help), then handed on unchanged.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from invoice_export.settings import get_settings
from invoice_export.web.problems import problem

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
JSON_TYPES = ("application/json",)
WITHOUT_BODY = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


class RequestLimits:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in WITHOUT_BODY:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        limit = get_settings().max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await self._refuse(request, 413, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(request, 413, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body and not self._readable(request):
            await self._refuse(request, 415, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    @staticmethod
    def _readable(request: Request) -> bool:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        accepted = JSON_TYPES if request.url.path.startswith("/api/") else FORM_TYPES
        return content_type in accepted

    @staticmethod
    async def _refuse(request: Request, status: int, send: Send) -> None:
        if status == 413:
            title = "Request too large"
            detail = f"the request body is larger than {get_settings().max_body_bytes} bytes"
            code = "body_too_large"
        else:
            accepted = JSON_TYPES if request.url.path.startswith("/api/") else FORM_TYPES
            title = "Unsupported content type"
            detail = f"send the body as {' or '.join(accepted)}"
            code = "unsupported_media_type"
        response = problem(request, status, title, detail, code)
        await response(request.scope, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
