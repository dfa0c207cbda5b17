"""Alembic revisions of the state store, oldest first (the file name starts with the revision)."""
