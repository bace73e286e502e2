"""Users, organizations and memberships: who may act on which org."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from invoice_export.db.models import Member, Organization, User
from invoice_export.errors import NotAMember, UnknownOrganization, UnknownUser


@dataclass(frozen=True)
class Membership:
    org_id: str
    org_name: str
    user_id: str
    role: str

    @property
    def is_owner(self) -> bool:
        return self.role == "owner"


def get_user(session: Session, user_id: str) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise UnknownUser(f"unknown user {user_id!r}")
    return user


def require_org(session: Session, org_id: str) -> str:
    """The org's name; an unknown org is an error (the session must be scoped to `org_id`)."""
    name = session.execute(select(Organization.name).where(Organization.id == org_id)).scalar_one_or_none()
    if name is None:
        raise UnknownOrganization(f"unknown organization {org_id!r}")
    return name


def require_membership(session: Session, org_id: str, user_id: str) -> Membership:
    """The user's membership of the org. The session must be scoped to (org_id, user_id).

    Unknown org and not-a-member are distinct errors for the CLI, but both answer 404 on the web.
    """
    row = session.execute(
        select(Organization.name, Member.role)
        .join(Member, (Member.organization_id == Organization.id) & (Member.user_id == user_id), isouter=True)
        .where(Organization.id == org_id)
    ).one_or_none()
    if row is None:
        raise UnknownOrganization(f"unknown organization {org_id!r}")
    if row.role is None:
        raise NotAMember(f"user {user_id!r} is not a member of {org_id!r}")
    return Membership(org_id=org_id, org_name=row.name, user_id=user_id, role=row.role)


def list_memberships(session: Session, user_id: str) -> list[Membership]:
    """Every org the user belongs to, by name. The session must carry app.user_id = user_id."""
    rows = session.execute(
        select(Organization.id, Organization.name, Member.role)
        .join(Member, Member.organization_id == Organization.id)
        .where(Member.user_id == user_id)
        .order_by(Organization.name)
    ).all()
    return [Membership(org_id=r.id, org_name=r.name, user_id=user_id, role=r.role) for r in rows]
