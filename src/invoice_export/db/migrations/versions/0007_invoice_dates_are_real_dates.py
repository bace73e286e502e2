"""invoice dates are real dates

An invoice's issue and due times must lie in the years 1 to 9999 (UTC): finite, in the common
era, and with four-digit years. PostgreSQL also stores
'infinity' and BC dates in a timestamptz, but an export can neither order pages by such a key
(page ends are written as ISO 8601 text, which has no infinity and no era) nor print it as an
ISO 8601 time a spreadsheet reads (four-digit years); refused when written, such a value never fails an export
later. A database that already holds one fails this migration and names the constraint.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

REAL_DATE = "{column} >= '0001-01-01 00:00:00+00' AND {column} < '10000-01-01 00:00:00+00'"


def upgrade() -> None:
    op.create_check_constraint(
        op.f("ck_invoices_issued_at_is_a_real_date"), "invoices", REAL_DATE.format(column="issued_at")
    )
    op.create_check_constraint(
        op.f("ck_invoices_due_at_is_a_real_date"),
        "invoices",
        f"due_at IS NULL OR ({REAL_DATE.format(column='due_at')})",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_invoices_due_at_is_a_real_date"), "invoices", type_="check")
    op.drop_constraint(op.f("ck_invoices_issued_at_is_a_real_date"), "invoices", type_="check")
