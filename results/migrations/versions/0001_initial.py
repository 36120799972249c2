"""The results store as first released (schema_version 1 in the meta table).

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    meta = op.create_table(
        "meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("command", sa.String(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=True),
        sa.Column("provenance", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
    )
    op.create_table(
        "measurements",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id"), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("candidate_hash", sa.String(), nullable=True),
        sa.Column("candidate_name", sa.String(), nullable=True),
        sa.Column("strategy", sa.String(), nullable=True),
        sa.Column("target", sa.String(), nullable=True),
        sa.Column("target_settings", sa.JSON(), nullable=True),
        sa.Column("settings_key", sa.String(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        *(sa.Column(name, sa.BigInteger(), nullable=True) for name in (
            "flash_bytes", "sram_bytes", "encoded_weight_bytes", "original_weight_bytes", "npu_cycles",
            "total_cycles")),
        sa.Column("latency_s", sa.Double(), nullable=True),
        sa.Column("latency_is_estimate", sa.Boolean(), nullable=True),
        sa.Column("accuracy_int8", sa.Double(), nullable=True),
        sa.Column("accuracy_float", sa.Double(), nullable=True),
        sa.Column("accuracy_samples", sa.BigInteger(), nullable=True),
        sa.Column("tflm_arena_bytes", sa.BigInteger(), nullable=True),
        *(sa.Column(name, sa.Double(), nullable=True) for name in (
            "rhs_bound_bytes", "empirical_entropy_bytes", "coded_mask_bytes")),
        sa.Column("tool_versions", sa.JSON(), nullable=True),
        sa.Column("git_sha", sa.String(), nullable=True),
        sa.Column("host", sa.String(), nullable=True),
        sa.Column("extra", sa.JSON(), nullable=True),
    )
    for column in ("run_id", "candidate_hash", "settings_key"):
        op.create_index(f"ix_measurements_{column}", "measurements", [column])
    op.create_table(
        "run_members",
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id"), primary_key=True),
        sa.Column("measurement_id", sa.Integer(), sa.ForeignKey("measurements.id"), primary_key=True),
    )
    op.bulk_insert(meta, [{"key": "schema_version", "value": "1"}])


def downgrade() -> None:
    for table in ("run_members", "measurements", "runs", "meta"):
        op.drop_table(table)
