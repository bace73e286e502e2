"""The export's CSV dialect: RFC 4180 records ending in CRLF, fields quoted only where needed,
one header row, UTF-8 with a byte-order mark so spreadsheets detect the encoding, and no text
cell that a spreadsheet would run as a formula.

Quoting is PostgreSQL's own CSV writer (COPY ... FORMAT csv). COPY ends records with LF, and the
protocol sends exactly one record per CopyData message, so `db/copy.py` switches each message's
final LF to CRLF without looking inside fields (an LF inside a quoted field is data, kept as is).
"""

from __future__ import annotations

BOM = "\ufeff".encode()

COLUMNS = (
    "invoice_number",
    "status",
    "customer_name",
    "customer_email",
    "currency",
    "amount",
    "issued_at",
    "due_at",
    "memo",
)

HEADER = (",".join(COLUMNS) + "\r\n").encode()

_ISO_UTC = """'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'"""

# A spreadsheet runs a cell as a formula when its first character is one of these; tab, CR and LF
# are included because importers may strip them and then see what follows. Only the first
# character of the whole value counts, however many lines the value has: "=1+1\nmore" is
# neutralized as a whole, while "note\n=1+1" is one cell of text that starts safely.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\n")
_TRIGGERS_SQL = ", ".join("E'" + c.encode("unicode_escape").decode() + "'" for c in FORMULA_TRIGGERS)


def _text_cell(column: str) -> str:
    """SQL for a user-entered text column: a leading apostrophe when the value would start a formula.

    Done inside the COPY's SELECT, so rows still never pass through Python. NULL stays NULL.
    """
    return f"CASE WHEN left({column}, 1) IN ({_TRIGGERS_SQL}) THEN '''' || {column} ELSE {column} END"


def neutralize(value: str) -> str:
    """The same rule in Python (tests use it as the oracle for the SQL)."""
    return "'" + value if value[:1] in FORMULA_TRIGGERS else value


# The row source `i` is an invoice with its currency's `exponent`.
# Money: minor units scaled by the currency's exponent, as an exact decimal string (-12.50, 1250, 1.005).
# Times: ISO 8601 in UTC with an explicit offset and microseconds. Both are generated here and can
# never be read as a formula, so a negative amount stays a number; every text column is guarded.
SELECT_CSV_COLUMNS = f"""
    {_text_cell("i.number")},
    {_text_cell("i.status")},
    {_text_cell("i.customer_name")},
    {_text_cell("i.customer_email")},
    {_text_cell("i.currency")},
    round(i.amount_minor::numeric / (10::numeric ^ i.exponent), i.exponent)::text,
    to_char(i.issued_at AT TIME ZONE 'UTC', {_ISO_UTC}),
    to_char(i.due_at AT TIME ZONE 'UTC', {_ISO_UTC}),
    {_text_cell("i.memo")}"""
