"""Persistence: SQLAlchemy Core tables, engines for SQLite and Postgres, Alembic migrations."""
