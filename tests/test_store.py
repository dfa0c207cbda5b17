"""The state store on SQLite and, when KPIWATCH_TEST_POSTGRES_URL is set, on the real PostgreSQL."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from storage import BACKENDS, store_url

from alerts.store import (
    SCHEMA_VERSION,
    VERSION_TABLE,
    CyclePlan,
    EvaluationRecord,
    IncidentOpen,
    OutboxItem,
    Store,
    StoreError,
    StoreVersionError,
)
from forecaster.types import PackedState, segment_key

T0 = datetime(2025, 12, 10, tzinfo=timezone.utc)


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path):
    yield from store_url(request.param, tmp_path)


@pytest.fixture
def store(url):
    opened = Store(url)
    yield opened
    opened.close()


def record(period: datetime = T0, actual: float = 1.0, anomalous: bool = False, segment: str = "") -> EvaluationRecord:
    return EvaluationRecord("conversion_rate", segment, period, actual, 2.0, 1.5, 2.5, 0.9, anomalous)


def message(key: str = "message|#kpi-alerts|abc", **fields) -> OutboxItem:
    return OutboxItem(key, fields.pop("kind", "message"), fields.pop("channel", "#kpi-alerts"), "text", **fields)


def test_segment_key_is_sorted_and_empty_for_the_total():
    assert segment_key({"device": "mobile", "channel": "email"}) == "channel=email,device=mobile"
    assert segment_key({}) == ""


def test_schema_is_created_once_and_versioned(url):
    first = Store(url)
    first.close()
    again = Store(url)  # opening an existing store neither fails nor duplicates the version rows
    with again.engine.begin() as conn:
        rows = conn.execute(sa.text("SELECT value FROM kpiwatch_meta WHERE key = 'schema_version'")).all()
        revisions = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).all()
    again.close()
    assert rows == [(str(SCHEMA_VERSION),)]
    assert revisions == [("0003_incident_groups",)]


def test_a_newer_schema_is_refused_with_one_line(url):
    store = Store(url)
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE kpiwatch_meta SET value = '99' WHERE key = 'schema_version'"))
    store.close()
    with pytest.raises(StoreVersionError, match=r"written by a newer kpiwatch \(schema version 99; this one knows "
                                                r"up to 0003_incident_groups, schema version 3\); upgrade kpiwatch"):
        Store(url)


def test_evaluations_are_upserted_and_keep_nan_as_missing(store):
    store.record_cycle([record(actual=1.0)], CyclePlan())
    store.record_cycle([record(actual=3.0, anomalous=True), record(T0 + timedelta(days=1), math.nan)], CyclePlan())
    rows = store.evaluations_of("conversion_rate")
    assert [(r.period, r.actual, r.anomalous) for r in rows][0] == (T0, 3.0, True)
    assert rows[1].actual is None  # NaN is stored as NULL: missing, not zero
    assert len(rows) == 2


def State(day: int) -> PackedState:  # noqa: N802 - reads like the detector's State it stands for
    """A packed detector state as the workers hand it to the store: bytes and the next period."""
    return PackedState(b"state %d" % day, T0 + timedelta(days=day))


def test_upserts_update_rows_in_place(store):
    """INSERT ... ON CONFLICT: a re-judged period, a detector state and a reopened incident keep
    their rows (and ids) instead of being deleted and inserted again."""
    store.record_cycle([record(actual=1.0), record(T0 + timedelta(days=1), 2.0)],
                       CyclePlan(states={("conversion_rate", ""): State(1)}))
    store.record_cycle([record(actual=3.0)], CyclePlan(states={("conversion_rate", ""): State(2)}))
    with store.engine.begin() as conn:
        evaluations = conn.execute(sa.text("SELECT id, actual FROM evaluations ORDER BY id")).all()
        states = conn.execute(sa.text("SELECT kpi, next_period FROM detector_states")).all()
    assert evaluations == [(1, 3.0), (2, 2.0)]
    assert len(states) == 1 and store.detector_states("conversion_rate")[""] == State(2)
    opened = IncidentOpen("cpa", "", "k1", "up", "warning", T0, "m", "rose")
    store.record_cycle([], CyclePlan(opened=[opened]))
    first = store.open_incidents()[("cpa", "")]
    store.record_cycle([], CyclePlan(resolved=[first.id]))
    store.record_cycle([], CyclePlan(opened=[opened]))  # the same key alerts again: reopened
    assert store.open_incidents()[("cpa", "")].id == first.id


def test_record_cycle_is_one_transaction(store):
    """A failing item rolls the whole cycle back: no evaluation without its outbox row."""
    bad = OutboxItem("k", "message", "#c", None)  # text is NOT NULL: the insert fails
    with pytest.raises(Exception):
        store.record_cycle([record()], CyclePlan(items=[message(), bad]))
    assert store.evaluations_of("conversion_rate") == []
    assert store.counts()["pending"] == 0


def test_a_queued_key_is_not_queued_twice(store):
    assert store.record_cycle([], CyclePlan(items=[message()])) == 1
    assert store.record_cycle([], CyclePlan(items=[message()])) == 0
    assert store.counts()["pending"] == 1


def test_outbox_lifecycle_and_notification_log(store):
    store.queue([message()])
    row = store.due()[0]
    lease = datetime.now(timezone.utc) + timedelta(seconds=120)
    assert store.mark_sending(row.id, "pending", 0, lease)
    assert not store.mark_sending(row.id, "pending", 0, lease)  # a second sender loses the claim
    assert store.get(row.key).state == "sending" and store.get(row.key).attempts == 1
    assert store.due() == []  # leased: nobody else touches it while it is in flight
    later = datetime.now(timezone.utc) + timedelta(seconds=30)
    store.mark_retry(row.id, later, "http_500", unknown=True)
    assert store.due() == []  # not due before its next attempt
    assert store.next_attempt() == later.replace(microsecond=later.microsecond)
    assert store.due(later + timedelta(seconds=1))[0].state == "sending"  # look before posting again
    store.mark_sent(row.id, "C0ALERTS", "1700000000.000100")
    sent = store.get(row.key)
    assert (sent.state, sent.slack_channel, sent.slack_ts) == ("sent", "C0ALERTS", "1700000000.000100")
    log = store.notification_log()
    assert [(n["key"], n["slack_ts"]) for n in log] == [(row.key, "1700000000.000100")]


def test_dead_letters_are_kept_and_can_be_retried(store):
    store.queue([message("a"), message("b")])
    first = store.get("a")
    store.mark_dead(first.id, "channel_not_found")
    assert store.counts()["dead"] == 1
    assert [r.key for r in store.due()] == ["b"]  # the others go on
    assert store.retry_dead() == 1
    assert [r.key for r in store.due()] == ["a", "b"]  # oldest first: order per key is kept


def test_children_and_files_round_trip(store):
    png = b"\x89PNG\r\n\x1a\nfake"
    store.queue([message("m"), message("m|chart|x", kind="chart", parent_key="m", file=png),
                 message("resolve|x|m", kind="resolve", parent_key="m", payload={"line": "resolved"})])
    assert [r.file for r in store.children("m", "chart")] == [png]
    assert store.children("m", "resolve")[0].payload == {"line": "resolved"}


def test_incidents_open_update_and_resolve(store):
    opened = IncidentOpen("conversion_rate", "device=mobile", "key-1", "down", "critical", T0, "m", "fell 40%")
    store.record_cycle([], CyclePlan(opened=[opened]))
    incident = store.open_incidents()[("conversion_rate", "device=mobile")]
    assert (incident.state, incident.first_period, incident.message_key) == ("open", T0, "m")
    store.record_cycle([], CyclePlan(still_open={incident.id: T0 + timedelta(days=1)}, renotified=[incident.id]))
    assert store.open_incidents()[("conversion_rate", "device=mobile")].last_period == T0 + timedelta(days=1)
    store.record_cycle([], CyclePlan(resolved=[incident.id]))
    assert store.open_incidents() == {}
    assert store.incidents_of_message("m")[0].state == "resolved"


def test_two_open_incidents_for_one_segment_are_refused(store):
    """The partial unique index holds even if two writers race."""
    first = IncidentOpen("cpa", "", "k1", "up", "warning", T0, None, "")
    second = IncidentOpen("cpa", "", "k2", "up", "warning", T0 + timedelta(days=1), None, "")
    store.record_cycle([], CyclePlan(opened=[first]))
    with pytest.raises(StoreError, match="state store .* failed: "):
        store.record_cycle([], CyclePlan(opened=[second]))


def test_snoozes_cover_a_segment_or_all_until_their_end(store):
    now = datetime.now(timezone.utc)
    store.add_snooze("sessions", "channel=email", now + timedelta(days=2), "migration")
    store.add_snooze("cpa", "", now - timedelta(days=1))  # already over
    active = store.snoozes(now)
    assert [(s.kpi, s.segment, s.reason) for s in active] == [("sessions", "channel=email", "migration")]
    assert active[0].covers("sessions", "channel=email", now)
    assert not active[0].covers("sessions", "channel=paid_search", now)
    assert not active[0].covers("sessions", "channel=email", now + timedelta(days=3))


def test_feedback_and_ledger(store):
    store.add_feedback("key-1", "false_alarm", "anna", "a promotion")
    assert [(f["verdict"], f["user"]) for f in store.feedback_for("key-1")] == [("false_alarm", "anna")]
    assert store.last_judged("sessions") is None
    store.set_judged("sessions", "", T0)
    store.set_judged("sessions", "", T0 - timedelta(days=3))  # never backwards
    assert store.last_judged("sessions") == T0


def test_bad_urls_are_one_line_errors(tmp_path):
    with pytest.raises(StoreError, match="is not a database URL; use sqlite:///path/state.db"):
        Store("not a url")
    with pytest.raises(StoreError, match=r"cannot open the state store postgresql\+psycopg://kw:\*\*\*@127.0.0.1:1/x"):
        Store("postgresql://kw:secret@127.0.0.1:1/x?connect_timeout=2")


def test_two_processes_creating_the_schema_together_both_succeed(url):
    """A daemon and a CLI command starting at once race on CREATE TABLE; neither fails."""
    import subprocess
    import sys

    code = "import sys; from alerts.store import Store; Store(sys.argv[1]).close()"
    runs = [subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errors = [run.communicate(timeout=120)[1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0, 0], errors


def _open_and_read(path: str) -> str:
    """Open a SQLite store file through kpiwatch's engine and read it ("ok" or the error)."""
    from alerts.store import _engine

    try:
        with _engine(f"sqlite:///{path}").connect() as conn:
            conn.execute(sa.text("SELECT count(*) FROM sqlite_master"))
        return "ok"
    except Exception as exc:  # the test wants to see whatever went wrong
        return str(exc).splitlines()[0]


def test_processes_opening_a_new_sqlite_file_together_never_see_database_is_locked(tmp_path):
    """Switching a new file to WAL answers "database is locked" at once (no busy timeout) when
    another process switches it too: 41 of 1,200 opens failed so before the retry."""
    import multiprocessing

    paths = [str(tmp_path / f"s{i}.db") for i in range(80)]
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = [r for path in paths for r in pool.map(_open_and_read, [path] * 4)]
    assert [r for r in results if r != "ok"] == []
