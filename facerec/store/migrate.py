"""Alembic, driven from code: `facerec db upgrade` and the embedded default's self-migration.

Alembic is imported only when a migration runs: checking the revision is one SELECT, so that opening an
up-to-date database costs milliseconds, not an import of alembic.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"  # inside the package (wheel and checkout)
# The newest revision in migrations/versions; tests/test_store_index.py checks it against Alembic's head.
HEAD_REVISION = "0007"


def alembic_config(connection: Connection | None = None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def alembic_head() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def is_known(revision: str) -> bool:
    """Whether this facerec has a migration of that id (a database from a newer facerec has not)."""
    from alembic.script import ScriptDirectory

    return revision in {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


# pg_advisory_xact_lock key: "facerec" in ASCII. One migration at a time per database.
PG_MIGRATION_LOCK = 0x66616365726563


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate in one transaction that first takes the database's migration lock, so processes opening a
    new database together take turns and the later ones find it migrated (pg_advisory_xact_lock on
    PostgreSQL; BEGIN IMMEDIATE, SQLite's write lock, which also makes its DDL all-or-nothing)."""
    from alembic import command

    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK})
        elif conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        command.upgrade(alembic_config(conn), revision)
