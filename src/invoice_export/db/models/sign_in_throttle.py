from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Integer, Text
from sqlalchemy.orm import Mapped, mapped_column

from invoice_export.db.models.base import Base


class SignInThrottle(Base):
    """Recent failed sign-ins of one account or one client address (`orgs/throttle.py`).

    `key` is a SHA-256 of "account:<email>" or "client:<address>", so the table keeps neither
    typed addresses (people type passwords into the email field) nor client IPs in clear.
    """

    __tablename__ = "sign_in_throttles"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_failure_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    blocked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
