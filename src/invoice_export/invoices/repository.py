"""Reads of an org's invoices for the export: a count and keyset pages in (issued_at, id) order.

Pages are rendered to CSV by PostgreSQL itself (`COPY (SELECT ...) TO STDOUT (FORMAT csv)`), so
Python never touches a row: it receives one page as bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from sqlalchemy import text
from sqlalchemy.orm import Session

from invoice_export.exports.csv_format import SELECT_CSV_COLUMNS, records_to_crlf


@dataclass(frozen=True)
class Keyset:
    """Position after the last invoice of a page; pages resume strictly after it."""

    issued_at: str
    id: int

    def as_dict(self) -> dict[str, str | int]:
        return {"issued_at": self.issued_at, "id": self.id}


@dataclass(frozen=True)
class CsvPage:
    data: bytes
    rows: int
    last: Keyset | None


_IN_SNAPSHOT = "i.organization_id = %(org)s AND i.created_at <= %(snapshot)s"
_AFTER = "(i.issued_at, i.id) > (%(after_ts)s::timestamptz, %(after_id)s)"


def count_invoices(session: Session, org_id: str, snapshot: datetime) -> int:
    return int(
        session.execute(
            text("SELECT count(*) FROM invoices i WHERE i.organization_id = :org AND i.created_at <= :snapshot"),
            {"org": org_id, "snapshot": snapshot},
        ).scalar_one()
    )


def read_csv_page(session: Session, org_id: str, snapshot: datetime, after: Keyset | None, limit: int) -> CsvPage:
    """Up to `limit` invoices after `after`, as CSV records (CRLF, no header).

    The page's last key is found first with an index-only walk of at most `limit` entries; the
    COPY then reads exactly the rows between the two keys. Both run in the caller's transaction.
    """
    params: dict[str, object] = {"org": org_id, "snapshot": snapshot, "limit": limit}
    where = _IN_SNAPSHOT
    if after is not None:
        where += " AND " + _AFTER
        params |= {"after_ts": after.issued_at, "after_id": after.id}
    conn: psycopg.Connection = session.connection().connection.driver_connection  # type: ignore[assignment]
    with conn.cursor() as cur:
        cur.execute(
            f"""SELECT to_char(issued_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'), id
                FROM (SELECT i.issued_at, i.id FROM invoices i WHERE {where}
                      ORDER BY i.issued_at, i.id LIMIT %(limit)s) AS page
                ORDER BY issued_at DESC, id DESC LIMIT 1""",
            params,
        )
        last_row = cur.fetchone()
        if last_row is None:
            return CsvPage(data=b"", rows=0, last=None)
        last = Keyset(issued_at=last_row[0], id=last_row[1])
        params |= {"last_ts": last.issued_at, "last_id": last.id}
        query = f"""COPY (SELECT {SELECT_CSV_COLUMNS}
                          FROM invoices i JOIN currencies c ON c.code = i.currency
                          WHERE {where} AND (i.issued_at, i.id) <= (%(last_ts)s::timestamptz, %(last_id)s)
                          ORDER BY i.issued_at, i.id) TO STDOUT (FORMAT csv)"""
        chunks: list[bytes] = []
        with cur.copy(query, params) as copy:
            chunks.extend(bytes(chunk) for chunk in copy)
        rows = cur.rowcount
    return CsvPage(data=records_to_crlf(b"".join(chunks)), rows=rows, last=last)
