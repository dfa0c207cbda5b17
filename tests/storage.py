"""State-store URLs for tests: a SQLite file, and the real PostgreSQL when
`KPIWATCH_TEST_POSTGRES_URL` is set (each test gets its own schema, dropped afterwards)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

POSTGRES_ENV = "KPIWATCH_TEST_POSTGRES_URL"
BACKENDS = ["sqlite", "postgresql"]


def postgres_url_or_skip() -> str:
    """The test PostgreSQL's URL, or skip saying why."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"{POSTGRES_ENV} is not set: PostgreSQL store tests skipped (CI sets it; "
                    "e.g. postgresql://postgres@127.0.0.1:5432/test)")
    return url


def store_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """Yield a fresh, empty store URL for `backend`; PostgreSQL gets a throw-away schema."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    base = postgres_url_or_skip()
    schema = f"kpiwatch_test_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(base.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in base else "?"
    try:
        yield f"{base}{separator}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()
