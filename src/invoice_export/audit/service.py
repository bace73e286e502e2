"""The audit trail: one row per thing that happened to a tenant's data, written in the same
transaction as the change it describes."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from invoice_export.db.models import AuditLog


def record(
    session: Session,
    *,
    org_id: str,
    actor_id: str | None,
    action: str,
    target_type: str,
    target_id: str,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Add an audit row to the caller's transaction; it commits or rolls back with the change."""
    session.add(
        AuditLog(
            organization_id=org_id,
            actor_id=actor_id,
            action=action,
            target_type=target_type,
            target_id=target_id,
            metadata_=metadata or {},
        )
    )
    session.flush()
