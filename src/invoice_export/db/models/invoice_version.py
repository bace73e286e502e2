from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, Text
from sqlalchemy.orm import Mapped, mapped_column

from invoice_export.db.models.base import Base
from invoice_export.db.models.invoice import Xid8


class InvoiceVersion(Base):
    """A version of an invoice that an UPDATE or DELETE replaced, kept while an export's snapshot
    may still need it. Written only by the `invoices_keep_version` trigger; pruned by
    `invoices/repository.py:prune_versions`. No foreign keys: deleting an org cascades through
    its invoices, and their last versions must not block that."""

    __tablename__ = "invoice_versions"
    __table_args__ = (
        Index(
            "ix_invoice_versions_org_keyset",
            "organization_id",
            "issued_at",
            "id",
            postgresql_include=["version_xid", "replaced_by"],
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    version_xid: Mapped[str] = mapped_column(Xid8, primary_key=True)
    replaced_by: Mapped[str] = mapped_column(Xid8)
    organization_id: Mapped[str] = mapped_column(Text)
    number: Mapped[str] = mapped_column(Text)
    customer_name: Mapped[str] = mapped_column(Text)
    customer_email: Mapped[str] = mapped_column(Text)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text)
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    memo: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
