"""invoice versions for export snapshots

Every invoice row records the transaction that wrote it (`version_xid`); a trigger copies the
version an UPDATE or DELETE replaces into `invoice_versions`, stamped with the replacing
transaction (`replaced_by`). An export fixes a `pg_snapshot` once; any later transaction can then
read exactly the invoices as of that snapshot (see invoices/repository.py), however many pages and
transactions the export spans and whatever writers did in between.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 20:05:00
"""

import sqlalchemy as sa
from alembic import op

from invoice_export.db.models.invoice import Xid8

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ORG = "current_setting('app.org_id', true)"
COLUMNS = (
    "id, organization_id, number, customer_name, customer_email, amount_minor, currency, status, "
    "issued_at, due_at, memo, created_at, version_xid"
)

# SECURITY DEFINER: whoever may change invoices keeps their history, without a grant on the
# history table. A version written and replaced by the same transaction was never visible to
# anyone else and is not kept.
KEEP_VERSION = f"""
CREATE FUNCTION invoices_keep_version() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_catalog AS $$
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.version_xid <> pg_current_xact_id() THEN
        INSERT INTO invoice_versions ({COLUMNS}, replaced_by)
        VALUES (OLD.id, OLD.organization_id, OLD.number, OLD.customer_name, OLD.customer_email,
                OLD.amount_minor, OLD.currency, OLD.status, OLD.issued_at, OLD.due_at, OLD.memo,
                OLD.created_at, OLD.version_xid, pg_current_xact_id());
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    NEW.version_xid := pg_current_xact_id();
    RETURN NEW;
END
$$
"""


def upgrade() -> None:
    # Rows that exist now were written before any export snapshot can be taken: '1' sorts below
    # every real transaction id, so they are visible to every snapshot.
    op.add_column("invoices", sa.Column("version_xid", Xid8(), server_default=sa.text("'1'::xid8"), nullable=False))
    op.alter_column("invoices", "version_xid", server_default=sa.text("pg_current_xact_id()"))
    op.drop_index("ix_invoices_org_keyset", table_name="invoices")
    op.create_index(
        "ix_invoices_org_keyset",
        "invoices",
        ["organization_id", "issued_at", "id"],
        postgresql_include=["version_xid"],
    )
    op.create_table(
        "invoice_versions",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("organization_id", sa.Text(), nullable=False),
        sa.Column("number", sa.Text(), nullable=False),
        sa.Column("customer_name", sa.Text(), nullable=False),
        sa.Column("customer_email", sa.Text(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("memo", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version_xid", Xid8(), nullable=False),
        sa.Column("replaced_by", Xid8(), nullable=False),
        sa.PrimaryKeyConstraint("id", "version_xid", name=op.f("pk_invoice_versions")),
    )
    op.create_index(
        "ix_invoice_versions_org_keyset",
        "invoice_versions",
        ["organization_id", "issued_at", "id"],
        postgresql_include=["version_xid", "replaced_by"],
    )
    op.add_column("exports", sa.Column("snapshot", sa.Text(), nullable=True))
    op.execute(KEEP_VERSION)
    op.execute(
        "CREATE TRIGGER invoices_keep_version BEFORE INSERT OR UPDATE OR DELETE ON invoices "
        "FOR EACH ROW EXECUTE FUNCTION invoices_keep_version()"
    )
    for statement in (
        "ALTER TABLE invoice_versions ENABLE ROW LEVEL SECURITY",
        "ALTER TABLE invoice_versions FORCE ROW LEVEL SECURITY",
        f"CREATE POLICY tenant_isolation ON invoice_versions USING (organization_id = {ORG}) "
        f"WITH CHECK (organization_id = {ORG})",
        # DELETE: a worker prunes versions that no running export's snapshot can need any more.
        "GRANT SELECT, DELETE ON invoice_versions TO invoice_app",
        "REVOKE ALL ON FUNCTION invoices_keep_version() FROM PUBLIC",
    ):
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER invoices_keep_version ON invoices")
    op.execute("DROP FUNCTION invoices_keep_version()")
    op.drop_column("exports", "snapshot")
    op.drop_index("ix_invoice_versions_org_keyset", table_name="invoice_versions")
    op.drop_table("invoice_versions")
    op.drop_index("ix_invoices_org_keyset", table_name="invoices")
    op.create_index("ix_invoices_org_keyset", "invoices", ["organization_id", "issued_at", "id"])
    op.drop_column("invoices", "version_xid")
