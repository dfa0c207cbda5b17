"""Schema migrations (Alembic): a store written by the first release (39b85a2) opens and upgrades
in place with its rows kept, a new store and an upgraded one both match the tables in code, and a
store from a newer kpiwatch is refused with one line (exit 2) and left as it is. On SQLite and,
when KPIWATCH_TEST_POSTGRES_URL is set, on the real PostgreSQL (a throw-away schema per test)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from storage import BACKENDS, store_url

from alerts.store import (
    HEAD,
    MIGRATIONS,
    SCHEMA_VERSION,
    VERSION_TABLE,
    CyclePlan,
    EvaluationRecord,
    Store,
    StoreVersionError,
    metadata,
)
from forecaster.cli import cli

FIXTURES = Path(__file__).parent / "fixtures"
OLD_SQLITE = FIXTURES / "store-39b85a2.sqlite"
OLD_POSTGRES_DDL = FIXTURES / "store-39b85a2.postgresql.sql"
OLD_TABLES = ("kpiwatch_meta", "evaluations", "incidents", "outbox", "notifications", "snoozes", "feedback", "ledger")


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))


def _dump(url: str, tables: tuple[str, ...] = OLD_TABLES) -> dict[str, list[tuple]]:
    """Every row of `tables`, sorted (what must survive an upgrade or a refusal unchanged)."""
    engine = _engine(url)
    try:
        reflected = sa.MetaData()
        reflected.reflect(engine, only=list(tables))
        with engine.connect() as conn:
            return {name: sorted(tuple(row) for row in conn.execute(sa.select(reflected.tables[name])))
                    for name in tables}
    finally:
        engine.dispose()


def _schema(url: str) -> dict[str, list[str]]:
    """Table -> column names and index names (to see that nothing was created or altered)."""
    engine = _engine(url)
    try:
        inspector = sa.inspect(engine)
        return {table: [c["name"] for c in inspector.get_columns(table)]
                + sorted(str(i["name"]) for i in inspector.get_indexes(table))
                for table in sorted(inspector.get_table_names())}
    finally:
        engine.dispose()


def _differences(url: str) -> list:
    """What Alembic's autogenerate sees between the store and the tables in `alerts.store`."""
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE, "compare_type": True})
            return compare_metadata(context, metadata)
    finally:
        engine.dispose()


def _copy_rows(source: str, target: str) -> None:
    """Copy the first release's rows from the SQLite fixture into the PostgreSQL schema, and move
    its id sequences past them as that release's own inserts would have."""
    src, dst = _engine(source), _engine(target)
    try:
        old, new = sa.MetaData(), sa.MetaData()
        old.reflect(src, only=list(OLD_TABLES))
        new.reflect(dst, only=list(OLD_TABLES))
        with src.connect() as read, dst.begin() as write:
            for name in OLD_TABLES:
                rows = [dict(row) for row in read.execute(sa.select(old.tables[name])).mappings()]
                if rows:
                    write.execute(new.tables[name].insert(), rows)
                if "id" in new.tables[name].c:
                    write.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                                          f"(SELECT coalesce(max(id), 0) + 1 FROM {name}), false)"))
    finally:
        src.dispose()
        dst.dispose()


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from store_url(request.param, tmp_path)


@pytest.fixture
def old_url(url: str, tmp_path: Path) -> str:
    """A store as the first release left it: the committed SQLite file, or on PostgreSQL that
    release's DDL with the same rows."""
    if url.startswith("sqlite"):
        shutil.copy(OLD_SQLITE, tmp_path / "state.db")
        return url
    engine = _engine(url)
    try:
        with engine.begin() as conn:
            ddl = "\n".join(line for line in OLD_POSTGRES_DDL.read_text().splitlines() if not line.startswith("--"))
            for statement in ddl.split(";\n"):
                if statement.strip():
                    conn.exec_driver_sql(statement)
    finally:
        engine.dispose()
    _copy_rows(f"sqlite:///{OLD_SQLITE}", url)
    return url


