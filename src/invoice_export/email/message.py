"""The "your export is ready" email."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr

from jinja2 import Environment, PackageLoader, select_autoescape

_templates = Environment(
    loader=PackageLoader("invoice_export.email", "templates"),
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
)


def message_id_for(run_id: str) -> str:
    """Derived from the run id, so a re-sent copy carries the same id and receivers can drop it."""
    return f"<{run_id}@invoice-export>"


def export_ready_message(
    *,
    sender: str,
    to_email: str,
    to_name: str,
    org_name: str,
    row_count: int,
    download_url: str,
    run_id: str,
    ttl_days: int,
) -> EmailMessage:
    context = {
        "name": to_name,
        "org_name": org_name,
        "row_count": row_count,
        "download_url": download_url,
        "ttl_days": ttl_days,
    }
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = formataddr((to_name, to_email))
    msg["Subject"] = f"Your invoice export for {org_name} is ready"
    msg["Message-ID"] = message_id_for(run_id)
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["X-Idempotency-Key"] = run_id
    msg.set_content(_templates.get_template("export_ready.txt").render(context))
    msg.add_alternative(_templates.get_template("export_ready.html").render(context), subtype="html")
    return msg
