"""Tamper-evident audit log and templates sealed at rest.

`audit_log.prev_hash` / `audit_log.hash` chain every event to the one before it (facerec/store/audit_chain.py);
`facerec_info.audit_head` holds the last event's id and hash. Events written before this revision are chained
here, in id order, so `facerec audit verify` covers them from now on (not what happened to them before).
`templates.key_id` names the key a sealed template needs (NULL: stored in the clear).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

from facerec.store.audit_chain import GENESIS, HEAD_KEY, canonical_details, event_hash, head_value

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("prev_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("hash", sa.String(64), nullable=True))
    with op.batch_alter_table("templates") as batch:
        batch.add_column(sa.Column("key_id", sa.String(32), nullable=True))
    audit = sa.table("audit_log", sa.column("at", sa.DateTime(timezone=True)), sa.column("details", sa.JSON),
                     *(sa.column(c) for c in ("id", "action", "person_name", "outcome", "score", "threshold",
                                             "model_id", "prev_hash", "hash")))
    bind = op.get_bind()
    prev, last_id = GENESIS, 0
    for row in bind.execute(sa.select(audit).order_by(audit.c.id)).mappings().all():
        details = canonical_details(row["details"])
        digest = event_hash(prev, row["at"], row["action"], row["person_name"], row["outcome"], row["score"],
                            row["threshold"], row["model_id"], details)
        bind.execute(audit.update().where(audit.c.id == row["id"]).values(prev_hash=prev, hash=digest,
                                                                         details=details))
        prev, last_id = digest, row["id"]
    info = sa.table("facerec_info", sa.column("key", sa.String), sa.column("value", sa.String))
    op.bulk_insert(info, [{"key": HEAD_KEY, "value": head_value(last_id, prev) if last_id else ""}])


def downgrade() -> None:
    op.execute(f"DELETE FROM facerec_info WHERE key = '{HEAD_KEY}'")
    with op.batch_alter_table("templates") as batch:
        batch.drop_column("key_id")
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("hash")
        batch.drop_column("prev_hash")
