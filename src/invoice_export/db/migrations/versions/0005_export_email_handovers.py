"""export email handovers

How many times a run handed its ready email to the mail server without learning the outcome: the
count goes up, committed, before each hand-over and back down when the server's answer (accepted
or refused) reaches the step. A count left behind means the worker died in between, and the
message may have been delivered; `send_ready_email` stops re-sending after a few of those.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("exports", sa.Column("email_handovers", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    op.drop_column("exports", "email_handovers")
