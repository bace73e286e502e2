"""All tables, one module each. Importing this package registers them on `Base.metadata`."""

from invoice_export.db.models.audit_log import AuditLog
from invoice_export.db.models.base import Base
from invoice_export.db.models.currency import Currency
from invoice_export.db.models.email_suppression import EmailSuppression
from invoice_export.db.models.export import EXPORT_STATUSES, Export
from invoice_export.db.models.export_part import ExportPart
from invoice_export.db.models.invoice import Invoice
from invoice_export.db.models.invoice_version import InvoiceVersion
from invoice_export.db.models.member import Member
from invoice_export.db.models.organization import Organization
from invoice_export.db.models.session import Session
from invoice_export.db.models.sign_in_throttle import SignInThrottle
from invoice_export.db.models.user import User

__all__ = [
    "EXPORT_STATUSES",
    "AuditLog",
    "Base",
    "Currency",
    "EmailSuppression",
    "Export",
    "ExportPart",
    "Invoice",
    "InvoiceVersion",
    "Member",
    "Organization",
    "Session",
    "SignInThrottle",
    "User",
]
