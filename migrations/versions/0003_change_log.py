"""Database identity and template change log: long-lived processes catch up without a rebuild.

`facerec_info.database_id` (a random id written once, at creation or upgrade) binds an index file to the
database it was built from; `facerec_info.templates_token` (a new random value with every generation) tells
an index built from this database's history from one built after a restored backup diverged from it. `template_changes` records which template ids each generation added or removed,
so a process whose index is at generation g applies the changes since g instead of rebuilding;
`facerec_info.change_log_from` is the generation the log starts at (older indexes are rebuilt).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""
import uuid

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "template_changes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("template_id", sa.Integer, nullable=False),
        sa.Column("added", sa.Boolean, nullable=False),
    )
    op.create_index("ix_template_changes_generation", "template_changes", ["generation"])
    info = sa.table("facerec_info", sa.column("key", sa.String), sa.column("value", sa.String))
    bind = op.get_bind()
    generation = bind.execute(
        sa.select(info.c.value).where(info.c.key == "templates_generation")
    ).scalar()
    op.bulk_insert(info, [
        {"key": "database_id", "value": uuid.uuid4().hex},
        {"key": "change_log_from", "value": str(int(generation or 0))},
        {"key": "templates_token", "value": uuid.uuid4().hex},
    ])


def downgrade() -> None:
    op.execute("DELETE FROM facerec_info WHERE key IN ('database_id', 'change_log_from', 'templates_token')")
    op.drop_index("ix_template_changes_generation", "template_changes")
    op.drop_table("template_changes")
