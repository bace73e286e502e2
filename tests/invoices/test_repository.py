from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from invoice_export.db.session import admin_engine, set_tenant, tenant_transaction
from invoice_export.invoices.repository import (
    Keyset,
    Snapshot,
    current_snapshot,
    plan_pages,
    prune_versions,
    read_csv_page,
)
from tests.conftest import make_org

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def _plan(org_id: str, snapshot: Snapshot, page_size: int) -> list[Keyset]:
    with tenant_transaction(org_id) as session:
        plan = plan_pages(session, org_id, snapshot, page_size)
    assert len(plan.ends) == -(-plan.invoices // page_size)
    return plan.ends


def _all_pages(
    org_id: str, page_size: int, snapshot: Snapshot, between_pages: Callable[[int], None] = lambda _: None
) -> list[list[str]]:
    """Plan the pages of `snapshot`, then read them one transaction each, as the export does."""
    ends = _plan(org_id, snapshot, page_size)
    rows: list[list[str]] = []
    for n, last in enumerate(ends):
        with tenant_transaction(org_id) as session:
            page = read_csv_page(session, org_id, snapshot, ends[n - 1] if n else None, last, page_size)
        parsed = list(csv.reader(io.StringIO(page.data.decode(), newline="")))
        assert len(parsed) == page.rows
        assert page.rows == page_size or n == len(ends) - 1
        rows.extend(parsed)
        between_pages(n)
    return rows


def _snapshot(org_id: str) -> Snapshot:
    with tenant_transaction(org_id) as session:
        return current_snapshot(session)


@pytest.mark.parametrize("page_size", [1, 2, 3, 7, 100])
def test_keyset_pages_cover_ties_and_microseconds_exactly_once(database: str, page_size: int) -> None:
    # Groups of identical issue times, neighbours one microsecond apart, inserted out of order.
    times = (
        [T0] * 4
        + [T0 + timedelta(microseconds=1)] * 3
        + [T0 - timedelta(microseconds=1)]
        + [T0 + timedelta(days=1)] * 2
    )
    order = [5, 0, 9, 3, 8, 1, 7, 2, 6, 4]
    org_id, _ = make_org([{"number": f"N{i:02d}", "issued_at": times[i]} for i in order])

    rows = _all_pages(org_id, page_size, _snapshot(org_id))

    numbers = [r[0] for r in rows]
    assert sorted(numbers) == [f"N{i:02d}" for i in range(10)]
    assert len(set(numbers)) == 10
    issued = [r[6] for r in rows]
    assert issued == sorted(issued)
    assert issued[0] == "2026-03-01T11:59:59.999999+00:00"
    assert issued[-1] == "2026-03-02T12:00:00.000000+00:00"


def _write(org_id: str, *statements: str, **params: object) -> None:
    """One committed transaction by the tables' owner, as the app's writers would do."""
    with Session(admin_engine()) as session, session.begin():
        set_tenant(session, org_id)
        for sql in statements:
            session.execute(text(sql), {"org": org_id} | params)


def test_pages_keep_the_snapshot_while_rows_move_change_and_disappear(database: str) -> None:
    org_id, _ = make_org(
        [{"number": f"N{i:02d}", "issued_at": T0 + timedelta(minutes=i), "amount_minor": 100 + i} for i in range(30)]
    )
    snapshot = _snapshot(org_id)
    _write(org_id, "UPDATE invoices SET amount_minor = 1 WHERE organization_id = :org AND number = 'N00'")

    def writers(page: int) -> None:
        if page == 0:
            # Not yet read: moved before the cursor (old version must still come later), deleted,
            # changed twice in one transaction and once more in another.
            _write(org_id, "UPDATE invoices SET issued_at = :t WHERE number = 'N20' AND organization_id = :org", t=T0)
            _write(org_id, "DELETE FROM invoices WHERE number IN ('N21', 'N22') AND organization_id = :org")
            _write(
                org_id,
                "UPDATE invoices SET amount_minor = 7 WHERE number = 'N23' AND organization_id = :org",
                "UPDATE invoices SET amount_minor = 8 WHERE number = 'N23' AND organization_id = :org",
            )
            _write(org_id, "UPDATE invoices SET amount_minor = 9 WHERE number = 'N23' AND organization_id = :org")
        if page == 1:
            # Already read: moved past the cursor (must not come again), and new invoices anywhere.
            _write(
                org_id,
                "UPDATE invoices SET issued_at = :t WHERE number = 'N01' AND organization_id = :org",
                t=T0 + timedelta(days=365),
            )
            _write(
                org_id,
                """INSERT INTO invoices (organization_id, number, customer_name, customer_email, amount_minor,
                                         currency, status, issued_at)
                   VALUES (:org, 'LATE1', 'c', 'c@example.com', 5, 'USD', 'open', :t),
                          (:org, 'LATE2', 'c', 'c@example.com', 5, 'USD', 'open', :t2)""",
                t=T0 + timedelta(minutes=25, seconds=1),
                t2=T0 - timedelta(days=1),
            )

    rows = _all_pages(org_id, 4, snapshot, writers)

    assert [r[0] for r in rows] == [f"N{i:02d}" for i in range(30)]
    assert [r[5] for r in rows] == [f"{(100 + i) / 100:.2f}" for i in range(30)]
    assert [r[6] for r in rows] == [(T0 + timedelta(minutes=i)).isoformat(timespec="microseconds") for i in range(30)]
    with tenant_transaction(org_id) as session:
        assert plan_pages(session, org_id, snapshot, 7).invoices == 30
        assert plan_pages(session, org_id, current_snapshot(session), 7).invoices == 30 - 2 + 2


def test_versions_are_pruned_only_when_no_running_export_needs_them(database: str, admin_conn) -> None:  # type: ignore[no-untyped-def]
    org_id, user_id = make_org([{"number": "A", "issued_at": T0}])
    snapshot = _snapshot(org_id)
    admin_conn.execute(
        text(
            """INSERT INTO exports (id, organization_id, requested_by, status, run_id, idempotency_key, day_bucket,
                                    snapshot)
               VALUES (gen_random_uuid(), :org, :user, 'running', :run, :run, current_date, :snap)"""
        ),
        {"org": org_id, "user": user_id, "run": f"exp-{org_id}-1", "snap": snapshot.text},
    )
    admin_conn.commit()
    _write(org_id, "UPDATE invoices SET amount_minor = 2 WHERE organization_id = :org")

    with tenant_transaction(org_id) as session:
        assert prune_versions(session, org_id) == 0
    assert [r[0] for r in _all_pages(org_id, 10, snapshot)] == ["A"]
    assert _all_pages(org_id, 10, snapshot)[0][5] == "1.00"

    admin_conn.execute(text("UPDATE exports SET status = 'completed' WHERE organization_id = :org"), {"org": org_id})
    admin_conn.commit()
    with tenant_transaction(org_id) as session:
        assert prune_versions(session, org_id) == 1
    assert (
        admin_conn.execute(
            text("SELECT count(*) FROM invoice_versions WHERE organization_id = :org"), {"org": org_id}
        ).scalar_one()
        == 0
    )


@pytest.mark.parametrize("when", ["infinity", "-infinity", "0044-03-15 12:00:00+00 BC", "10000-01-01 00:00:00+00"])
def test_an_invoice_time_that_no_export_could_page_or_print_is_refused(database: str, when: str) -> None:
    """Years 1 to 9999 only (migration 0007): refused when written, never a failed export later."""
    import sqlalchemy.exc

    org_id, _ = make_org([])
    for column in ("issued_at", "due_at"):
        refused = pytest.raises(sqlalchemy.exc.IntegrityError, match=f"{column}_is_a_real_date")
        with refused, admin_engine().begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO invoices (organization_id, number, customer_name, customer_email, amount_minor,"
                    " currency, status, issued_at, due_at)"
                    " VALUES (:org, 'X-1', 'C', 'c@example.com', 1, 'USD', 'open', :issued, :due)"
                ),
                {
                    "org": org_id,
                    "issued": when if column == "issued_at" else T0,
                    "due": when if column == "due_at" else None,
                },
            )
