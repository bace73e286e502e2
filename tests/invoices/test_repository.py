from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest

from invoice_export.db.session import tenant_transaction
from invoice_export.invoices.repository import count_invoices, read_csv_page
from tests.conftest import make_org

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def _all_pages(org_id: str, page_size: int) -> list[list[str]]:
    rows: list[list[str]] = []
    after = None
    with tenant_transaction(org_id) as session:
        snapshot = datetime.now(UTC)
        while True:
            page = read_csv_page(session, org_id, snapshot, after, page_size)
            if page.rows == 0:
                break
            parsed = list(csv.reader(io.StringIO(page.data.decode(), newline="")))
            assert len(parsed) == page.rows <= page_size
            rows.extend(parsed)
            after = page.last
    return rows


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

    rows = _all_pages(org_id, page_size)

    numbers = [r[0] for r in rows]
    assert sorted(numbers) == [f"N{i:02d}" for i in range(10)]
    assert len(set(numbers)) == 10
    issued = [r[6] for r in rows]
    assert issued == sorted(issued)
    assert issued[0] == "2026-03-01T11:59:59.999999+00:00"
    assert issued[-1] == "2026-03-02T12:00:00.000000+00:00"


def test_snapshot_excludes_invoices_created_after_it(database: str) -> None:
    org_id, _ = make_org([{"issued_at": T0}, {"issued_at": T0}])
    with tenant_transaction(org_id) as session:
        assert count_invoices(session, org_id, T0 - timedelta(days=365 * 100)) == 0
        assert count_invoices(session, org_id, datetime.now(UTC)) == 2
