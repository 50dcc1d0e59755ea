"""Alembic environment: runs on the connection ``manyheads.storage.migrate`` hands over.

Offline (``--sql``) mode and URLs from an ini file are deliberately unsupported: the store's
engine settings (WAL, busy timeout, write locking) live in ``manyheads.storage.engine``.
"""

from alembic import context

from manyheads.storage.migrate import VERSION_TABLE
from manyheads.storage.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through manyheads.storage.migrate, not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
