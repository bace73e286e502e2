"""How mail leaves the process. `file` (the default) drops each message into `<data dir>/outbox/`
as an .eml file named after its Message-ID, so writing the same message twice leaves one file.
`smtp` hands it to a mail server."""

from __future__ import annotations

import os
import re
import smtplib
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

from invoice_export.settings import Settings


class PermanentEmailError(Exception):
    """The mail server refused the message for good (5xx); retrying will not help."""


class EmailBackend(Protocol):
    def send(self, message: EmailMessage) -> None: ...


class FileBackend:
    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox

    def path_for_id(self, message_id: str) -> Path:
        stem = re.sub(r"[^A-Za-z0-9_.@-]", "_", message_id.strip("<>"))
        return self.outbox / f"{stem}.eml"

    def send(self, message: EmailMessage) -> None:
        self.outbox.mkdir(parents=True, exist_ok=True)
        path = self.path_for_id(str(message["Message-ID"]))
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(message.as_bytes())
        os.replace(tmp, path)


class SmtpBackend:
    """Hands the message to an SMTP server. 5xx refusals raise `PermanentEmailError` (not
    retried); 4xx refusals and connection errors propagate and are retried by the step. The
    message carries `X-Idempotency-Key: <run id>` for relays and providers that de-duplicate on
    it, and a Message-ID derived from the run id."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def send(self, message: EmailMessage) -> None:
        s = self.settings
        try:
            smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_seconds)
            try:
                if s.smtp_starttls:
                    smtp.starttls()
                if s.smtp_username:
                    smtp.login(s.smtp_username, s.smtp_password or "")
                smtp.send_message(message)
            finally:
                # No QUIT round trip: the server's reply to DATA already made the message its
                # responsibility, and every moment after it widens the duplicate window.
                smtp.close()
        except smtplib.SMTPRecipientsRefused as exc:
            codes = {code for code, _ in exc.recipients.values()}
            if all(500 <= code < 600 for code in codes):
                raise PermanentEmailError(f"mail server refused the recipient: {exc.recipients}") from exc
            raise
        except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as exc:
            if 500 <= exc.smtp_code < 600:
                raise PermanentEmailError(
                    f"mail server refused the message: {exc.smtp_code} {exc.smtp_error!r}"
                ) from exc
            raise


def get_backend(settings: Settings) -> EmailBackend:
    if settings.email_backend == "smtp":
        return SmtpBackend(settings)
    return FileBackend(settings.data_dir / "outbox")
