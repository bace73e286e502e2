"""Request dependencies: who is signed in, which org they act on, and the CSRF check."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Form, Header, Request

from invoice_export.db.session import tenant_transaction
from invoice_export.errors import DomainError, Forbidden
from invoice_export.orgs.service import Membership, list_memberships, require_membership
from invoice_export.orgs.sessions import SignedIn, lookup_session, set_active_org

SESSION_COOKIE = "ie_session"


class SignInRequired(DomainError):
    code = "sign_in_required"
    status = 401
    title = "Sign-in required"


class NoOrganization(DomainError):
    code = "no_organization"
    status = 403
    title = "No organization"


def current_user(request: Request) -> SignedIn:
    token = request.cookies.get(SESSION_COOKIE)
    signed_in = lookup_session(token) if token else None
    if signed_in is None:
        raise SignInRequired("sign in to continue")
    return signed_in


CurrentUser = Annotated[SignedIn, Depends(current_user)]


@dataclass(frozen=True)
class MemberContext:
    user: SignedIn
    membership: Membership
    memberships: list[Membership]


def current_member(user: CurrentUser) -> MemberContext:
    """The signed-in user acting in their active org (their first org if none is chosen yet)."""
    with tenant_transaction(None, user.user_id) as session:
        memberships = list_memberships(session, user.user_id)
    if not memberships:
        raise NoOrganization("your account is not a member of any organization")
    chosen = next((m for m in memberships if m.org_id == user.active_org_id), None)
    if chosen is None:
        chosen = memberships[0]
        set_active_org(user.session_id, chosen.org_id)
    with tenant_transaction(chosen.org_id, user.user_id) as session:
        membership = require_membership(session, chosen.org_id, user.user_id)
    return MemberContext(user=user, membership=membership, memberships=memberships)


CurrentMember = Annotated[MemberContext, Depends(current_member)]


def _same(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


def csrf_form(user: CurrentUser, csrf_token: Annotated[str | None, Form()] = None) -> None:
    if not _same(user.csrf_token, csrf_token):
        raise Forbidden("the form expired or did not come from this site; reload the page and try again")


def csrf_header(user: CurrentUser, x_csrf_token: Annotated[str | None, Header()] = None) -> None:
    if not _same(user.csrf_token, x_csrf_token):
        raise Forbidden("missing or wrong X-CSRF-Token header")
