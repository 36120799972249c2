"""Indexes for reports over time: measurements by date (``report --since``) and a candidate's history
by name across runs.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_measurements_created_at", "measurements", ["created_at"])
    op.create_index("ix_measurements_candidate_name", "measurements", ["candidate_name"])
    # The meta row keeps harnesses from before migrations refusing a store they cannot read.
    op.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")


def downgrade() -> None:
    op.drop_index("ix_measurements_candidate_name", "measurements")
    op.drop_index("ix_measurements_created_at", "measurements")
    op.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
