"""Alembic migrations of the job database (`reprlab.server.db.init_db` runs them to head)."""
