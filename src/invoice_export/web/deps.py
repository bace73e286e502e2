"""Request dependencies: who is signed in, which org they act on, and the CSRF checks.

CSRF has two layers. Every state-changing request (any method but GET/HEAD/OPTIONS) passes the
app-wide `protect_state_changes`: a browser's cross-site request (Origin of another site,
`Sec-Fetch-Site: cross-site`) is refused, which also covers the sign-in form; and a signed-in
action must carry the session's CSRF token, as the `csrf_token` form field or the X-CSRF-Token
header. Routes still declare `csrf_form`/`csrf_header`, so the token is visible in their
signature and in the API schema; the app-wide check catches a route that forgets.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlparse

from fastapi import Depends, Form, Header, Request
from starlette.concurrency import run_in_threadpool

from invoice_export.errors import DomainError, Forbidden
from invoice_export.orgs.service import Membership
from invoice_export.orgs.sessions import SignedIn, lookup_session, set_active_org
from invoice_export.settings import get_settings

SESSION_COOKIE = "ie_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Sign-in creates the session, so it has no session token to check; the Origin check covers it.
NO_SESSION_NEEDED = frozenset({"/signin"})


class SignInRequired(DomainError):
    code = "sign_in_required"
    status = 401
    title = "Sign-in required"


class NoOrganization(DomainError):
    code = "no_organization"
    status = 403
    title = "No organization"


def client_address(request: Request) -> str:
    """The peer address as the server sees it (behind a proxy, run uvicorn with --proxy-headers)."""
    return request.client.host if request.client else "unknown"


async def _signed_in(request: Request) -> SignedIn | None:
    """The request's session (with the user's memberships), looked up once per request."""
    if not hasattr(request.state, "signed_in"):
        token = request.cookies.get(SESSION_COOKIE)
        request.state.signed_in = await run_in_threadpool(lookup_session, token) if token else None
    signed_in: SignedIn | None = request.state.signed_in
    return signed_in


async def current_user(request: Request) -> SignedIn:
    signed_in = await _signed_in(request)
    if signed_in is None:
        raise SignInRequired("sign in to continue")
    return signed_in


CurrentUser = Annotated[SignedIn, Depends(current_user)]


@dataclass(frozen=True)
class MemberContext:
    user: SignedIn
    membership: Membership
    memberships: list[Membership]


async def current_member(user: CurrentUser) -> MemberContext:
    """The signed-in user acting in their active org (their first org if none is chosen yet).
    The memberships were read fresh with the session, for this request; whatever the request
    then does in that org checks membership again in its own transaction (the services do)."""
    memberships = list(user.memberships)
    if not memberships:
        raise NoOrganization("your account is not a member of any organization")
    chosen = next((m for m in memberships if m.org_id == user.active_org_id), None)
    if chosen is None:
        chosen = memberships[0]
        await run_in_threadpool(set_active_org, user.session_id, chosen.org_id)
    return MemberContext(user=user, membership=chosen, memberships=memberships)


CurrentMember = Annotated[MemberContext, Depends(current_member)]


def _same(expected: str, given: object) -> bool:
    return isinstance(given, str) and hmac.compare_digest(expected.encode(), given.encode())


async def csrf_form(user: CurrentUser, csrf_token: Annotated[str | None, Form(max_length=100)] = None) -> None:
    if not _same(user.csrf_token, csrf_token):
        raise Forbidden("the form expired or did not come from this site; reload the page and try again")


async def csrf_header(user: CurrentUser, x_csrf_token: Annotated[str | None, Header(max_length=100)] = None) -> None:
    if not _same(user.csrf_token, x_csrf_token):
        raise Forbidden("missing or wrong X-CSRF-Token header")


def _cross_site(request: Request) -> bool:
    if request.headers.get("sec-fetch-site") == "cross-site":
        return True
    origin = request.headers.get("origin")
    if origin is None:
        return False
    allowed = {request.headers.get("host"), urlparse(get_settings().public_base_url).netloc}
    return urlparse(origin).netloc not in allowed


async def protect_state_changes(request: Request) -> None:
    """The app-wide CSRF check described in the module docstring."""
    if request.method in SAFE_METHODS:
        return
    if _cross_site(request):
        raise Forbidden("cross-site request refused")
    if request.url.path in NO_SESSION_NEEDED:
        return
    signed_in = await _signed_in(request)
    if signed_in is None:
        raise SignInRequired("sign in to continue")
    given: object = request.headers.get(CSRF_HEADER)
    content_type = request.headers.get("content-type", "")
    if given is None and content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        given = (await request.form()).get(CSRF_FIELD)
    if not _same(signed_in.csrf_token, given):
        raise Forbidden("the form expired or did not come from this site; reload the page and try again")
