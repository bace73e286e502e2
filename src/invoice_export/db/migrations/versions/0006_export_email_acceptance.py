"""export email acceptance

When the mail server accepted the run's ready email, recorded by the email step in a transaction
opened (and scoped to the org) before the hand-over, so that after the server's acceptance only
one UPDATE and its commit remain before a re-run of the step knows not to send again. Without
it, the step's own checkpoint (written by the engine after the step returns) was the only record,
and a worker dying before that re-sent the message.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("exports", sa.Column("email_accepted_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("exports", "email_accepted_at")
