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


def send_unless_suppressed(backend: EmailBackend, message: EmailMessage, suppressed: str | None) -> SendOutcome:
    """Send `message` unless its address is suppressed (`suppressed` is the reason from
    `suppression_reason`, looked up beforehand so no transaction is open while mail is handed
    over); say which happened."""
    message_id = str(message["Message-ID"])
    if suppressed is not None:
        return SendOutcome(sent=False, message_id=message_id, skipped_reason=f"address suppressed: {suppressed}")
    backend.send(message)
    return SendOutcome(sent=True, message_id=message_id)
