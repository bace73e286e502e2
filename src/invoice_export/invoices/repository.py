"""Reads of an org's invoices for the export: a snapshot, a plan (the count and where each page
ends) and keyset pages in (issued_at, id) order, all as of one snapshot.

An export spans many transactions (one per page), so "the invoices as of the snapshot" cannot be
left to MVCC. Each invoice row carries the transaction that wrote it (`version_xid`) and every
version an UPDATE or DELETE replaces is kept in `invoice_versions` with the transaction that
replaced it (`replaced_by`), by a trigger (migration 0003). The version of an invoice in snapshot S
is then the one whose writer S sees and whose replacer S does not see: a current row with
`visible(version_xid)`, or a kept version with `visible(version_xid) AND NOT visible(replaced_by)`.
At most one such version exists per invoice, so pages neither skip nor repeat rows, whatever is
inserted, updated (issue times included) or deleted while the export runs.

Pages are rendered to CSV by PostgreSQL itself (`COPY (SELECT ...) TO STDOUT (FORMAT csv)`), so
Python never parses a row: it receives one page as bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from sqlalchemy import text
from sqlalchemy.orm import Session

from invoice_export.exports.csv_format import SELECT_CSV_COLUMNS, crlf_records


@dataclass(frozen=True)
class Keyset:
    """Position after the last invoice of a page; pages resume strictly after it."""

    issued_at: str
    id: int

    def as_dict(self) -> dict[str, str | int]:
        return {"issued_at": self.issued_at, "id": self.id}


@dataclass(frozen=True)
class Snapshot:
    """A `pg_snapshot` in text form (`xmin:xmax:xip,...`) and its xmin: transactions below xmin
    are settled (seen if committed), which spares most rows the full visibility test."""

    text: str
    xmin: str

    def as_dict(self) -> dict[str, str]:
        return {"text": self.text, "xmin": self.xmin}


@dataclass(frozen=True)
class PagePlan:
    """How many invoices a snapshot holds and the last key of each page (the last page may be short)."""

    invoices: int
    ends: list[Keyset]


@dataclass(frozen=True)
class CsvPage:
    data: bytes
    rows: int


INVOICE_COLUMNS = (
    "id, organization_id, number, customer_name, customer_email, amount_minor, currency, status, "
    "issued_at, due_at, memo, created_at"
)
_CURRENT = (
    "organization_id = %(org)s"
    " AND (version_xid < %(xmin)s::xid8 OR pg_visible_in_snapshot(version_xid, %(snap)s::pg_snapshot))"
)
_KEPT = (
    "organization_id = %(org)s AND replaced_by >= %(xmin)s::xid8"
    " AND pg_visible_in_snapshot(version_xid, %(snap)s::pg_snapshot)"
    " AND NOT pg_visible_in_snapshot(replaced_by, %(snap)s::pg_snapshot)"
)
_AFTER = " AND (issued_at, id) > (%(after_ts)s::timestamptz, %(after_id)s)"
_UP_TO = " AND (issued_at, id) <= (%(last_ts)s::timestamptz, %(last_id)s)"
_ISO_UTC = """'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'"""


def current_snapshot(session: Session) -> Snapshot:
    row = session.execute(text("SELECT s::text, pg_snapshot_xmin(s)::text FROM pg_current_snapshot() AS s")).one()
    return Snapshot(text=row[0], xmin=row[1])


def prune_versions(session: Session, org_id: str, keep_for_export: object | None = None) -> int:
    """Delete the org's kept versions that no running export's snapshot can need, then hold the
    org's snapshot lock until the transaction ends.

    Call it before `current_snapshot` in the transaction that records a new export snapshot: the
    lock orders pruners and snapshot takers of one org, so a snapshot is recorded before any
    pruner can judge the versions it needs. A version replaced by a transaction below a snapshot's
    xmin is not needed by that snapshot, nor by any snapshot taken after the deletion sees it.
    """
    session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended('invoice-export snapshot ' || :org, 0))"), {"org": org_id}
    )
    result = session.execute(
        text(
            """DELETE FROM invoice_versions v
               WHERE v.organization_id = :org
                 AND NOT EXISTS (
                     SELECT 1 FROM exports e
                     WHERE e.organization_id = :org AND e.status = 'running' AND e.snapshot IS NOT NULL
                       AND e.id IS DISTINCT FROM :keep
                       AND v.replaced_by >= pg_snapshot_xmin(e.snapshot::pg_snapshot))"""
        ),
        {"org": org_id, "keep": keep_for_export},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _params(org_id: str, snapshot: Snapshot, after: Keyset | None) -> tuple[dict[str, object], str]:
    params: dict[str, object] = {"org": org_id, "snap": snapshot.text, "xmin": snapshot.xmin}
    if after is None:
        return params, ""
    return params | {"after_ts": after.issued_at, "after_id": after.id}, _AFTER


def plan_pages(session: Session, org_id: str, snapshot: Snapshot, page_size: int) -> PagePlan:
    """Count the invoices of `snapshot` and find where each page of `page_size` ends, in one
    ordered walk of the keyset indexes (index-only where the visibility map allows).

    With every page's end known up front, each page is one self-contained range read that any
    transaction can repeat, so pages can be written in any order (or several at once) and a page
    written again after a crash is byte for byte the same.
    """
    params, _ = _params(org_id, snapshot, None)
    conn: psycopg.Connection = session.connection().connection.driver_connection  # type: ignore[assignment]
    ends = conn.execute(
        f"""SELECT rn, to_char(issued_at AT TIME ZONE 'UTC', {_ISO_UTC}), id
            FROM (SELECT issued_at, id, row_number() OVER w AS rn, lead(id) OVER w IS NULL AS is_last
                  FROM ((SELECT issued_at, id FROM invoices WHERE {_CURRENT} ORDER BY issued_at, id)
                        UNION ALL
                        (SELECT issued_at, id FROM invoice_versions WHERE {_KEPT} ORDER BY issued_at, id)
                        ORDER BY issued_at, id) AS v
                  WINDOW w AS (ORDER BY issued_at, id)) AS k
            WHERE rn %% %(size)s = 0 OR is_last
            ORDER BY rn""",
        params | {"size": page_size},
    ).fetchall()
    invoices = int(ends[-1][0]) if ends else 0
    return PagePlan(invoices=invoices, ends=[Keyset(issued_at=ts, id=id_) for _, ts, id_ in ends])


def read_csv_page(
    session: Session, org_id: str, snapshot: Snapshot, after: Keyset | None, last: Keyset, limit: int
) -> CsvPage:
    """The invoices of `snapshot` with keys in (`after`, `last`], as CSV records (CRLF, no header).

    One COPY, so one statement snapshot: any isolation level gives the same bytes. `limit` (the
    page size) guides the planner: it cannot estimate a range between two row keys and might
    otherwise scan the whole org for a deep page. With the limit, each table is read by a short
    walk of its keyset index with the currency joined row by row, and the two walks are merged
    in key order, so the page is never sorted.
    """
    params, after_sql = _params(org_id, snapshot, after)
    params |= {"last_ts": last.issued_at, "last_id": last.id, "limit": limit}
    conn: psycopg.Connection = session.connection().connection.driver_connection  # type: ignore[assignment]
    query = f"""COPY (SELECT {SELECT_CSV_COLUMNS}
                      FROM ((SELECT {INVOICE_COLUMNS}, exponent FROM invoices JOIN currencies ON code = currency
                             WHERE {_CURRENT}{after_sql}{_UP_TO} ORDER BY issued_at, id LIMIT %(limit)s)
                            UNION ALL
                            (SELECT {INVOICE_COLUMNS}, exponent FROM invoice_versions JOIN currencies ON code = currency
                             WHERE {_KEPT}{after_sql}{_UP_TO} ORDER BY issued_at, id LIMIT %(limit)s)
                            ORDER BY issued_at, id) AS i
                      ORDER BY i.issued_at, i.id) TO STDOUT (FORMAT csv)"""
    with conn.cursor() as cur:
        with cur.copy(query, params) as copy:
            data = crlf_records(copy)
        return CsvPage(data=data, rows=cur.rowcount)
