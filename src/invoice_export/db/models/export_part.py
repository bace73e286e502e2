from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, Text, func
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from invoice_export.db.models.base import Base


class ExportPart(Base):
    """One written page of one attempt of an export. Recorded in the page's own transaction, once:
    the primary key makes a re-run of the page (its worker died before the engine recorded the
    step) count nothing twice, which keeps the row's `pages_done` and `rows_written` exact even
    when pages are written concurrently."""

    __tablename__ = "export_parts"

    export_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("exports.id", ondelete="CASCADE"), primary_key=True
    )
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    page: Mapped[int] = mapped_column(Integer, primary_key=True)
    organization_id: Mapped[str] = mapped_column(Text)
    rows: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(BigInteger)
    written_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
