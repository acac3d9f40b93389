"""Batch identification over photo collections: jobs, files, faces (with embeddings), user constraints.

Revision ID: 0006
Revises: 0003
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batch_jobs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("model_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("roots", sa.JSON, nullable=False),
        sa.Column("stats", sa.JSON, nullable=False),
    )
    op.create_table(
        "batch_files",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("batch_jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("path", sa.String(4096), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("mtime_ns", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("error", sa.String(1024), nullable=True),
        sa.Column("scanned_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("job_id", "path", name="uq_batch_file_path"),
    )
    op.create_index("ix_batch_files_job_id", "batch_files", ["job_id"])
    op.create_index("ix_batch_files_sha256", "batch_files", ["sha256"])
    op.create_table(
        "batch_faces",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("batch_jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("file_id", sa.Integer, sa.ForeignKey("batch_files.id", ondelete="CASCADE"), nullable=False),
        sa.Column("face_index", sa.Integer, nullable=False),
        sa.Column("box", sa.JSON, nullable=False),
        sa.Column("detection_score", sa.Float, nullable=False),
        sa.Column("quality", sa.JSON, nullable=False),
        sa.Column("quality_passed", sa.Boolean, nullable=False),
        sa.Column("model_id", sa.String(64), nullable=False),
        sa.Column("embedding", sa.LargeBinary, nullable=False),
        sa.Column("match", sa.String(128), nullable=True),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("margin", sa.Float, nullable=False),
        sa.Column("candidates", sa.JSON, nullable=False),
        sa.Column("person", sa.String(128), nullable=True),
        sa.Column("cluster", sa.Integer, nullable=True),
        sa.UniqueConstraint("file_id", "face_index", name="uq_batch_face"),
    )
    for column in ("job_id", "file_id", "person", "cluster"):
        op.create_index(f"ix_batch_faces_{column}", "batch_faces", [column])
    op.create_table(
        "batch_constraints",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("batch_jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("face_a", sa.Integer, sa.ForeignKey("batch_faces.id", ondelete="CASCADE"), nullable=False),
        sa.Column("face_b", sa.Integer, sa.ForeignKey("batch_faces.id", ondelete="CASCADE"), nullable=True),
        sa.Column("name", sa.String(128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_batch_constraints_job_id", "batch_constraints", ["job_id"])


def downgrade() -> None:
    op.drop_table("batch_constraints")
    op.drop_table("batch_faces")
    op.drop_table("batch_files")
    op.drop_table("batch_jobs")
