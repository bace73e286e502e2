"""export parts, live row progress and change notices

Each page a run writes is recorded once in `export_parts` (primary key: export, attempt, page)
in the page's own transaction, and the same transaction raises the row's `pages_done` and
`rows_written`. Progress is exact however pages are scheduled, and a page written again after a
crash counts once. Every insert or update of an exports row notifies channel `export_changed`
with the run id at commit, which wakes the web process's event streams (web/live.py).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ORG = "current_setting('app.org_id', true)"

NOTIFY_CHANGE = """
CREATE FUNCTION exports_notify_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_catalog AS $$
BEGIN
    PERFORM pg_notify('export_changed', NEW.run_id);
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.add_column("exports", sa.Column("rows_written", sa.BigInteger(), server_default="0", nullable=False))
    op.create_table(
        "export_parts",
        sa.Column("export_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("page", sa.Integer(), nullable=False),
        sa.Column("organization_id", sa.Text(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["export_id"], ["exports.id"], name=op.f("fk_export_parts_export_id_exports"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("export_id", "attempt", "page", name=op.f("pk_export_parts")),
    )
    for statement in (
        "ALTER TABLE export_parts ENABLE ROW LEVEL SECURITY",
        "ALTER TABLE export_parts FORCE ROW LEVEL SECURITY",
        f"CREATE POLICY tenant_isolation ON export_parts USING (organization_id = {ORG}) "
        f"WITH CHECK (organization_id = {ORG})",
        "GRANT SELECT, INSERT ON export_parts TO invoice_app",
        NOTIFY_CHANGE,
        "CREATE TRIGGER exports_notify_change AFTER INSERT OR UPDATE ON exports "
        "FOR EACH ROW EXECUTE FUNCTION exports_notify_change()",
    ):
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER exports_notify_change ON exports")
    op.execute("DROP FUNCTION exports_notify_change()")
    op.drop_table("export_parts")
    op.drop_column("exports", "rows_written")
