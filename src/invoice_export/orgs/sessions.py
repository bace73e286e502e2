"""Server-side sessions. The browser holds a random token; the table holds its SHA-256, the user,
the active org, a CSRF token and an expiry. Signing in always creates a new session (rotation)."""

from __future__ import annotations

import functools
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update

from invoice_export.db.models import Session as SessionRow
from invoice_export.db.models import User
from invoice_export.db.session import app_transaction, set_tenant
from invoice_export.orgs.passwords import hash_password, verify_password
from invoice_export.orgs.service import Membership, list_memberships


@dataclass(frozen=True)
class SignedIn:
    session_id: str
    user_id: str
    user_name: str
    email: str
    active_org_id: str | None
    csrf_token: str
    # Every org the user belongs to, read with the session (one transaction per request for both).
    memberships: tuple[Membership, ...] = ()


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@functools.cache
def _decoy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def authenticate(email: str, password: str) -> User | None:
    """The user with this email and password, or None. An unknown email costs the same argon2
    verification as a wrong password, so response times do not reveal which emails exist."""
    with app_transaction() as session:
        user = session.execute(select(User).where(User.email == email.strip().lower())).scalar_one_or_none()
    if user is None:
        verify_password(_decoy_hash(), password)
        return None
    if not verify_password(user.password_hash, password):
        return None
    return user


def create_session(user_id: str, ttl: timedelta, replaces: str | None = None) -> str:
    """A new session token for `user_id` (rotation: a token known before sign-in is never the
    signed-in one), acting in the user's first org until they choose another. The session it
    replaces, and the user's expired sessions, are deleted."""
    token = secrets.token_urlsafe(32)
    with app_transaction() as session:
        if replaces:
            session.execute(delete(SessionRow).where(SessionRow.id == _digest(replaces)))
        session.execute(
            delete(SessionRow).where(SessionRow.user_id == user_id, SessionRow.expires_at <= datetime.now(UTC))
        )
        set_tenant(session, None, user_id)
        first = next(iter(list_memberships(session, user_id)), None)
        session.add(
            SessionRow(
                id=_digest(token),
                user_id=user_id,
                active_org_id=first.org_id if first else None,
                csrf_token=secrets.token_urlsafe(32),
                expires_at=datetime.now(UTC) + ttl,
            )
        )
    return token


def lookup_session(token: str) -> SignedIn | None:
    """The signed-in user of `token` (None if unknown or expired) with their memberships, read
    fresh in one transaction: the memberships under the user's own RLS scope."""
    with app_transaction() as session:
        row = session.execute(
            select(SessionRow, User)
            .join(User, User.id == SessionRow.user_id)
            .where(SessionRow.id == _digest(token), SessionRow.expires_at > datetime.now(UTC))
        ).one_or_none()
        if row is None:
            return None
        s, user = row
        set_tenant(session, None, user.id)
        memberships = tuple(list_memberships(session, user.id))
    return SignedIn(
        session_id=s.id,
        user_id=user.id,
        user_name=user.name,
        email=user.email,
        active_org_id=s.active_org_id,
        csrf_token=s.csrf_token,
        memberships=memberships,
    )


def set_active_org(session_id: str, org_id: str) -> None:
    with app_transaction() as session:
        session.execute(update(SessionRow).where(SessionRow.id == session_id).values(active_org_id=org_id))


def end_session(token: str) -> None:
    with app_transaction() as session:
        session.execute(delete(SessionRow).where(SessionRow.id == _digest(token)))
