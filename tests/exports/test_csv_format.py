"""The CSV dialect, checked by writing values through PostgreSQL's COPY and reading them back."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from invoice_export.db.copy import copy_csv_records
from invoice_export.db.session import tenant_transaction
from invoice_export.db.urls import get_urls
from invoice_export.exports.csv_format import BOM, FORMULA_TRIGGERS, HEADER, neutralize
from invoice_export.invoices.repository import current_snapshot, plan_pages, read_csv_page
from tests.conftest import make_org

# Text PostgreSQL can store: no NUL; any other character, including quotes, commas, CR and LF.
awkward_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40
) | st.sampled_from(
    ['"', '""', ",", "\r\n", "\n", "\r", 'a,"b"\nc', " lead", "trail ", "Zoë, ß, 東京", "'=quoted", "x\n=1+1"]
)
# Values a spreadsheet would run as formulas, alone and continued on further lines.
formula_text = st.builds(lambda trigger, rest: trigger + rest, st.sampled_from(FORMULA_TRIGGERS), awkward_text)


def test_copy_reader_ends_records_with_crlf_and_keeps_line_breaks_inside_quotes(database: str) -> None:
    with psycopg.connect(get_urls().app_plain) as conn:
        conn.execute("SELECT 1")  # the reader runs inside an open transaction, as pages do
        values = "VALUES ('a', %(x)s), ('b', %(p)s), ('c', NULL)"
        copied = copy_csv_records(conn, f"COPY ({values}) TO STDOUT (FORMAT csv)", {"x": "x\ny", "p": 'p"\nq'})
        assert copied.data == b'a,"x\ny"\r\nb,"p""\nq"\r\nc,\r\n'
        assert copied.rows == 3
        empty = copy_csv_records(conn, "COPY (SELECT 1 WHERE false) TO STDOUT (FORMAT csv)", {})
        assert (empty.data, empty.rows) == (b"", 0)
        big = copy_csv_records(conn, "COPY (SELECT repeat('z', 1000) FROM generate_series(1, 5000)) TO STDOUT", {})
        assert big.rows == 5000 and big.data == (b"z" * 1000 + b"\r\n") * 5000


def test_copy_reader_raises_the_server_error_and_leaves_the_connection_usable(database: str) -> None:
    with psycopg.connect(get_urls().app_plain) as conn:
        conn.execute("SELECT 1")
        with pytest.raises(psycopg.errors.DivisionByZero):
            copy_csv_records(conn, "COPY (SELECT 1 / (x - 3) FROM generate_series(1, 5) AS x) TO STDOUT", {})
        conn.rollback()
        assert conn.execute("SELECT 42").fetchone() == (42,)
        conn.rollback()
        with pytest.raises(RuntimeError, match="inside an open transaction"):
            copy_csv_records(conn, "COPY (SELECT 1) TO STDOUT", {})


def test_header_and_bom() -> None:
    assert BOM == b"\xef\xbb\xbf"
    assert HEADER.endswith(b"\r\n") and HEADER.count(b"\r\n") == 1


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=st.lists(
        st.tuples(awkward_text | formula_text, awkward_text | formula_text, st.none() | awkward_text | formula_text),
        min_size=1,
        max_size=6,
    ),
    amounts=st.lists(st.integers(min_value=-(10**12), max_value=10**12), min_size=6, max_size=6),
)
def test_awkward_values_round_trip(
    database: str, values: list[tuple[str, str, str | None]], amounts: list[int]
) -> None:
    currencies = ["USD", "JPY", "KWD", "EUR", "GBP", "SEK"]
    invoices = [
        {
            "customer_name": name,
            "customer_email": email,
            "memo": memo,
            "amount_minor": amounts[i],
            "currency": currencies[i],
            "issued_at": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=i),
        }
        for i, (name, email, memo) in enumerate(values)
    ]
    org_id, _ = make_org(invoices)
    with tenant_transaction(org_id) as session:
        snapshot = current_snapshot(session)
        plan = plan_pages(session, org_id, snapshot, 100)
        page = read_csv_page(session, org_id, snapshot, None, plan.ends[0], 100)
    assert page.rows == len(invoices)
    # Every record ends in CRLF; reading with the csv module gives back exactly what was stored,
    # with a leading apostrophe on exactly the text cells that would start a formula.
    assert page.data.endswith(b"\r\n")
    rows = list(csv.reader(io.StringIO(page.data.decode("utf-8"), newline="")))
    assert len(rows) == len(invoices)
    exponent = {"USD": 2, "JPY": 0, "KWD": 3, "EUR": 2, "GBP": 2, "SEK": 2}
    for row, invoice in zip(rows, invoices, strict=True):
        assert row[2] == neutralize(str(invoice["customer_name"]))
        assert row[3] == neutralize(str(invoice["customer_email"]))
        assert row[8] == neutralize(str(invoice["memo"] or ""))
        scale = exponent[str(invoice["currency"])]
        expected = Decimal(int(invoice["amount_minor"])).scaleb(-scale)  # type: ignore[call-overload]
        assert Decimal(row[5]) == expected
        assert len(row[5].partition(".")[2]) == scale
        assert datetime.fromisoformat(row[6]) == invoice["issued_at"]


def test_formula_cells_are_neutralized_and_numbers_stay_numbers(database: str) -> None:
    cases = {
        '=HYPERLINK("http://evil","x")': '\'=HYPERLINK("http://evil","x")',
        "+1+1": "'+1+1",
        "-2+3": "'-2+3",
        "@SUM(A1)": "'@SUM(A1)",
        "\t=1": "'\t=1",
        "\r=1": "'\r=1",
        "=1+1\nsecond line": "'=1+1\nsecond line",
        "first line\n=1+1": "first line\n=1+1",
        " =1": " =1",
        "a-b=c": "a-b=c",
        "'already": "'already",
    }
    invoices = [
        {
            "customer_name": value,
            "memo": value,
            "amount_minor": -1250,
            "currency": "EUR",
            "issued_at": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=i),
        }
        for i, value in enumerate(cases)
    ]
    org_id, _ = make_org(invoices)
    with tenant_transaction(org_id) as session:
        snapshot = current_snapshot(session)
        plan = plan_pages(session, org_id, snapshot, 100)
        page = read_csv_page(session, org_id, snapshot, None, plan.ends[0], 100)
    rows = list(csv.reader(io.StringIO(page.data.decode("utf-8"), newline="")))
    assert [row[2] for row in rows] == list(cases.values())
    assert [row[8] for row in rows] == list(cases.values())
    assert {row[5] for row in rows} == {"-12.50"}


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT 1",  # not a COPY at all
        "COPY (SELECT 1) TO STDOUT; COPY (SELECT 2) TO STDOUT",  # more than one statement
    ],
)
def test_copy_reader_refuses_what_is_not_one_copy_and_drops_the_connection(database: str, statement: str) -> None:
    """No hang and no connection handed back mid-protocol: it is closed, so a pool drops it."""
    with psycopg.connect(get_urls().app_plain) as conn:
        conn.execute("SELECT 1")
        with pytest.raises(psycopg.ProgrammingError, match="COPY"):
            copy_csv_records(conn, statement, {})
        assert conn.closed
