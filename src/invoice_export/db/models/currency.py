from __future__ import annotations

from sqlalchemy import SmallInteger, Text
from sqlalchemy.orm import Mapped, mapped_column

from invoice_export.db.models.base import Base


class Currency(Base):
    """ISO 4217 codes with their minor-unit exponent, so amounts stored in minor units can be
    written as exact decimals (JPY 0 places, EUR 2, KWD 3)."""

    __tablename__ = "currencies"

    code: Mapped[str] = mapped_column(Text, primary_key=True)
    exponent: Mapped[int] = mapped_column(SmallInteger)
