"""A paged export through a real worker while writers insert, update and delete the org's invoices:
the file is exactly the invoices of the run's snapshot, reconstructed here from the writers' own log."""

from __future__ import annotations

import csv
import io
import os
import random
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import make_url

from invoice_export.exports.service import start_export
from tests.conftest import make_org, wait_for_status

T0 = datetime(2026, 5, 1, tzinfo=UTC)
INITIAL = 1200
WRITERS = 3


@dataclass(frozen=True)
class Change:
    """One committed writer transaction: `rows` maps invoice id → (number, amount, issued_at), or None if deleted."""

    xid: str
    rows: dict[int, tuple[str, int, datetime] | None]


def _admin_dsn() -> str:
    return make_url(os.environ["DATABASE_URL"]).set(drivername="postgresql").render_as_string(hide_password=False)


def _writer(org_id: str, mine: list[int], n: int, stop: threading.Event, log: list[Change]) -> None:
    """Random single-row transactions on this writer's own invoices, logged in commit order."""
    rng = random.Random(n)
    alive = list(mine)
    serial = 0
    with psycopg.connect(_admin_dsn()) as conn:
        while not stop.is_set():
            with conn.transaction():
                conn.execute("SELECT set_config('app.org_id', %s, true)", (org_id,))
                xid = conn.execute("SELECT pg_current_xact_id()::text").fetchone()[0]  # type: ignore[index]
                op = rng.choice(["move", "amount", "delete", "insert"]) if alive else "insert"
                when = T0 + timedelta(seconds=rng.randint(-100, INITIAL * 60 + 100), microseconds=rng.randint(0, 9))
                if op == "insert":
                    serial += 1
                    number = f"W{n}-{serial:05d}"
                    row = conn.execute(
                        """INSERT INTO invoices (organization_id, number, customer_name, customer_email,
                                                 amount_minor, currency, status, issued_at)
                           VALUES (%s, %s, 'c', 'c@example.com', %s, 'USD', 'open', %s) RETURNING id, number""",
                        (org_id, number, serial, when),
                    ).fetchone()
                    assert row is not None
                    alive.append(row[0])
                    change = {row[0]: (row[1], serial, when)}
                else:
                    target = rng.choice(alive)
                    if op == "delete":
                        conn.execute("DELETE FROM invoices WHERE id = %s", (target,))
                        alive.remove(target)
                        change = {target: None}
                    else:
                        assignment = "issued_at = %s" if op == "move" else "amount_minor = amount_minor + %s"
                        value: object = when if op == "move" else rng.randint(1, 99)
                        updated = conn.execute(
                            f"UPDATE invoices SET {assignment} WHERE id = %s RETURNING number, amount_minor, issued_at",
                            (value, target),
                        ).fetchone()
                        assert updated is not None
                        change = {target: (updated[0], updated[1], updated[2])}
            log.append(Change(xid=xid, rows=change))


def test_export_is_exactly_its_snapshot_under_concurrent_writers(
    start_worker, page_size, admin_conn, data_dir: Path
) -> None:  # type: ignore[no-untyped-def]
    org_id, user_id = make_org(
        [
            {"number": f"I{i:05d}", "amount_minor": 1000 + i, "issued_at": T0 + timedelta(minutes=i // 2)}
            for i in range(INITIAL)
        ]
    )
    initial = {
        r.id: (r.number, r.amount_minor, r.issued_at)
        for r in admin_conn.execute(
            text("SELECT id, number, amount_minor, issued_at FROM invoices WHERE organization_id = :o"), {"o": org_id}
        )
    }
    ids = sorted(initial)
    page_size(20)
    start_worker()

    stop = threading.Event()
    logs: list[list[Change]] = [[] for _ in range(WRITERS)]
    threads = [
        threading.Thread(target=_writer, args=(org_id, ids[n::WRITERS], n, stop, logs[n])) for n in range(WRITERS)
    ]
    for thread in threads:
        thread.start()
    try:
        started = start_export(org_id, user_id)
        view = wait_for_status(org_id, user_id, started.run_id, timeout=120)
        finished_log_lengths = [len(log) for log in logs]
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert view.status == "completed", view.error

    snapshot = admin_conn.execute(
        text("SELECT snapshot FROM exports WHERE run_id = :r"), {"r": view.run_id}
    ).scalar_one()
    expected = dict(initial)
    unseen_before_completion = seen_total = 0
    for log, finished in zip(logs, finished_log_lengths, strict=True):
        visible = (
            admin_conn.execute(
                text("SELECT pg_visible_in_snapshot(x::xid8, :s) FROM unnest(CAST(:xids AS text[])) AS x"),
                {"s": snapshot, "xids": [change.xid for change in log]},
            )
            .scalars()
            .all()
        )
        # One writer's transactions are sequential: those the snapshot sees are a prefix of its log.
        seen = sum(visible)
        assert all(visible[:seen]) and not any(visible[seen:])
        unseen_before_completion += finished - seen
        seen_total += seen
        for change in log[:seen]:
            for invoice_id, row in change.rows.items():
                if row is None:
                    del expected[invoice_id]
                else:
                    expected[invoice_id] = row
    assert unseen_before_completion >= 20, "writers did not overlap the export"
    assert seen_total >= 1, "no write preceded the snapshot"

    data = Path(view.csv_path).read_bytes()
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))[1:]
    want = sorted(expected.items(), key=lambda item: (item[1][2], item[0]))
    assert [r[0] for r in rows] == [number for _, (number, _, _) in want]
    assert [Decimal(r[5]) for r in rows] == [Decimal(amount).scaleb(-2) for _, (_, amount, _) in want]
    assert [datetime.fromisoformat(r[6]) for r in rows] == [issued for _, (_, _, issued) in want]
    assert view.row_count == len(want)
