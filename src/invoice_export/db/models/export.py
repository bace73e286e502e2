from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import BigInteger, CheckConstraint, Date, DateTime, ForeignKey, Integer, Text, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from invoice_export.db.models.base import Base

EXPORT_STATUSES = ("queued", "running", "completed", "failed", "canceled")


class Export(Base):
    """One requested export per (org, requester, UTC day). A failed or canceled run may be
    started again the same day: the row keeps its id and gets a new `attempt` and `run_id`."""

    __tablename__ = "exports"
    __table_args__ = (
        UniqueConstraint("organization_id", "requested_by", "day_bucket", name="uq_exports_org_user_day"),
        CheckConstraint("status IN ('queued', 'running', 'completed', 'failed', 'canceled')", name="status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    requested_by: Mapped[str] = mapped_column(ForeignKey("users.id"))
    status: Mapped[str] = mapped_column(Text)
    run_id: Mapped[str] = mapped_column(Text, unique=True)
    attempt: Mapped[int] = mapped_column(Integer, server_default="1")
    row_count: Mapped[int | None] = mapped_column(Integer)
    idempotency_key: Mapped[str] = mapped_column(Text)
    day_bucket: Mapped[date] = mapped_column(Date)
    pages_done: Mapped[int] = mapped_column(Integer, server_default="0")
    pages_total: Mapped[int | None] = mapped_column(Integer)
    # Live while the run writes pages (see ExportPart); row_count is set when it completes.
    rows_written: Mapped[int] = mapped_column(BigInteger, server_default="0")
    snapshot_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The run's pg_snapshot (text form): the invoices it exports, and the versions it still needs.
    snapshot: Mapped[str | None] = mapped_column(Text)
    file_key: Mapped[str | None] = mapped_column(Text)
    # Hand-overs of the ready email whose outcome never reached the step (migration 0005).
    email_handovers: Mapped[int] = mapped_column(Integer, server_default="0")
    # When the mail server accepted this attempt's ready email (migration 0006).
    email_accepted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    download_url: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
