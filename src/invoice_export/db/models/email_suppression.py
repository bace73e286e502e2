from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from invoice_export.db.models.base import Base


class EmailSuppression(Base):
    """Addresses we must not email (bounced, complained, unsubscribed). Global, not per tenant:
    an address that hard-bounced does so for every organization."""

    __tablename__ = "email_suppressions"

    email: Mapped[str] = mapped_column(Text, primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
