"""The state store's schema migrations (Alembic): `env.py` and one file per revision in `versions/`.

`alerts.store.Store` runs them on open (`upgrade head`, no alembic.ini, no network); see README.md
beside this file for how a revision was made and how to add one.
"""
