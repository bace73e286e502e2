from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import UserDefinedType

from invoice_export.db.models.base import Base


class Xid8(UserDefinedType[str]):
    """PostgreSQL's 64-bit transaction id; read and written as its decimal text."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "XID8"


class Invoice(Base):
    __tablename__ = "invoices"
    __table_args__ = (
        UniqueConstraint("organization_id", "number"),
        # The export's keyset: pages are read in (issued_at, id) order within one org.
        # The version travels in the index so that finding a page's end stays an index-only walk.
        Index("ix_invoices_org_keyset", "organization_id", "issued_at", "id", postgresql_include=["version_xid"]),
        # Years 1 to 9999 (UTC) only (migration 0007): the export pages and prints them as ISO 8601.
        CheckConstraint(
            "issued_at >= '0001-01-01 00:00:00+00' AND issued_at < '10000-01-01 00:00:00+00'",
            name="issued_at_is_a_real_date",
        ),
        CheckConstraint(
            "due_at IS NULL OR (due_at >= '0001-01-01 00:00:00+00' AND due_at < '10000-01-01 00:00:00+00')",
            name="due_at_is_a_real_date",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    number: Mapped[str] = mapped_column(Text)
    customer_name: Mapped[str] = mapped_column(Text)
    customer_email: Mapped[str] = mapped_column(Text)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(ForeignKey("currencies.code"))
    status: Mapped[str] = mapped_column(Text)
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    memo: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # The transaction that wrote this version; set by the `invoices_keep_version` trigger.
    version_xid: Mapped[str] = mapped_column(Xid8, server_default=text("pg_current_xact_id()"))