def test_a_store_from_the_first_release_opens_and_upgrades_with_its_rows(old_url: str) -> None:
    before = _dump(old_url)
    assert "detector_states" not in _schema(old_url) and VERSION_TABLE not in _schema(old_url)

    store = Store(old_url)
    try:
        # Every row the first release wrote is still there, value for value; each incident is
        # now a group of one (a last column, `group_id`, names it).
        after = _dump(old_url)
        grouped = after.pop("incidents")
        assert [row[:-1] for row in grouped] == before.pop("incidents")
        assert after == {**before, "kpiwatch_meta": [("schema_version", str(SCHEMA_VERSION))]}
        groups = {g.key: g for g in store.groups()}
        assert sorted(groups) == sorted(row[3] for row in grouped)
        assert all(groups[row[3]].id == row[-1] and groups[row[3]].state == row[4] for row in grouped)
        assert _dump(old_url, (VERSION_TABLE,)) == {VERSION_TABLE: [(HEAD,)]}
        assert _dump(old_url, ("detector_states",)) == {"detector_states": []}
        # ... and today's code reads them as before: incidents, the unsettled message, NaN as missing.
        mobile = store.open_incidents()[("conversion_rate", "device=mobile")]
        assert (mobile.severity, mobile.message_key) == ("critical", "message|#kpi-alerts|mobile-cr")
        assert store.get("message|#kpi-alerts|mobile-cr").state == "sending"
        assert store.children("message|#kpi-alerts|mobile-cr", "chart")[0].file == b"\x89PNG\r\n\x1a\nfake"
        assert store.counts() == {"pending": 2, "sending": 1, "sent": 1, "dead": 0}
        assert store.evaluations_of("sessions")[0].actual is None
        assert store.last_judged("conversion_rate", "device=mobile") == datetime(2025, 11, 5, tzinfo=timezone.utc)
        assert [s.reason for s in store.snoozes(datetime(2025, 11, 7, tzinfo=timezone.utc))] == ["migration"]
        # It takes new writes in the new schema (ids go on after the old rows).
        period = datetime(2025, 11, 6, tzinfo=timezone.utc)
        store.record_cycle([EvaluationRecord("conversion_rate", "", period, 0.03, 0.03, 0.025, 0.035, 0.1, False)],
                           CyclePlan(judged={("conversion_rate", ""): period}))
        assert len(store.evaluations_of("conversion_rate")) == 4
    finally:
        store.close()
    assert _differences(old_url) == []  # upgraded = the tables in code


def test_the_head_the_store_knows_is_the_newest_revision() -> None:
    """`alerts.store.HEAD` lets a store at the head open without Alembic: it must be the head."""
    from alembic.script import ScriptDirectory

    assert ScriptDirectory(str(MIGRATIONS)).get_current_head() == HEAD == "0003_incident_groups"


def test_a_new_store_is_built_by_the_migrations_and_matches_the_code(url: str) -> None:
    Store(url).close()
    assert _differences(url) == []
    assert _dump(url, (VERSION_TABLE, "kpiwatch_meta")) == {
        VERSION_TABLE: [(HEAD,)], "kpiwatch_meta": [("schema_version", str(SCHEMA_VERSION))]}


def test_a_store_of_a_development_build_with_detector_states_upgrades(url: str) -> None:
    """Builds between the first release and migrations created `detector_states` by create_all
    and kept schema version 1 without a version table: stamped and upgraded, the table kept."""
    Store(url).close()
    engine = _engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {VERSION_TABLE}"))
        conn.execute(sa.text("UPDATE kpiwatch_meta SET value = '1'"))
        # What later revisions add did not exist in those builds.
        conn.execute(sa.text("DROP TABLE incident_groups"))
        conn.execute(sa.text("DROP INDEX ix_incident_group"))
        conn.execute(sa.text("DROP INDEX uq_feedback_verdict"))
        conn.execute(sa.text("ALTER TABLE incidents DROP COLUMN group_id"))
        conn.execute(sa.text("INSERT INTO detector_states (kpi, segment, next_period, state, updated_at) "
                             "VALUES ('cpa', '', '2025-11-06 00:00:00', :blob, '2025-11-06 00:00:00')"),
                     {"blob": b"stepped"})
    engine.dispose()
    Store(url).close()
    assert _dump(url, (VERSION_TABLE, "kpiwatch_meta")) == {
        VERSION_TABLE: [(HEAD,)], "kpiwatch_meta": [("schema_version", str(SCHEMA_VERSION))]}
    assert [row[:2] for row in _dump(url, ("detector_states",))["detector_states"]] == [("cpa", "")]


@pytest.mark.parametrize("newer", ["revision", "schema_version"])
def test_a_store_from_a_newer_kpiwatch_is_refused_and_left_unchanged(url: str, newer: str, tmp_path: Path) -> None:
    Store(url).close()
    engine = _engine(url)
    with engine.begin() as conn:
        if newer == "revision":
            conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '0099_future'"))
        else:
            conn.execute(sa.text("UPDATE kpiwatch_meta SET value = '99'"))
    engine.dispose()
    tables = (*OLD_TABLES, VERSION_TABLE, "detector_states")
    rows, schema = _dump(url, tables), _schema(url)

    with pytest.raises(StoreVersionError, match="written by a newer kpiwatch .*; upgrade kpiwatch, or point "
                                                "`state:` at another store") as refused:
        Store(url)
    assert refused.value.exit_code == 2

    config = tmp_path / "kpiwatch.yaml"
    config.write_text(f"state: {url}\nsources: {{default: {{type: demo}}}}\n"
                      "kpis: {sessions: {metric: sessions}}\n")
    result = CliRunner().invoke(cli, ["alerts", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and "written by a newer kpiwatch" in result.stderr, result.stderr
    assert "Traceback" not in result.output
    assert (_dump(url, tables), _schema(url)) == (rows, schema)  # nothing changed
