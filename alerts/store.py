"""What kpiwatch remembers between runs, in SQL (SQLAlchemy Core): SQLite file or PostgreSQL.

Tables
- `evaluations`: every judged period per KPI and segment (upserted: a re-check overwrites).
- `incident_groups`: one row per incident as people see it: the anomalies of one check that share
  a cause (`alerts.grouping`), its root cause, the Slack card that announced it (for the repeat
  interval, the resolve and the buttons' updates) and how it was closed.
- `incidents`: one row per anomaly episode of a KPI segment (a member of a group, `group_id`),
  open until the KPI is normal again.
- `outbox`: messages to send, each with a unique key; written in the same transaction as the
  evaluations that caused them, sent later by the delivery step (`alerts.incidents`).
- `notifications`: the log of what really reached Slack (written after a successful send).
- `feedback`: what people said about an incident (`alert_key` = the group's key), one row per
  verdict: expected | false_alarm | snooze | resolve.
- `snoozes`, `ledger` (the last judged period per KPI segment, for the daemon).
- `kpiwatch_meta`: the schema version (read by releases from before migrations, which refuse a
  newer store); `kpiwatch_alembic_version`: the Alembic revision.

Opening a store creates or upgrades its schema with the Alembic revisions in `alerts/migrations/`
(one transaction under a lock, so two processes opening it together do not race); a store written
by a newer kpiwatch is refused and left as it is. Times are stored as naive UTC and returned
tz-aware UTC.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    IntegrityError,
    OperationalError,
    ProgrammingError,
    SQLAlchemyError,
)

from forecaster.types import KPIWatchError, PackedState

SCHEMA_VERSION = 3
"""`kpiwatch_meta`'s schema version at the newest revision (each revision that changes the schema
raises it, so older releases, which know only this number, refuse the store)."""

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "kpiwatch_alembic_version"  # not `alembic_version`: the database may hold another app's
BASELINE = "0001_baseline"  # the first release's schema: what a store made before migrations has
HEAD = "0003_incident_groups"
"""The newest revision in `alerts/migrations/versions/` (a test keeps the two in step): a store
already there opens without importing Alembic (a quarter of a second of every command's start)."""
_PG_MIGRATION_LOCK = 0x6B70_6D69  # pg_advisory_xact_lock key for upgrades ("kpmi")

OUTBOX_STATES = ("pending", "sending", "sent", "dead")
"""pending: not tried yet or failed without reaching Slack; sending: tried, outcome unknown (a
crash or a dropped connection: look for the key in the channel before posting again); sent; dead:
refused for good (`kpiwatch outbox retry` sends it again)."""


class StoreError(KPIWatchError):
    """The state store cannot be opened or written (exit code 3: like a source that is down)."""

    exit_code = 3


class StoreVersionError(StoreError):
    """The state store was written by a newer kpiwatch (exit code 2: upgrade kpiwatch or point
    `state:` elsewhere; nothing in the store is changed)."""

    exit_code = 2


class UTCDateTime(sa.types.TypeDecorator):
    """Naive UTC in the database (SQLite keeps no zone), tz-aware UTC in Python."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=timezone.utc)


metadata = sa.MetaData()

meta_table = sa.Table(
    "kpiwatch_meta", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)

evaluations = sa.Table(
    "evaluations", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kpi", sa.String(128), nullable=False),
    sa.Column("segment", sa.String(512), nullable=False),  # "channel=email,device=mobile"; "" = total
    sa.Column("period", UTCDateTime, nullable=False),
    sa.Column("actual", sa.Float),
    sa.Column("expected", sa.Float),
    sa.Column("lower", sa.Float),
    sa.Column("upper", sa.Float),
    sa.Column("score", sa.Float),
    sa.Column("anomalous", sa.Boolean, nullable=False),
    sa.Column("judged_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("kpi", "segment", "period", name="uq_evaluation"),
)

incidents = sa.Table(
    "incidents", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kpi", sa.String(128), nullable=False),
    sa.Column("segment", sa.String(512), nullable=False),
    sa.Column("alert_key", sa.String(700), nullable=False, unique=True),
    sa.Column("state", sa.String(16), nullable=False),  # open | resolved
    sa.Column("direction", sa.String(8), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("first_period", UTCDateTime, nullable=False),
    sa.Column("last_period", UTCDateTime, nullable=False),
    sa.Column("opened_at", UTCDateTime, nullable=False),
    sa.Column("notified_at", UTCDateTime, nullable=False),
    sa.Column("resolved_at", UTCDateTime),
    sa.Column("message_key", sa.String(700)),  # the outbox message that announced it
    sa.Column("summary", sa.Text, nullable=False, default=""),  # its one-line headline
    sa.Column("group_id", sa.Integer),  # its incident_groups row
)
sa.Index("ix_incident_group", incidents.c.group_id)
# At most one open incident per KPI segment, even with two writers (partial unique index).
incident_groups = sa.Table(
    "incident_groups", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),  # the number people use
    sa.Column("key", sa.String(700), nullable=False, unique=True),  # the root cause's alert key
    sa.Column("state", sa.String(16), nullable=False),  # open | resolved
    sa.Column("root_kpi", sa.String(128), nullable=False),
    sa.Column("root_segment", sa.String(512), nullable=False),
    sa.Column("direction", sa.String(8), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("first_period", UTCDateTime, nullable=False),
    sa.Column("opened_at", UTCDateTime, nullable=False),
    sa.Column("notified_at", UTCDateTime, nullable=False),
    sa.Column("resolved_at", UTCDateTime),
    sa.Column("message_key", sa.String(2000)),  # the cards that announced it, one per channel
    sa.Column("summary", sa.Text, nullable=False, default=""),
    sa.Column("why", sa.Text, nullable=False, default=""),  # why the root is named the root cause
    sa.Column("closed_by", sa.String(32), nullable=False, default=""),  # "" | back to normal | expected | ...
)
sa.Index("uq_open_incident", incidents.c.kpi, incidents.c.segment, unique=True,
         sqlite_where=incidents.c.state == "open", postgresql_where=incidents.c.state == "open")

outbox = sa.Table(
    "outbox", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(700), nullable=False, unique=True),
    sa.Column("kind", sa.String(16), nullable=False),  # message | chart | resolve | update
    sa.Column("channel", sa.String(128), nullable=False),
    sa.Column("parent_key", sa.String(700)),  # must be sent first (thread, update)
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("payload", sa.Text, nullable=False, default="{}"),  # JSON: blocks, title, ...
    sa.Column("file", sa.LargeBinary),  # a chart's PNG
    sa.Column("state", sa.String(16), nullable=False, default="pending"),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", UTCDateTime, nullable=False),
    sa.Column("last_error", sa.Text, nullable=False, default=""),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("sent_at", UTCDateTime),
    sa.Column("slack_channel", sa.String(64)),
    sa.Column("slack_ts", sa.String(64)),
)

notifications = sa.Table(
    "notifications", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(700), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("channel", sa.String(128), nullable=False),
    sa.Column("slack_channel", sa.String(64)),
    sa.Column("slack_ts", sa.String(64)),
    sa.Column("note", sa.Text, nullable=False, default=""),
    sa.Column("sent_at", UTCDateTime, nullable=False),
)

snoozes = sa.Table(
    "snoozes", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kpi", sa.String(128), nullable=False),
    sa.Column("segment", sa.String(512), nullable=False),  # "" = every segment of the KPI
    sa.Column("until", UTCDateTime, nullable=False),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

feedback = sa.Table(
    "feedback", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("alert_key", sa.String(700), nullable=False),
    sa.Column("verdict", sa.String(32), nullable=False),  # expected | false_alarm | snooze | resolve
    sa.Column("user", sa.String(128), nullable=False, default=""),
    sa.Column("note", sa.Text, nullable=False, default=""),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("uq_feedback_verdict", "alert_key", "verdict", unique=True),  # two clicks record once
)

# The detector's state per series (`forecaster.detect.State`, pickled and compressed): judging a
# new period steps it instead of walking two years of history again. Losing it costs only time.
detector_states = sa.Table(
    "detector_states", metadata,
    sa.Column("kpi", sa.String(128), primary_key=True),
    sa.Column("segment", sa.String(512), primary_key=True),
    sa.Column("next_period", UTCDateTime, nullable=False),
    sa.Column("state", sa.LargeBinary, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

ledger = sa.Table(
    "ledger", metadata,
    sa.Column("kpi", sa.String(128), primary_key=True),
    sa.Column("segment", sa.String(512), primary_key=True),
    sa.Column("last_period", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)


def utcnow() -> datetime:
    """The wall clock, tz-aware UTC."""
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class EvaluationRecord:
    """One judged period of one KPI segment (values in the KPI's units; NaN allowed)."""

    kpi: str
    segment: str
    period: datetime
    actual: float
    expected: float
    lower: float
    upper: float
    score: float
    anomalous: bool


@dataclass(frozen=True)
class OutboxItem:
    """A message to queue. key: unique; a key already queued is skipped (that makes a repeated
    check a no-op). parent_key: a message that must be sent first (its thread or its update)."""

    key: str
    kind: str
    channel: str
    text: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    parent_key: str | None = None
    file: bytes | None = None


@dataclass(frozen=True)
class IncidentOpen:
    """A new incident, announced by the message `message_key`."""

    kpi: str
    segment: str
    alert_key: str
    direction: str
    severity: str
    period: datetime
    message_key: str | None
    summary: str
    group_key: str = ""  # the incident group it belongs to: opened in the same plan, or open already


@dataclass(frozen=True)
class GroupOpen:
    """A new incident group: the anomalies of one check that share a cause (`alerts.grouping`).

    key: the root cause's alert key (unique); message_key: its cards, one per channel
    (newline-separated); why: why the root is named the root cause."""

    key: str
    root_kpi: str
    root_segment: str
    direction: str
    severity: str
    period: datetime
    message_key: str | None
    summary: str
    why: str = ""


@dataclass(frozen=True)
class CyclePlan:
    """Everything one check changes, applied in one transaction by `Store.record_cycle`.

    opened: new member incidents (one per series), each naming its group; groups_opened: the
    new groups (inserted first). still_open: incident id -> its latest anomalous period;
    renotified: member ids repeated now; resolved: member ids back to normal.
    groups_renotified / groups_resolved: group ids repeated now / over (a group is over when its
    last open member is; its `resolve` items are in `items`).
    judged: (kpi, segment) -> the period now judged (the daemon's ledger moves with the cycle).
    states: (kpi, segment) -> the detector state after the check (stored with its evaluations).
    """

    opened: Sequence[IncidentOpen] = ()
    still_open: Mapping[int, datetime] = field(default_factory=dict)
    renotified: Sequence[int] = ()
    resolved: Sequence[int] = ()
    items: Sequence[OutboxItem] = ()
    judged: Mapping[tuple[str, str], datetime] = field(default_factory=dict)
    states: Mapping[tuple[str, str], Any] = field(default_factory=dict)
    groups_opened: Sequence[GroupOpen] = ()
    groups_renotified: Sequence[int] = ()
    groups_resolved: Sequence[int] = ()


@dataclass(frozen=True)
class Incident:
    """One anomaly episode of one series: a member of an incident group."""

    id: int
    kpi: str
    segment: str
    alert_key: str
    state: str
    direction: str
    severity: str
    first_period: datetime
    last_period: datetime
    notified_at: datetime
    resolved_at: datetime | None
    message_key: str | None
    summary: str
    group_id: int | None = None


@dataclass(frozen=True)
class IncidentGroup:
    """An incident as people see it: a root cause and its members (every member episode, open
    or over, root first). closed_by: "" while open, else "back to normal", or the verdict that
    closed it ("expected", "resolve", "false_alarm")."""

    id: int
    key: str
    state: str
    root_kpi: str
    root_segment: str
    direction: str
    severity: str
    first_period: datetime
    opened_at: datetime
    notified_at: datetime
    resolved_at: datetime | None
    message_key: str | None
    summary: str
    why: str
    closed_by: str
    members: tuple[Incident, ...] = ()

    @property
    def message_keys(self) -> list[str]:
        """Its cards' outbox keys, one per channel."""
        return [key for key in (self.message_key or "").split("\n") if key]


@dataclass(frozen=True)
class FeedbackRecord:
    """One verdict on an incident, with the member series it covers (for the detector's rule)."""

    group_key: str
    verdict: str
    user: str
    created_at: datetime
    kpi: str
    segment: str
    first_period: datetime
    last_period: datetime


@dataclass(frozen=True)
class OutboxRow:
    id: int
    key: str
    kind: str
    channel: str
    parent_key: str | None
    text: str
    payload: dict[str, Any]
    file: bytes | None
    state: str
    attempts: int
    next_attempt_at: datetime
    last_error: str
    created_at: datetime
    sent_at: datetime | None
    slack_channel: str | None
    slack_ts: str | None


@dataclass(frozen=True)
class Snooze:
    kpi: str
    segment: str
    until: datetime
    reason: str

    def covers(self, kpi: str, segment: str, at: datetime) -> bool:
        """True when this snooze silences `kpi`/`segment` at time `at`."""
        return self.kpi == kpi and self.segment in ("", segment) and at < self.until


class Store:
    """The state store at a SQLAlchemy URL (`sqlite:///path/state.db`, `postgresql://...`).

    Opening creates or upgrades the schema (Alembic, `alerts/migrations/`) and refuses a store
    from a newer kpiwatch (`StoreVersionError`); any failure to reach the database is one
    `StoreError` line naming the URL (password hidden).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _engine(url)
        self.safe_url = self.engine.url.render_as_string(hide_password=True)
        try:
            self._migrate()
        except StoreError:
            self.engine.dispose()
            raise
        except SQLAlchemyError as exc:
            self.engine.dispose()
            raise StoreError(f"cannot open the state store {self.safe_url}: {_first_line(exc)}; "
                             "check `state:` in the config and that the database is running") from None
        self._file = _file_identity(self.engine)

    def _migrate(self, attempts: int = 5) -> None:
        """Bring the schema to the newest revision. A store already there costs one read; an
        upgrade runs in one transaction under a lock, so a daemon and a CLI command opening a
        store together do not race. The retry covers what a lock cannot: a dropped link, and a
        SQLite "database is locked" that the busy timeout does not wait out (`_wal_mode` retries
        the one case reproduced; this is the backstop for the store's first read)."""
        from alembic.script import ScriptDirectory
        from alembic.util import CommandError

        script = None
        for attempt in range(attempts):
            upgrading = False  # a store that cannot be read at all fails at once, unless locked
            try:
                if _at_head(self.engine):
                    return
                upgrading = True
                script = script or ScriptDirectory(str(MIGRATIONS))
                head = script.get_current_head()
                with self.engine.connect() as conn:
                    current = self._revisions(conn, script)
                    conn.rollback()
                    if current != (head,):
                        with _migration_lock(conn):
                            self._upgrade(conn, script)
                return
            except CommandError as exc:  # e.g. a revision file missing from a broken install
                raise StoreError(f"cannot upgrade the state store {self.safe_url}: {exc}; reinstall kpiwatch") from None
            except (OperationalError, IntegrityError, ProgrammingError) as exc:
                if attempt == attempts - 1 or not (upgrading or "database is locked" in str(exc)):
                    raise
                time.sleep(0.2 * (attempt + 1))

    def _revisions(self, conn: Connection, script: Any) -> tuple[str, ...]:
        """The store's Alembic revisions (() for a new store or one made before migrations);
        a store a newer kpiwatch has upgraded is refused here, before anything is written."""
        from alembic.runtime.migration import MigrationContext

        current = tuple(MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
                        .get_current_heads())
        known = {rev.revision for rev in script.walk_revisions()}
        newer = [rev for rev in current if rev not in known]
        found = _meta_version(conn)
        if newer or (found is not None and found > SCHEMA_VERSION):
            seen = f"revision {newer[0]}" if newer else f"schema version {found}"
            raise StoreVersionError(
                f"the state store {self.safe_url} was written by a newer kpiwatch ({seen}; this one knows up to "
                f"{script.get_current_head()}, schema version {SCHEMA_VERSION}); upgrade kpiwatch, or point `state:` "
                "at another store (this one was left unchanged)")
        return current

    def _upgrade(self, conn: Connection, script: Any) -> None:
        """Run the revisions inside the caller's locked transaction. A store made before
        migrations (tables, no version table) is first stamped with the baseline it has."""
        from alembic import command
        from alembic.config import Config

        if self._revisions(conn, script) == (script.get_current_head(),):
            return  # another process upgraded it while we waited for the lock
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        if not self._revisions(conn, script) and _meta_version(conn) is not None:
            command.stamp(config, BASELINE)
        command.upgrade(config, "head")

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction; database errors become a `StoreError` (nothing half-written)."""
        self._check_file()
        try:
            with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:  # IntegrityError too: e.g. two writers on one incident
            raise StoreError(f"state store {self.safe_url} failed: {_first_line(exc)}{_hint(exc)}") from None

    def _check_file(self) -> None:
        """A SQLite file deleted (or replaced) under a running store: refuse at once, loudly.
        SQLite would go on writing into the unlinked file, and all of it would be lost at exit.
        One stat per transaction (microseconds)."""
        if self._file is None:
            return
        path, identity = self._file
        try:
            found = os.stat(path)
        except FileNotFoundError:
            what = "deleted"
        else:
            if (found.st_dev, found.st_ino) == identity:
                return
            what = "replaced by another file"
        self.engine.dispose()  # its connections point at the old file: never write there again
        raise StoreError(f"state store file {path} was {what} while kpiwatch was using it; nothing more is "
                         "written: restore it from a backup if you have one, then restart kpiwatch (a missing "
                         "file starts a new, empty store)")

    # -- evaluations and incidents ------------------------------------------------------------

    def open_incidents(self) -> dict[tuple[str, str], Incident]:
        """The open incidents by (kpi, segment)."""
        with self.transaction() as conn:
            rows = conn.execute(sa.select(incidents).where(incidents.c.state == "open")).mappings().all()
        return {(r["kpi"], r["segment"]): Incident(**_incident_fields(r)) for r in rows}

    def incidents_of_message(self, message_key: str) -> list[Incident]:
        """The incidents a message announced (to re-render it when one resolves)."""
        with self.transaction() as conn:
            rows = conn.execute(sa.select(incidents).where(incidents.c.message_key == message_key)
                                .order_by(incidents.c.id)).mappings().all()
        return [Incident(**_incident_fields(r)) for r in rows]

    def record_cycle(self, records: Sequence[EvaluationRecord], plan: CyclePlan, now: datetime | None = None) -> int:
        """Store one check's evaluations and apply its plan, all in one transaction.

        Returns how many outbox items were new (items whose key is already queued are skipped).
        """
        now = now or utcnow()
        with self.transaction() as conn:
            _replace_evaluations(conn, records, now)
            for group in plan.groups_opened:
                _open_group(conn, group, now)
            group_ids = _group_ids(conn, {opened.group_key for opened in plan.opened if opened.group_key})
            for opened in plan.opened:
                _open_incident(conn, opened, now, group_ids.get(opened.group_key))
            for incident_id, period in plan.still_open.items():
                conn.execute(incidents.update()  # never backwards: a catch-up may judge older periods
                             .where(incidents.c.id == incident_id, incidents.c.last_period < period)
                             .values(last_period=period))
            if plan.renotified:
                conn.execute(incidents.update().where(incidents.c.id.in_(plan.renotified)).values(notified_at=now))
            if plan.resolved:
                conn.execute(incidents.update().where(incidents.c.id.in_(plan.resolved))
                             .values(state="resolved", resolved_at=now))
            if plan.groups_renotified:
                conn.execute(incident_groups.update().where(incident_groups.c.id.in_(plan.groups_renotified))
                             .values(notified_at=now))
            if plan.groups_resolved:
                conn.execute(incident_groups.update().where(incident_groups.c.id.in_(plan.groups_resolved),
                                                            incident_groups.c.state == "open")
                             .values(state="resolved", resolved_at=now, closed_by="back to normal"))
            for (kpi, segment), period in plan.judged.items():
                self.set_judged(kpi, segment, period, conn)
            _upsert_states(conn, plan.states, now)
            return sum(_queue(conn, item, now) for item in plan.items)

    def detector_states(self, kpi: str) -> dict[str, PackedState]:
        """The stored detector states of a KPI's series by segment key, packed as they were
        stored (a worker unpacks them; one that cannot be read is rebuilt by walking forward)."""
        with self.transaction() as conn:
            rows = conn.execute(sa.select(detector_states.c.segment, detector_states.c.state, detector_states.c.next_period)
                                .where(detector_states.c.kpi == kpi)).all()
        return {segment: PackedState(bytes(blob), next_period) for segment, blob, next_period in rows}

    def evaluations_of(self, kpi: str, segment: str = "", start: datetime | None = None,
                       end: datetime | None = None) -> list[EvaluationRecord]:
        """The stored evaluations of one KPI segment, oldest first; only periods in [start, end]
        when given (the weekly digest reads a week)."""
        query = (sa.select(evaluations).where(evaluations.c.kpi == kpi, evaluations.c.segment == segment)
                 .order_by(evaluations.c.period))
        if start is not None:
            query = query.where(evaluations.c.period >= start)
        if end is not None:
            query = query.where(evaluations.c.period <= end)
        with self.transaction() as conn:
            rows = conn.execute(query).mappings().all()
        return [EvaluationRecord(**{k: r[k] for k in EvaluationRecord.__dataclass_fields__}) for r in rows]

    def judged_series(self) -> list[tuple[str, str]]:
        """Every (kpi, segment) with a stored evaluation."""
        with self.transaction() as conn:
            return [tuple(row) for row in conn.execute(sa.select(evaluations.c.kpi, evaluations.c.segment).distinct())]

    def evaluation(self, kpi: str, segment: str, period: datetime) -> EvaluationRecord | None:
        """The stored evaluation of one period of a KPI segment (None: never judged)."""
        query = sa.select(evaluations).where(evaluations.c.kpi == kpi, evaluations.c.segment == segment,
                                             evaluations.c.period == period)
        with self.transaction() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else EvaluationRecord(**{k: row[k] for k in EvaluationRecord.__dataclass_fields__})

    # -- outbox -------------------------------------------------------------------------------

    def queue(self, items: Sequence[OutboxItem], now: datetime | None = None) -> int:
        """Queue messages outside a check (e.g. a test message); returns how many were new."""
        now = now or utcnow()
        with self.transaction() as conn:
            return sum(_queue(conn, item, now) for item in items)

    def due(self, now: datetime | None = None) -> list[OutboxRow]:
        """Pending and unsettled rows whose next attempt is due, oldest first."""
        now = now or utcnow()
        query = (sa.select(outbox).where(outbox.c.state.in_(("pending", "sending")), outbox.c.next_attempt_at <= now)
                 .order_by(outbox.c.id))
        return self._rows(query)

    def waiting(self) -> list[OutboxRow]:
        """Every row not yet in Slack and not dead (due or not), oldest first; without the charts'
        PNG bytes (`file` is None: `get(key)` has them), since delivery reads this every few seconds."""
        light = [column for column in outbox.c if column.name != "file"]
        return self._rows(sa.select(*light).where(outbox.c.state.in_(("pending", "sending"))).order_by(outbox.c.id))

    def next_attempt(self) -> datetime | None:
        """When the earliest waiting row is due (None: nothing waits)."""
        query = sa.select(sa.func.min(outbox.c.next_attempt_at)).where(outbox.c.state.in_(("pending", "sending")))
        with self.transaction() as conn:
            return UTCDateTime().process_result_value(conn.execute(query).scalar(), None)

    def get(self, key: str) -> OutboxRow | None:
        """The outbox row with this key."""
        rows = self._rows(sa.select(outbox).where(outbox.c.key == key))
        return rows[0] if rows else None

    def children(self, parent_key: str, kind: str) -> list[OutboxRow]:
        """The rows of one kind that belong to a message (its resolves, its charts), oldest first."""
        return self._rows(sa.select(outbox).where(outbox.c.parent_key == parent_key, outbox.c.kind == kind)
                          .order_by(outbox.c.id))

    def rows(self, states: Sequence[str] = OUTBOX_STATES, limit: int = 50) -> list[OutboxRow]:
        """The latest outbox rows in these states, newest first."""
        return self._rows(sa.select(outbox).where(outbox.c.state.in_(tuple(states)))
                          .order_by(outbox.c.id.desc()).limit(limit))

    def counts(self) -> dict[str, int]:
        """Rows per outbox state."""
        with self.transaction() as conn:
            rows = conn.execute(sa.select(outbox.c.state, sa.func.count()).group_by(outbox.c.state)).all()
        found = {state: 0 for state in OUTBOX_STATES}
        found.update({state: count for state, count in rows})
        return found

    def mark_sending(self, row_id: int, seen_state: str, seen_attempts: int, lease_until: datetime) -> bool:
        """Claim a row for one attempt, recorded before it is made (a crash from here on leaves
        the outcome unknown). Only the sender that saw the row as it still is wins (False: another
        process or thread has it); the row is not due again before `lease_until`, so nobody else
        touches it while this attempt is in flight."""
        with self.transaction() as conn:
            claimed = conn.execute(
                outbox.update()
                .where(outbox.c.id == row_id, outbox.c.state == seen_state, outbox.c.attempts == seen_attempts)
                .values(state="sending", attempts=outbox.c.attempts + 1, next_attempt_at=lease_until))
            return claimed.rowcount == 1

    def mark_sent(self, row_id: int, slack_channel: str, slack_ts: str, note: str = "",
                  now: datetime | None = None) -> None:
        """The row reached Slack: mark it and write the notification log, in one transaction."""
        now = now or utcnow()
        with self.transaction() as conn:
            row = conn.execute(sa.select(outbox).where(outbox.c.id == row_id)).mappings().one()
            conn.execute(outbox.update().where(outbox.c.id == row_id).values(
                state="sent", sent_at=now, slack_channel=slack_channel, slack_ts=slack_ts, last_error=note))
            conn.execute(notifications.insert().values(
                key=row["key"], kind=row["kind"], channel=row["channel"], slack_channel=slack_channel,
                slack_ts=slack_ts, note=note, sent_at=now))

    def mark_retry(self, row_id: int, next_attempt_at: datetime, error: str, unknown: bool) -> None:
        """A transient failure: try again at `next_attempt_at`. unknown: Slack may have the message
        already, so the next attempt looks for it first (state `sending`)."""
        with self.transaction() as conn:
            conn.execute(outbox.update().where(outbox.c.id == row_id).values(
                state="sending" if unknown else "pending", next_attempt_at=next_attempt_at, last_error=error))

    def mark_dead(self, row_id: int, error: str) -> None:
        """A permanent failure: kept as a dead letter until `retry_dead`."""
        with self.transaction() as conn:
            conn.execute(outbox.update().where(outbox.c.id == row_id).values(state="dead", last_error=error))

    def retry_dead(self, now: datetime | None = None) -> int:
        """Put every dead letter back in the queue (after the cause is fixed); returns how many."""
        now = now or utcnow()
        with self.transaction() as conn:
            result = conn.execute(outbox.update().where(outbox.c.state == "dead")
                                  .values(state="pending", next_attempt_at=now))
            return result.rowcount

    def notification_log(self, limit: int = 50) -> list[dict[str, Any]]:
        """What reached Slack, newest first."""
        query = sa.select(notifications).order_by(notifications.c.id.desc()).limit(limit)
        with self.transaction() as conn:
            return [dict(r) for r in conn.execute(query).mappings().all()]

    # -- snoozes, feedback, ledger ------------------------------------------------------------

    def add_snooze(self, kpi: str, segment: str, until: datetime, reason: str = "", now: datetime | None = None) -> None:
        """Silence `kpi` (one segment, or all with segment "") until `until`."""
        with self.transaction() as conn:
            conn.execute(snoozes.insert().values(kpi=kpi, segment=segment, until=until, reason=reason,
                                                 created_at=now or utcnow()))

    def snoozes(self, active_at: datetime | None = None) -> list[Snooze]:
        """The snoozes still running at `active_at` (default now)."""
        at = active_at or utcnow()
        query = sa.select(snoozes).where(snoozes.c.until > at).order_by(snoozes.c.until)
        with self.transaction() as conn:
            rows = conn.execute(query).mappings().all()
        return [Snooze(r["kpi"], r["segment"], r["until"], r["reason"]) for r in rows]

    def add_feedback(self, group_key: str, verdict: str, user: str = "", note: str = "",
                     now: datetime | None = None) -> bool:
        """Remember what a person said about an incident (`group_key`: its key). One row per
        incident and verdict: a second click on the same button records nothing (False)."""
        row = dict(alert_key=group_key, verdict=verdict, user=user, note=note, created_at=now or utcnow())
        with self.transaction() as conn:
            return _upsert(conn, feedback, [row], keys=("alert_key", "verdict"), update=()) == 1

    def record_verdict(self, group: IncidentGroup, verdict: str, user: str, note: str, now: datetime,
                       close: bool = False, snooze_until: datetime | None = None,
                       forget: Sequence[tuple[str, str]] = (), items: Sequence[OutboxItem] = ()) -> bool:
        """A verdict on an incident and what it does, in one transaction: the feedback row (one
        per incident and verdict: False, and nothing else done, when it exists), then close the
        incident (`close`), snooze its members until `snooze_until`, drop the detector states of
        `forget` and queue `items` (the cards' edits)."""
        row = dict(alert_key=group.key, verdict=verdict, user=user, note=note, created_at=now)
        with self.transaction() as conn:
            if _upsert(conn, feedback, [row], keys=("alert_key", "verdict"), update=()) != 1:
                return False
            if close:
                conn.execute(incident_groups.update()
                             .where(incident_groups.c.id == group.id, incident_groups.c.state == "open")
                             .values(state="resolved", resolved_at=now, closed_by=verdict))
                conn.execute(incidents.update().where(incidents.c.group_id == group.id, incidents.c.state == "open")
                             .values(state="resolved", resolved_at=now))
            if snooze_until is not None:
                for member in group.members:
                    conn.execute(snoozes.insert().values(kpi=member.kpi, segment=member.segment, until=snooze_until,
                                                         reason=f"incident {group.id}: {note}", created_at=now))
            for kpi, segment in set(forget):
                conn.execute(detector_states.delete().where(detector_states.c.kpi == kpi,
                                                            detector_states.c.segment == segment))
            for item in items:
                _queue(conn, item, now)
            return True

    def feedback_for(self, group_key: str) -> list[dict[str, Any]]:
        """Feedback on one incident, oldest first."""
        query = sa.select(feedback).where(feedback.c.alert_key == group_key).order_by(feedback.c.id)
        with self.transaction() as conn:
            return [dict(r) for r in conn.execute(query).mappings().all()]

    def feedback_records(self, verdicts: Sequence[str] = ("false_alarm", "expected")) -> list[FeedbackRecord]:
        """Every verdict of `verdicts` with each member series of its incident, oldest first."""
        query = (sa.select(feedback.c.alert_key, feedback.c.verdict, feedback.c.user, feedback.c.created_at,
                           incidents.c.kpi, incidents.c.segment, incidents.c.first_period, incidents.c.last_period)
                 .join(incident_groups, incident_groups.c.key == feedback.c.alert_key)
                 .join(incidents, incidents.c.group_id == incident_groups.c.id)
                 .where(feedback.c.verdict.in_(list(verdicts)))
                 .order_by(feedback.c.id, incidents.c.id))
        with self.transaction() as conn:
            return [FeedbackRecord(*row) for row in conn.execute(query).all()]

    # -- incident groups ------------------------------------------------------------------------

    def open_groups(self) -> dict[int, IncidentGroup]:
        """The open incident groups by id, each with all its members."""
        return {group.id: group for group in self._groups(incident_groups.c.state == "open")}

    def group(self, ref: str) -> IncidentGroup | None:
        """An incident group by its number (`12`) or its key; None when there is none."""
        where = incident_groups.c.id == int(ref) if ref.strip().isdigit() else incident_groups.c.key == ref
        found = self._groups(where)
        return found[0] if found else None

    def groups(self, limit: int = 20) -> list[IncidentGroup]:
        """The newest incident groups, newest first."""
        return self._groups(sa.true(), limit)

    def groups_during(self, start: datetime, end: datetime) -> list[IncidentGroup]:
        """The incident groups live at some time in [start, end): first period before `end`,
        and open or closed at or after `start`; newest first (the weekly digest's incidents)."""
        where = sa.and_(incident_groups.c.first_period < end,
                        sa.or_(incident_groups.c.resolved_at.is_(None), incident_groups.c.resolved_at >= start))
        return self._groups(where)

    def _groups(self, where: Any, limit: int | None = None) -> list[IncidentGroup]:
        query = sa.select(incident_groups).where(where).order_by(incident_groups.c.id.desc())
        if limit is not None:
            query = query.limit(limit)
        with self.transaction() as conn:
            rows = conn.execute(query).mappings().all()
            ids = [r["id"] for r in rows]
            members = conn.execute(sa.select(incidents).where(incidents.c.group_id.in_(ids))
                                   .order_by(incidents.c.id)).mappings().all() if ids else []
        by_group: dict[int, list[Incident]] = {}
        for member in members:
            by_group.setdefault(member["group_id"], []).append(Incident(**_incident_fields(member)))
        return [IncidentGroup(**{name: r[name] for name in IncidentGroup.__dataclass_fields__ if name != "members"},
                              members=tuple(by_group.get(r["id"], ()))) for r in rows]

    def last_judged(self, kpi: str, segment: str = "") -> datetime | None:
        """The ledger: the last period judged for a KPI segment (None: never)."""
        query = sa.select(ledger.c.last_period).where(ledger.c.kpi == kpi, ledger.c.segment == segment)
        with self.transaction() as conn:
            value = conn.execute(query).scalar()
        return value

    def set_judged(self, kpi: str, segment: str, period: datetime, conn: Connection | None = None) -> None:
        """Move the ledger of a KPI segment to `period` (never backwards)."""
        if conn is None:
            with self.transaction() as own:
                self.set_judged(kpi, segment, period, own)
            return
        _upsert(conn, ledger, [dict(kpi=kpi, segment=segment, last_period=period, updated_at=utcnow())],
                keys=("kpi", "segment"), only_if=lambda new: ledger.c.last_period < new.last_period)

    # -- internals ----------------------------------------------------------------------------

    def _rows(self, query: sa.Select) -> list[OutboxRow]:
        with self.transaction() as conn:
            rows = conn.execute(query).mappings().all()
        return [_outbox_row(r) for r in rows]



def _at_head(engine: Engine) -> bool:
    """True when the store is at `HEAD` and its schema version is ours (plain SQL; anything else
    goes the long way through Alembic, which upgrades or refuses)."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table(VERSION_TABLE):
            return False
        found = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
        return found == [HEAD] and _meta_version(conn) == SCHEMA_VERSION


def _meta_version(conn: Connection) -> int | None:
    """`kpiwatch_meta`'s schema version (None: no such table or row, i.e. a new store)."""
    if not sa.inspect(conn).has_table(meta_table.name):
        return None
    found = conn.execute(sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")).scalar()
    return None if found is None else int(found)


@contextmanager
def _migration_lock(conn: Connection) -> Iterator[None]:
    """One transaction that only one process at a time holds for an upgrade: PostgreSQL's
    transaction-scoped advisory lock (its DDL is transactional), SQLite's `BEGIN IMMEDIATE`
    (the write lock; pysqlite would otherwise run each CREATE outside any transaction, and a
    crash mid-upgrade would leave half a schema). Committed at the end, rolled back on error."""
    if conn.dialect.name == "sqlite":
        raw = conn.connection.driver_connection
        level, raw.isolation_level = raw.isolation_level, None  # let us say BEGIN ourselves
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
        finally:
            raw.isolation_level = level
        return
    with conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        yield


def _file_identity(engine: Engine) -> tuple[str, tuple[int, int]] | None:
    """A SQLite store's file path and (device, inode), to notice it vanish; None otherwise."""
    if engine.dialect.name != "sqlite" or not engine.url.database or engine.url.database == ":memory:":
        return None
    path = os.path.abspath(Path(engine.url.database).expanduser())
    try:
        found = os.stat(path)
    except OSError:
        return None
    return path, (found.st_dev, found.st_ino)


def _wal_mode(cursor: Any, attempts: int = 50) -> None:
    """Put a SQLite file in WAL mode. Switching a new file needs an exclusive lock and SQLite
    answers "database is locked" at once, without the busy timeout, when another process is
    switching it too (e.g. the daemon and a CLI command creating one store), so retry for up to
    ~5 s; the mode then persists in the file and later opens find it set."""
    for attempt in range(attempts):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.1)


def _engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets its folder created, WAL and a busy timeout (two
    processes, e.g. the daemon and `kpiwatch snooze`, share the file)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(f"state store URL {url!r} is not a database URL; use sqlite:///path/state.db "
                         "or postgresql://user@host/db") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # No pool for a file: each transaction opens the file as it is now (~0.1 ms). A pooled
        # handle keeps what held when it was opened: one opened while the file was read-only stays
        # read-only for good ("attempt to write a readonly database" long after), even if only a
        # read opened it. An in-memory database must keep its one connection (SQLAlchemy's default).
        pool = {} if parsed.database in (None, "", ":memory:") else {"poolclass": sa.pool.NullPool}
        engine = sa.create_engine(parsed, connect_args={"timeout": 30}, **pool)

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA busy_timeout=30000")
            _wal_mode(cursor)
            cursor.close()

        return engine
    if parsed.get_backend_name() != "postgresql":
        raise StoreError(f"state store URL {parsed.render_as_string(hide_password=True)} is not SQLite or "
                         "PostgreSQL; use sqlite:///path/state.db or postgresql://user@host/db")
    if parsed.drivername == "postgresql":
        # SQLAlchemy 2.0 reads a bare postgresql:// as psycopg2, 2.1 as psycopg 3: pin the one we ship.
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        return sa.create_engine(parsed, pool_pre_ping=True)
    except (ImportError, ArgumentError) as exc:
        raise StoreError(f"cannot use the state store {parsed.render_as_string(hide_password=True)}: {exc}; "
                         "for PostgreSQL install kpiwatch[postgres]") from None


def _upsert(
    conn: Connection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    update: Sequence[str] | None = None,
    only_if: Callable[[Any], sa.ColumnElement[bool]] | None = None,
) -> int:
    """INSERT ... ON CONFLICT (`keys`) with the dialect's own insert (SQLite and PostgreSQL say it
    alike): a row whose keys exist updates the `update` columns (None: every column it carries
    but the keys; (): leaves the row as it is). only_if(excluded): update only where this holds.
    `keys` must be a unique constraint or index. Returns the rows inserted or updated (counted
    from RETURNING: the drivers' rowcount is -1 for psycopg here)."""
    if not rows:
        return 0
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    else:  # PostgreSQL: `_engine` admits no other
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    insert = dialect_insert(table)
    if update == ():
        statement = insert.on_conflict_do_nothing(index_elements=list(keys))
    else:
        names = update if update is not None else [name for name in rows[0] if name not in keys]
        statement = insert.on_conflict_do_update(
            index_elements=list(keys), set_={name: insert.excluded[name] for name in names},
            where=None if only_if is None else only_if(insert.excluded))
    statement = statement.returning(*(table.c[key] for key in keys))
    return len(conn.execute(statement, [dict(row) for row in rows]).all())


def _replace_evaluations(conn: Connection, records: Sequence[EvaluationRecord], now: datetime) -> None:
    """Insert or replace a check's evaluations in one batched upsert, not a statement per row
    (a cycle writes a week of rows for every series); a re-judged period keeps its row."""
    rows = [{**{k: _nan_to_none(v) for k, v in record.__dict__.items()}, "judged_at": now} for record in records]
    _upsert(conn, evaluations, rows, keys=("kpi", "segment", "period"))


def _upsert_states(conn: Connection, states: Mapping[tuple[str, str], PackedState], now: datetime) -> None:
    """Insert or replace the series' detector states (packed by the workers) in one batched upsert."""
    rows = [dict(kpi=kpi, segment=segment, state=state.blob, updated_at=now, next_period=state.next_period)
            for (kpi, segment), state in states.items()]
    _upsert(conn, detector_states, rows, keys=("kpi", "segment"))


def _open_group(conn: Connection, group: GroupOpen, now: datetime) -> None:
    """Insert the group, or reopen it when its key exists (its root alerted again for the same
    period after it was over, e.g. after a revision): the key stays unique."""
    values = dict(key=group.key, state="open", root_kpi=group.root_kpi, root_segment=group.root_segment,
                  direction=group.direction, severity=group.severity, first_period=group.period, opened_at=now,
                  notified_at=now, resolved_at=None, message_key=group.message_key, summary=group.summary,
                  why=group.why, closed_by="")
    _upsert(conn, incident_groups, [values], keys=("key",))


def _group_ids(conn: Connection, keys: set[str]) -> dict[str, int]:
    if not keys:
        return {}
    rows = conn.execute(sa.select(incident_groups.c.key, incident_groups.c.id)
                        .where(incident_groups.c.key.in_(sorted(keys)))).all()
    return {key: group_id for key, group_id in rows}


def _open_incident(conn: Connection, opened: IncidentOpen, now: datetime, group_id: int | None = None) -> None:
    """Insert the incident, or reopen it when its alert key exists already (it was resolved and
    the same period alerts again, e.g. after a revision): the key stays unique. A second open
    incident of the segment still fails (the partial unique index is not the conflict target)."""
    values = dict(alert_key=opened.alert_key, kpi=opened.kpi, segment=opened.segment, state="open",
                  direction=opened.direction, severity=opened.severity, first_period=opened.period,
                  last_period=opened.period, opened_at=now, notified_at=now, resolved_at=None,
                  message_key=opened.message_key, summary=opened.summary, group_id=group_id)
    _upsert(conn, incidents, [values], keys=("alert_key",))


def _queue(conn: Connection, item: OutboxItem, now: datetime) -> int:
    """Insert one outbox item unless its key is already there; 1 if inserted."""
    row = dict(key=item.key, kind=item.kind, channel=item.channel, parent_key=item.parent_key, text=item.text,
               payload=json.dumps(item.payload, ensure_ascii=False), file=item.file, state="pending", attempts=0,
               next_attempt_at=now, last_error="", created_at=now)
    return _upsert(conn, outbox, [row], keys=("key",), update=())


def _outbox_row(row: Mapping[str, Any]) -> OutboxRow:
    fields = dict(row)
    fields["payload"] = json.loads(fields["payload"] or "{}")
    fields.setdefault("file", None)
    return OutboxRow(**fields)


def _incident_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name in Incident.__dataclass_fields__}


def _nan_to_none(value: Any) -> Any:
    return None if isinstance(value, float) and value != value else value


def _hint(exc: SQLAlchemyError) -> str:
    """What to do about a failure the operator can fix (empty: nothing to add)."""
    code = getattr(getattr(exc, "orig", None), "sqlite_errorcode", None)
    if code is not None and code & 0xFF == 8:  # SQLITE_READONLY
        return "; make the store's file and its folder writable for kpiwatch (it recovers by itself after)"
    return ""


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
