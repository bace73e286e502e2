"""Sending with the suppression list honoured."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage

from sqlalchemy import select
from sqlalchemy.orm import Session

from invoice_export.db.models import EmailSuppression
from invoice_export.email.backends import EmailBackend


@dataclass(frozen=True)
class SendOutcome:
    sent: bool
    message_id: str
    skipped_reason: str | None = None


def suppression_reason(session: Session, email: str) -> str | None:
    return session.execute(
        select(EmailSuppression.reason).where(EmailSuppression.email == email.strip().lower())
    ).scalar_one_or_none()


def send_unless_suppressed(
    session: Session, backend: EmailBackend, message: EmailMessage, to_email: str
) -> SendOutcome:
    """Send `message` unless `to_email` is on the suppression list; say which happened."""
    message_id = str(message["Message-ID"])
    reason = suppression_reason(session, to_email)
    if reason is not None:
        return SendOutcome(sent=False, message_id=message_id, skipped_reason=f"address suppressed: {reason}")
    backend.send(message)
    return SendOutcome(sent=True, message_id=message_id)
