"""The export's CSV dialect: RFC 4180 records ending in CRLF, fields quoted only where needed,
one header row, UTF-8 with a byte-order mark so spreadsheets detect the encoding.

Quoting is PostgreSQL's own CSV writer (COPY ... FORMAT csv). COPY ends records with LF; an LF is
a record end exactly when the quotes seen so far in the record are balanced (an LF inside a
quoted field is data and is kept as is), which `records_to_crlf` uses to switch ends to CRLF.
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

# Money: minor units scaled by the currency's exponent, as an exact decimal string (-12.50, 1250, 1.005).
# Times: ISO 8601 in UTC with an explicit offset and microseconds.
SELECT_CSV_COLUMNS = f"""
    i.number,
    i.status,
    i.customer_name,
    i.customer_email,
    i.currency,
    round(i.amount_minor::numeric / (10::numeric ^ c.exponent), c.exponent)::text,
    to_char(i.issued_at AT TIME ZONE 'UTC', {_ISO_UTC}),
    to_char(i.due_at AT TIME ZONE 'UTC', {_ISO_UTC}),
    i.memo"""


def records_to_crlf(data: bytes) -> bytes:
    """Turn COPY's LF record ends into CRLF, leaving line breaks inside quoted fields untouched."""
    if not data:
        return data
    pieces = data.split(b"\n")
    out: list[bytes] = []
    open_quotes = 0
    for piece in pieces[:-1]:
        open_quotes += piece.count(b'"')
        out.append(piece)
        out.append(b"\r\n" if open_quotes % 2 == 0 else b"\n")
        if open_quotes % 2 == 0:
            open_quotes = 0
    out.append(pieces[-1])
    return b"".join(out)
