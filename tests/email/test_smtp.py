"""The SMTP backend against a real SMTP server (aiosmtpd) through a real worker."""

from __future__ import annotations

from sqlalchemy import text

from invoice_export.email.message import message_id_for
from invoice_export.exports.service import start_export
from tests.conftest import audit_count, invoices, make_org, wait_for_status


def test_temporary_refusals_are_retried_until_accepted(sole_worker, smtp_server) -> None:  # type: ignore[no-untyped-def]
    sole_worker(**smtp_server.env())
    org_id, user_id = make_org(invoices(7))
    smtp_server.refuse("451 4.3.0 Try again later", times=2)
    run = start_export(org_id, user_id)
    view = wait_for_status(org_id, user_id, run.run_id)
    assert view.status == "completed", view.error
    assert smtp_server.attempts == 3
    [message] = smtp_server.messages()
    assert message["Message-ID"] == message_id_for(run.run_id)  # type: ignore[index]
    assert message["X-Idempotency-Key"] == run.run_id  # type: ignore[index]
    assert message["To"] == f"Tester {org_id.removeprefix('org_t')} <t{org_id.removeprefix('org_t')}@example.com>"  # type: ignore[index]


def test_permanent_refusal_fails_the_run_with_the_servers_reason(sole_worker, smtp_server, data_dir) -> None:  # type: ignore[no-untyped-def]
    sole_worker(**smtp_server.env())
    org_id, user_id = make_org(invoices(7))
    smtp_server.refuse("550 5.1.1 Mailbox does not exist", times=5)
    run = start_export(org_id, user_id)
    view = wait_for_status(org_id, user_id, run.run_id)
    assert view.status == "failed"
    assert "550" in (view.error or "") and "Mailbox does not exist" in (view.error or "")
    assert smtp_server.attempts == 1  # a 5xx is not retried
    assert smtp_server.accepted == []
    assert audit_count("export.failed", view.export_id) == 1
    assert audit_count("export.completed", view.export_id) == 0
    assert not (data_dir / "exports" / str(view.export_id)).exists()


def test_suppressed_address_is_skipped_and_the_skip_recorded(sole_worker, smtp_server, admin_conn) -> None:  # type: ignore[no-untyped-def]
    sole_worker(**smtp_server.env())
    org_id, user_id = make_org(invoices(7))
    email = f"T{org_id.removeprefix('org_t')}@Example.com"
    admin_conn.execute(
        text("INSERT INTO email_suppressions (email, reason) VALUES (:e, 'hard bounce')"), {"e": email.lower()}
    )
    admin_conn.commit()
    run = start_export(org_id, user_id)
    view = wait_for_status(org_id, user_id, run.run_id)
    assert view.status == "completed", view.error
    assert smtp_server.attempts == 0
    metadata = admin_conn.execute(
        text("SELECT metadata FROM audit_logs WHERE action = 'export.completed' AND target_id = :t"),
        {"t": str(view.export_id)},
    ).scalar_one()
    assert metadata["email"] == {
        "sent": False,
        "message_id": message_id_for(run.run_id),
        "skipped_reason": "address suppressed: hard bounce",
        "attempt": 1,
    }
