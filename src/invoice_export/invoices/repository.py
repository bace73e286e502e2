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

from invoice_export.db.copy import copy_csv_records
from invoice_export.exports.csv_format import SELECT_CSV_COLUMNS


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


def _keys(after_sql: str) -> str:
    """The snapshot's keys after a point (or from the start), in key order: one short walk of each
    table's covering keyset index (index-only), merged; at most a page of each."""
    return f"""((SELECT issued_at, id FROM invoices WHERE {_CURRENT}{after_sql} ORDER BY issued_at, id LIMIT %(size)s)
                UNION ALL
                (SELECT issued_at, id FROM invoice_versions WHERE {_KEPT}{after_sql} ORDER BY issued_at, id
                 LIMIT %(size)s)
                ORDER BY issued_at, id)"""


# The last key of every full page: each step of the recursion skips one page of keys from the
# previous end, so the whole walk reads every key once and keeps one in `page_size`.
_FULL_PAGE_ENDS = f"""
    WITH RECURSIVE ends(page, issued_at, id) AS (
        (SELECT 1, issued_at, id FROM {_keys("")} AS k ORDER BY issued_at, id OFFSET %(skip)s LIMIT 1)
        UNION ALL
        (SELECT e.page + 1, k.issued_at, k.id
         FROM ends AS e
         CROSS JOIN LATERAL (SELECT issued_at, id FROM {_keys(" AND (issued_at, id) > (e.issued_at, e.id)")} AS n
                             ORDER BY issued_at, id OFFSET %(skip)s LIMIT 1) AS k))
    SELECT to_char(issued_at AT TIME ZONE 'UTC', {_ISO_UTC}), id FROM ends ORDER BY page"""


def _tail(after_sql: str) -> str:
    """How many keys follow the last full page (fewer than a page), and the last of them."""
    return f"""SELECT to_char(issued_at AT TIME ZONE 'UTC', {_ISO_UTC}), id, count(*) OVER ()
               FROM {_keys(after_sql)} AS k ORDER BY issued_at DESC, id DESC LIMIT 1"""


def plan_pages(session: Session, org_id: str, snapshot: Snapshot, page_size: int) -> PagePlan:
    """Count the invoices of `snapshot` and find where each page of `page_size` ends, in one
    ordered walk of the keyset indexes (index-only where the visibility map allows): a recursive
    query finds the end of every full page, one more read counts the short last page.

    With every page's end known up front, each page is one self-contained range read that any
    transaction can repeat, so pages can be written in any order (or several at once) and a page
    written again after a crash is byte for byte the same.
    """
    sizes = {"size": page_size, "skip": page_size - 1}
    params, _ = _params(org_id, snapshot, None)
    conn: psycopg.Connection = session.connection().connection.driver_connection  # type: ignore[assignment]
    ends = [Keyset(issued_at=ts, id=id_) for ts, id_ in conn.execute(_FULL_PAGE_ENDS, params | sizes).fetchall()]
    invoices = len(ends) * page_size
    params, after_sql = _params(org_id, snapshot, ends[-1] if ends else None)
    tail = conn.execute(_tail(after_sql), params | sizes).fetchone()
    if tail is not None:
        ends.append(Keyset(issued_at=tail[0], id=tail[1]))
        invoices += int(tail[2])
    return PagePlan(invoices=invoices, ends=ends)


def read_csv_page(
    session: Session, org_id: str, snapshot: Snapshot, after: Keyset | None, last: Keyset, limit: int
) -> CsvPage:
    """The invoices of `snapshot` with keys in (`after`, `last`], as CSV records (CRLF, no header).

    One COPY, so one statement snapshot: any isolation level gives the same bytes. `limit` (the
    page size) guides the planner: it cannot estimate a range between two row keys and might
    otherwise scan the whole org for a deep page. With the limit, each table is read by a short
    walk of its keyset index; the currencies are joined to the page's rows once, by hash (a
    lookup per row cost about an eighth of the page), and the page is sorted in memory.
    """
    params, after_sql = _params(org_id, snapshot, after)
    params |= {"last_ts": last.issued_at, "last_id": last.id, "limit": limit}
    conn: psycopg.Connection = session.connection().connection.driver_connection  # type: ignore[assignment]
    query = f"""COPY (SELECT {SELECT_CSV_COLUMNS}
                      FROM (SELECT v.*, exponent
                            FROM ((SELECT {INVOICE_COLUMNS} FROM invoices
                                   WHERE {_CURRENT}{after_sql}{_UP_TO} ORDER BY issued_at, id LIMIT %(limit)s)
                                  UNION ALL
                                  (SELECT {INVOICE_COLUMNS} FROM invoice_versions
                                   WHERE {_KEPT}{after_sql}{_UP_TO} ORDER BY issued_at, id LIMIT %(limit)s)) AS v
                            JOIN currencies ON code = v.currency) AS i
                      ORDER BY i.issued_at, i.id) TO STDOUT (FORMAT csv)"""
    copied = copy_csv_records(conn, query, params)
    return CsvPage(data=copied.data, rows=copied.rows)
