"""The whole export path against a real worker process."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from email import policy
from email.parser import BytesParser
from pathlib import Path

from sqlalchemy import text

from invoice_export.email.message import message_id_for
from invoice_export.exports.service import start_export
from invoice_export.exports.tokens import read_download_token
from tests.conftest import make_org, wait_for_status


def _outbox(data_dir: Path, run_id: str) -> list[Path]:
    return [p for p in (data_dir / "outbox").glob("*.eml") if message_id_for(run_id).strip("<>") in p.name]


def test_acme_export_end_to_end(worker, admin_conn, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    started = start_export("org_acme", "user_alice")
    view = wait_for_status("org_acme", "user_alice", started.run_id)

    assert view.status == "completed", view.error
    assert view.row_count == 240
    assert view.attempts == 1
    data = Path(view.csv_path).read_bytes()
    assert data.startswith(b"\xef\xbb\xbfinvoice_number,status,")
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert len(rows) == 241 and rows[0][0] == "invoice_number"
    assert sum(1 for r in rows if r[0] == "invoice_number") == 1
    assert data.endswith(b"\r\n")
    db_numbers = [
        r[0]
        for r in admin_conn.execute(
            text("SELECT number FROM invoices WHERE organization_id = 'org_acme' ORDER BY issued_at, id")
        )
    ]
    assert [r[0] for r in rows[1:]] == db_numbers

    mails = _outbox(data_dir, view.run_id)
    assert len(mails) == 1
    message = BytesParser(policy=policy.default).parse(mails[0].open("rb"))
    assert message["To"] == "Alice Anders <alice@example.com>"
    assert message["Message-ID"] == message_id_for(view.run_id)
    link = re.search(r"/downloads/(\S+)", message.get_body(("plain",)).get_content())
    assert link, "the email carries the signed download link"
    grant = read_download_token(link.group(1))
    assert (grant.export_id, grant.org_id, grant.expired) == (view.export_id, "org_acme", False)
    assert message.get_body(("html",)) is not None


def test_finalize_updates_row_and_audit_in_one_transaction(worker, admin_conn) -> None:  # type: ignore[no-untyped-def]
    started = start_export("org_globex", "user_carol")
    view = wait_for_status("org_globex", "user_carol", started.run_id)
    assert view.status == "completed" and view.row_count == 212
    export_xmin = admin_conn.execute(
        text("SELECT xmin::text FROM exports WHERE id = :i"), {"i": view.export_id}
    ).scalar_one()
    audits = admin_conn.execute(
        text(
            "SELECT xmin::text, actor_id, metadata FROM audit_logs WHERE action = 'export.completed' AND target_id = :t"
        ),
        {"t": str(view.export_id)},
    ).all()
    assert len(audits) == 1
    assert audits[0].xmin == export_xmin  # written by the same transaction
    assert audits[0].actor_id == "user_carol"
    assert audits[0].metadata["rows"] == 212


def test_empty_org_fails_permanently_without_email(worker, admin_conn, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    started = start_export("org_empty", "user_frank")
    view = wait_for_status("org_empty", "user_frank", started.run_id)
    assert view.status == "failed"
    assert view.attempts == 1
    assert "no invoices" in (view.error or "")
    assert _outbox(data_dir, view.run_id) == []
    steps = admin_conn.execute(
        text(
            "SELECT count(*) FROM dbos.operation_outputs WHERE workflow_uuid = :r AND function_name LIKE '%write_page%'"
        ),
        {"r": view.run_id},
    ).scalar_one()
    assert steps == 0
    failed = admin_conn.execute(
        text("SELECT count(*) FROM audit_logs WHERE action = 'export.failed' AND target_id = :t"),
        {"t": str(view.export_id)},
    ).scalar_one()
    assert failed == 1


def test_small_pages_give_the_same_file(worker, page_size, admin_conn) -> None:  # type: ignore[no-untyped-def]
    t0 = datetime(2026, 2, 1, tzinfo=UTC)
    org_id, user_id = make_org(
        [{"issued_at": t0 + timedelta(microseconds=i // 3), "memo": f"m{i}\n,"} for i in range(23)]
    )
    page_size(4)
    started = start_export(org_id, user_id)
    view = wait_for_status(org_id, user_id, started.run_id)
    assert view.status == "completed"
    assert (view.pages_done, view.pages_total, view.row_count) == (6, 6, 23)
    rows = list(csv.reader(io.StringIO(Path(view.csv_path).read_bytes().decode("utf-8-sig"), newline="")))
    assert [r[0] for r in rows[1:]] == [f"T-{n:06d}" for n in range(1, 24)]
    pages = admin_conn.execute(
        text(
            "SELECT count(*) FROM dbos.operation_outputs WHERE workflow_uuid = :r AND function_name LIKE '%write_page%'"
        ),
        {"r": view.run_id},
    ).scalar_one()
    assert pages == 6
