"""Alembic environment: migrates the connection handed over by store.migrate.upgrade()."""

from alembic import context

from ledger_server.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
