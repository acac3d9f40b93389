"""Batch re-embedding after a model change: each face's embedding by another model, staged until the switch.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batch_face_embeddings",
        sa.Column("face_id", sa.Integer, sa.ForeignKey("batch_faces.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("model_id", sa.String(64), primary_key=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("batch_jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("embedding", sa.LargeBinary, nullable=True),
        sa.Column("error", sa.String(1024), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_batch_face_embeddings_job_id", "batch_face_embeddings", ["job_id"])


def downgrade() -> None:
    op.drop_table("batch_face_embeddings")
