"""Calibrations: stored operating points (verification FAR/EER, identification FPIR).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "calibrations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("scorer", sa.String(32), nullable=False),
        sa.Column("data", sa.String(1024), nullable=False),
        sa.Column("n_genuine", sa.Integer, nullable=False),
        sa.Column("n_impostor", sa.Integer, nullable=False),
        sa.Column("eer", sa.Float, nullable=True),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("operating", sa.String(64), nullable=False),
        sa.Column("report", sa.JSON, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
    )
    op.create_index("ix_calibrations_model_id", "calibrations", ["model_id"])


def downgrade() -> None:
    op.drop_index("ix_calibrations_model_id", "calibrations")
    op.drop_table("calibrations")
