from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from invoice_export.errors import NotAMember, UnknownOrganization
from invoice_export.exports.service import idempotency_key, run_id_for, start_export
from tests.conftest import make_org

DAY = datetime(2026, 6, 1, 9, 30, tzinfo=UTC)


def test_same_org_user_and_day_give_the_same_run(admin_conn) -> None:  # type: ignore[no-untyped-def]
    org_id, user_id = make_org([{"issued_at": DAY}])
    first = start_export(org_id, user_id, now=DAY)
    again = start_export(org_id, user_id, now=DAY + timedelta(hours=14))
    assert again.run_id == first.run_id == run_id_for(idempotency_key(org_id, user_id, DAY.date()), 1)
    assert again.export_id == first.export_id
    rows = admin_conn.execute(text("SELECT count(*) FROM exports WHERE organization_id = :o"), {"o": org_id})
    assert rows.scalar_one() == 1
    queued = admin_conn.execute(
        text("SELECT count(*) FROM dbos.workflow_status WHERE workflow_uuid = :r"), {"r": first.run_id}
    )
    assert queued.scalar_one() == 1


def test_next_utc_day_is_a_new_run(database: str) -> None:
    org_id, user_id = make_org([{"issued_at": DAY}])
    today = start_export(org_id, user_id, now=DAY)
    tomorrow = start_export(org_id, user_id, now=DAY + timedelta(days=1))
    assert tomorrow.run_id != today.run_id
    assert tomorrow.export_id != today.export_id


def test_failed_run_is_followed_by_a_new_attempt(admin_conn) -> None:  # type: ignore[no-untyped-def]
    org_id, user_id = make_org([{"issued_at": DAY}])
    first = start_export(org_id, user_id, now=DAY)
    admin_conn.execute(
        text("UPDATE exports SET status = 'failed', error = 'boom' WHERE id = :i"), {"i": first.export_id}
    )
    admin_conn.commit()
    second = start_export(org_id, user_id, now=DAY)
    assert second.export_id == first.export_id
    assert second.run_id.endswith("-2") and second.run_id != first.run_id
    assert second.status == "queued" and second.error is None
    assert start_export(org_id, user_id, now=DAY).run_id == second.run_id


def test_start_checks_membership(database: str) -> None:
    with pytest.raises(UnknownOrganization):
        start_export("org_nope", "user_alice")
    with pytest.raises(NotAMember):
        start_export("org_globex", "user_alice")
