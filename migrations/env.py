"""Alembic environment. facerec passes an open connection (see facerec/store/migrate.py); the plain
`alembic` command works too with `-x url=...` or FACEREC_DB."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from facerec.store.schema import Base

target_metadata = Base.metadata
config = context.config


def run_with(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run_with(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get("FACEREC_DB")
    if not url:
        raise SystemExit("give the database as `alembic -x url=...` or FACEREC_DB")
    with create_engine(url).begin() as conn:
        run_with(conn)
