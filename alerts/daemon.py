"""`kpiwatch run`: the daemon. APScheduler 3.x runs one job per KPI on its schedule; the ledger
in the state store (not the scheduler) says which periods are due, so every closed period is
judged once through restarts, downtime and clock changes.

A period is judged only when its data are complete: the source's raw rows for it reach
`completeness` of the usual count (`forecaster.completeness`); until then the KPI waits, and a
period still incomplete after `no_data_after_hours` gets a "no data" message instead of a verdict.

KPIs that fall due at the same moment (the same schedule) are judged by one job, period by
period: each KPI's source is read here, its series are judged in chunks on the executor
(`forecaster.executor`: worker processes with a time limit, or a Dask cluster; a hung fit is
killed, Prophet's temp files go with the process, memory stays flat), and the checks of one period are
stored and their alerts queued in one transaction, one message per channel as `kpiwatch check`
sends them. A separate delivery job sends the outbox, on the daemon's clock; one lock per store
keeps a second daemon on standby. SIGTERM/SIGINT stop within `daemon.shutdown_grace`: running
checks are cancelled (their period is not marked judged, so it is judged once after the restart),
the outbox is flushed for what is left of the grace, exit 0. SIGHUP reloads the config (an
invalid one is refused and the old one kept). Every Slack text is built in `alerts.message`.
The health server also takes the incident cards' button clicks (`POST /slack/actions`,
`alerts.actions`) when SLACK_SIGNING_SECRET is set, and serves the static report read-only
(`GET /report/...`, from `<state_dir>/report`), which it rebuilds after each job that judged a
period from the checks it already has (`alerts.report`): no extra check.
"""

from __future__ import annotations

import fcntl
import functools
import ipaddress
import json
import logging
import os
import signal
import socket
import threading
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import pandas as pd
import sqlalchemy as sa
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.blocking import BlockingScheduler
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from alerts.actions import Click, SlackActions
from alerts.delivery import DeliveryPolicy, DeliveryReport, deliver
from alerts.feedback import series_feedback
from alerts.incidents import record_and_send
from alerts.message import back_text, failing_text, late_text, no_data_text
from alerts.slack import Notifier, SlackError, make_notifier
from alerts.store import CyclePlan, OutboxItem, OutboxRow, Store, StoreError
from forecaster.completeness import is_complete
from forecaster.detect.feedback import SeriesFeedback
from forecaster.executor import Executor, ExecutorCancelled, make_executor
from forecaster.i18n import current_locale, t, use_locale
from forecaster.pipeline import CheckReport, check, completeness_of, last_closed_period
from forecaster.schedule import (
    Clock,
    default_schedule,
    due_periods,
    moment_after,
    parse_schedule,
)
from forecaster.settings import KPIConfig, Settings, load_config
from forecaster.sources import Source, make_source
from forecaster.types import KPIWatchError, PackedState, SourceError
from forecaster.units import format_percent, format_period

log = logging.getLogger("kpiwatch.daemon")
DELIVERY_SECONDS = 5  # how often the outbox is sent (retries wait for their own time)
PROGRESS_SECONDS = 10.0  # a long check logs how far it is this often
LOCK_POLL_SECONDS = 2.0
ACTIONS_PATH = "/slack/actions"  # Slack's interactivity Request URL (behind a TLS proxy)
DRAIN_LIMIT = 1024 * 1024  # bytes of an oversized body read before its 413 (see do_POST)
ACTIONS_OFF = (b"Slack buttons are off: set SLACK_SIGNING_SECRET (the Slack app's Signing Secret) and restart "
               b"kpiwatch run\n")


class LockBusy(KPIWatchError):
    """Another daemon holds the store (exit code 3 with --no-wait)."""

    exit_code = 3


class JobCancelled(KPIWatchError):
    """A check stopped because the daemon is stopping: its period is not marked judged, so the
    restarted daemon judges it (once)."""


# -- one daemon per store ----------------------------------------------------------------------


class StoreLock:
    """An exclusive lock on a state store: a file lock beside a SQLite file, an advisory lock on
    PostgreSQL (held by a dedicated connection; it goes away with the process, even on SIGKILL)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._file: Any = None
        self._conn: sa.Connection | None = None

    def try_acquire(self) -> bool:
        """True when this process now holds the lock."""
        url = self.store.engine.url
        if url.get_backend_name() == "sqlite":
            path = Path(f"{url.database}.lock")
            handle = path.open("a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                return False
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            self._file = handle
            return True
        conn = self.store.engine.connect()
        key = zlib.crc32(b"kpiwatch-daemon")
        if conn.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar():
            conn.commit()
            self._conn = conn
            return True
        conn.close()
        return False

    def acquire(self, wait: bool, stopping: threading.Event) -> None:
        """Take the lock; on standby (wait) poll until it is free or we are asked to stop."""
        if self.try_acquire():
            return
        if not wait:
            raise LockBusy(f"another kpiwatch daemon is running on the store {self.store.safe_url}; stop it, "
                           "or start this one without --no-wait to stand by")
        log.warning("another kpiwatch daemon holds the store %s: standing by until it stops", self.store.safe_url)
        while not stopping.wait(LOCK_POLL_SECONDS):
            if self.try_acquire():
                log.info("store lock taken: this daemon is now active")
                return

    def held(self) -> bool:
        """False when the lock may be gone: the PostgreSQL connection that holds it broke (a
        server restart or failover ends the session and with it the advisory lock)."""
        if self._conn is None:
            return self._file is not None
        try:
            self._conn.execute(sa.text("SELECT 1"))
            self._conn.commit()
            return True
        except sa.exc.SQLAlchemyError:
            return False

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None


_CANCELLED = "cancelled: the daemon is stopping; the period is judged after the restart"


# -- observability -------------------------------------------------------------------------------


@dataclass
class Metrics:
    """Prometheus metrics of one daemon (its own registry)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.periods = Counter("kpiwatch_periods_judged", "Periods judged", ["kpi"], registry=r)
        self.anomalies = Counter("kpiwatch_anomalies", "Alerts raised by checks", ["kpi"], registry=r)
        self.sent = Counter("kpiwatch_alerts_sent", "Alert messages delivered to Slack (one per channel and cycle; "
                            "charts, resolves, updates and notices count in kpiwatch_slack_sent)", registry=r)
        self.slack_sent = Counter("kpiwatch_slack_sent", "Outbox rows delivered to Slack, by kind: alert, notice "
                                  "(no data, source failing), chart, resolve, update", ["kind"], registry=r)
        self.failed = Counter("kpiwatch_alerts_failed", "Delivery attempts that will be retried", registry=r)
        self.dead = Counter("kpiwatch_alerts_dead", "Outbox rows Slack refused for good", registry=r)
        self.source_errors = Counter("kpiwatch_source_errors", "Failed fetches", ["kpi"], registry=r)
        self.job_errors = Counter("kpiwatch_job_errors", "Jobs that failed", ["kpi"], registry=r)
        self.duration = Histogram("kpiwatch_job_duration_seconds", "Job duration", ["kpi"], registry=r,
                                  buckets=(1, 5, 15, 30, 60, 120, 300, 900, 1800))
        self.last_good = Gauge("kpiwatch_last_good_cycle_timestamp_seconds", "Unix time of the last good job",
                               registry=r)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, message and the record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"), "level": record.levelname.lower(),
                   "logger": record.name, "message": record.getMessage(), **getattr(record, "fields", {})}
        if record.exc_info:  # a bug's traceback, so it can be reported
            payload["traceback"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class TextFormatter(logging.Formatter):
    """`time level message key=value ...`."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in getattr(record, "fields", {}).items())
        line = f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S%z')} {record.levelname.lower()} {record.getMessage()} {fields}".rstrip()
        return f"{line}\n{self.formatException(record.exc_info)}" if record.exc_info else line


def configure_logging(fmt: str) -> None:
    """One line per event on stderr, text or JSON; the libraries' chatter stays quiet."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("kpiwatch")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False
    # "skipped: maximum number of running instances" is expected when a check outlasts its interval
    logging.getLogger("apscheduler").setLevel(logging.ERROR)


def _event(level: int, message: str, **fields: Any) -> None:
    log.log(level, message, extra={"fields": fields})


# -- the daemon ----------------------------------------------------------------------------------


@dataclass
class _Due:
    """One KPI's share of a judging job: its due periods and what became of them (its log line)."""

    name: str
    kpi: KPIConfig
    periods: list[pd.Timestamp] = field(default_factory=list)  # still to judge, oldest first
    source: Source | None = None
    delay: pd.Timedelta = field(default_factory=lambda: pd.Timedelta(0))  # the KPI's or its source's, the longer
    latest: pd.Timestamp | None = None  # the latest closed period
    shares: Mapping[pd.Timestamp, float | None] = field(default_factory=dict)  # completeness per period
    stored: dict[tuple[str, str], PackedState] | None = None  # detector states: read once, then stepped on
    current: pd.Timestamp | None = None  # taken from `periods`, not stored yet
    judged: list[pd.Timestamp] = field(default_factory=list)
    no_data: list[str] = field(default_factory=list)
    anomalies: int = 0
    queued: int = 0  # outbox rows of its periods (a message shared with the KPIs judged with it counts for each)
    fields: dict[str, Any] = field(default_factory=dict)  # why it stopped early (waiting, completeness)
    waiting: bool = False  # a period not complete yet: the rest waits for the next job
    error: BaseException | None = None

    @property
    def next(self) -> tuple[pd.Timestamp, str] | None:
        """The period it judges next (with its freq), or None when it is done for this job."""
        if self.error is not None or self.waiting or not self.periods:
            return None
        return self.periods[0], self.kpi.freq

    def log_fields(self) -> dict[str, Any]:
        """The job line's fields once it went well."""
        shown = ",".join(_label(p, self.kpi.freq) for p in self.judged)
        fields = {"status": "ok", "periods": shown or "none due", "anomalies": self.anomalies, "queued": self.queued,
                  **self.fields}
        if self.no_data:
            fields["no_data"] = ",".join(self.no_data)
        return fields


_T = TypeVar("_T")


def _in_config_locale(method: Callable[..., _T]) -> Callable[..., _T]:
    """A daemon entry point (a job, a delivery, a click) run in the config's `locale`: it runs in a
    thread of its own, whose context starts with the default; texts it builds are in the language
    the config asks for (read at each call, so a reload's new locale applies to the next job)."""
    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> _T:
        with use_locale(self.settings.locale):
            return method(self, *args, **kwargs)
    return wrapper


class Daemon:
    """The long-running service; `run()` blocks until SIGTERM/SIGINT and returns the exit code."""

    def __init__(self, config_file: Path | None, clock: Clock | None = None, wait_for_lock: bool = True,
                 settings: Settings | None = None, rehearsal: bool = False) -> None:
        """settings: use these instead of reading `config_file`. rehearsal: replay's daemon: checks
        run in this process, messages are queued in the store but never sent (no Slack)."""
        self.config_file = config_file
        self.settings = settings or load_config(config_file)  # a typo ends here, exit 2, before any Slack call
        self.rehearsal = rehearsal
        self.clock = clock or Clock.from_env()
        self.wait_for_lock = wait_for_lock
        self.metrics = Metrics()
        self.stopping = threading.Event()
        self.deliver_lock = threading.Lock()  # one sender at a time: no two threads post one row
        self.failures: dict[str, int] = {}
        self.failing_since: dict[str, pd.Timestamp] = {}
        self.failing_kind: dict[str, str] = {}  # "source" or "job", from the first failure of a run
        self.last_good: float | None = None
        self.started = time.time()
        self.store: Store | None = None
        self.lock: StoreLock | None = None
        self.exit_code = 0  # 3 when the daemon stops because it lost the store lock
        self.notifier: Notifier | None = None
        self.channel_ids: dict[str, str] = {}
        self.channels_checked = False
        self.scheduler = BlockingScheduler(timezone="UTC")
        self.health: ThreadingHTTPServer | None = None
        self.actions: SlackActions | None = None  # POST /slack/actions (SLACK_SIGNING_SECRET set)
        self.on_click: Callable[[Click], str] = self._on_click  # a button click: recorded, its card queued
        self.running: set[str] = set()  # KPIs being judged right now (shown by /healthz)
        # A replay's feedback, applied instead of the store's (None: the store's recorded verdicts).
        self.feedback_override: Mapping[tuple[str, str], SeriesFeedback] | None = None
        self.progress: dict[str, str] = {}  # how far each running KPI's check is ("3000/10000 series")
        self.failed = False  # a KPI's source or check failed (`run --once` exits 3)
        self._deadline: float | None = None  # time.monotonic() by which a stopping daemon exits
        self._jobs = threading.Condition()  # judging jobs under way (`_active`), waited for when stopping
        self._active = 0
        # Where the series are judged (worker processes, or Dask); in this process when rehearsing:
        # replay has no hung fits to fear and no time to lose. One KPI's chunks at a time: each
        # map keeps every worker busy.
        self.executor: Executor = make_executor(workers=1) if rehearsal else make_executor(self.settings.executor)
        self._mapping = threading.Lock()
        # Each KPI's latest check, for the report (rebuilt from these after a job, not from a new check).
        self.checked: dict[str, CheckReport] = {}
        self._report_lock = threading.Lock()

    # lifecycle

    def run(self, once: bool = False) -> int:
        """Start, serve until stopped (or one round with `once`), flush, exit code: 0, or 3 when
        the store lock was lost, or (`once`) a source, a check or Slack failed."""
        configure_logging(self.settings.daemon.log_format)
        self.store = Store(self.settings.state_url)
        self.notifier = make_notifier()
        if self.notifier is not None:
            self._check_slack(at_start=True)  # a refused token or channel: exit 3 now
        self._install_signals()
        self.lock = StoreLock(self.store)
        try:
            self.lock.acquire(self.wait_for_lock, self.stopping)
            if self.stopping.is_set():
                return 0
            self._start_health()
            _event(logging.INFO, "started", kpis=len(self.settings.kpis), store=self.store.safe_url,
                   slack="on" if self.notifier else "off", slack_buttons="on" if self.actions else "off",
                   simulated_clock=self.clock.simulated)
            if once:
                self.judge_kpis(list(self.settings.kpis))  # due at the same moment: one message per channel
            else:
                self._schedule_jobs()
                if not self.stopping.is_set():  # a SIGTERM during start-up: do not block in start()
                    self.scheduler.start()  # blocks until shutdown
                self._wait_for_jobs()
            delivered = self._flush()
            if once and not self.stopping.is_set():
                self.exit_code = max(self.exit_code, self._once_code(delivered))
            _event(logging.INFO, "stopped", exit_code=self.exit_code)
            return self.exit_code
        finally:
            self._stop_health()
            self.executor.close()
            self.lock.release()
            self.store.close()

    def stop(self, *_: object) -> None:
        """SIGTERM/SIGINT: cancel the running checks and let `run` flush and return, all within
        `daemon.shutdown_grace` seconds."""
        if self.stopping.is_set():
            return
        grace = self.settings.daemon.shutdown_grace
        self._deadline = time.monotonic() + grace
        self.stopping.set()
        _event(logging.INFO, "stopping: cancelling the running checks", shutdown_grace=grace)
        self.executor.cancel()
        if self.scheduler.running:
            # Not from inside the signal handler: the scheduler's locks may be held by this thread.
            threading.Thread(target=self.scheduler.shutdown, kwargs={"wait": False}, daemon=True).start()

    def lingering(self) -> bool:
        """After `run`: work that outlived the shutdown grace (a source read, a Slack post) is
        still running in a thread that Python would wait for at exit (`kpiwatch run` then exits
        without waiting: what it was doing is redone after the restart)."""
        return any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread())

    def _remaining(self) -> float | None:
        """Seconds left of the shutdown grace (None while not stopping)."""
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def _wait_for_jobs(self) -> None:
        """Wait for the judging jobs to end (their checks were cancelled), within the grace."""
        with self._jobs:
            if not self._jobs.wait_for(lambda: self._active == 0, timeout=self._remaining()):
                _event(logging.WARNING, "a job outlived daemon.shutdown_grace; what it did not store is judged "
                       "after the restart", running=",".join(sorted(self.running)))

    def _flush(self) -> DeliveryReport | None:
        """Send what is due before exit, waiting for retries at most 10 s or, when stopping, what
        is left of the grace (a post cut short is settled after the restart, never sent twice)."""
        remaining = self._remaining()
        wait = 10.0 if remaining is None else remaining
        delivered: list[DeliveryReport | None] = []
        sender = threading.Thread(target=lambda: delivered.append(self.deliver_outbox(max_wait=wait)),
                                  name="kpiwatch-flush", daemon=True)
        sender.start()
        sender.join(remaining)
        if sender.is_alive():
            _event(logging.WARNING, "outbox flush cut short by daemon.shutdown_grace; the rest is sent after the restart")
            return None
        return delivered[0] if delivered else None

    def _once_code(self, delivered: DeliveryReport | None) -> int:
        """`run --once`: 3 when a KPI's source or check failed, or Slack did not take every message
        (they stay in the outbox); else 0."""
        assert self.store is not None
        code = 3 if self.failed else 0
        if self.notifier is not None and not self.rehearsal:
            counts = self.store.counts()
            waiting = counts["pending"] + counts["sending"]
            dead = len(delivered.dead) if delivered is not None else 0
            if waiting or dead:
                _event(logging.ERROR, "Slack did not take every message; they stay in the outbox (`kpiwatch outbox "
                       "retry` sends them)", waiting=waiting, dead=dead)
                code = 3
        return code

    def reload(self, *_: object) -> None:
        """SIGHUP: read the config again; keep the old one when the new one is invalid."""
        try:
            fresh = load_config(self.config_file)
        except KPIWatchError as exc:
            _event(logging.ERROR, "config reload refused, keeping the running config", error=str(exc))
            return
        if fresh.state_url != self.settings.state_url:
            _event(logging.WARNING, "config reload: `state` changed; restart the daemon to use the new store")
        self.settings = fresh
        self.channels_checked = False  # new routes: their channels are checked before the next delivery
        if self.scheduler.running:
            self.scheduler.remove_all_jobs()
            self._schedule_jobs()
        _event(logging.INFO, "config reloaded", kpis=len(fresh.kpis))

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        signal.signal(signal.SIGHUP, self.reload)

    def _schedule_jobs(self) -> None:
        """One job per moment: the KPIs whose schedules fire together are judged by one job (one
        message per channel for their alerts), plus the delivery job and the weekly digest's."""
        grace = self.settings.daemon.misfire_grace_seconds
        for names, trigger in self._job_groups().values():
            self.scheduler.add_job(self.judge_kpis, trigger, args=[names], id=f"kpis:{names[0]}", name=", ".join(names),
                                   coalesce=True, max_instances=1, misfire_grace_time=grace,
                                   replace_existing=True, next_run_time=pd.Timestamp.now(tz="UTC").to_pydatetime())
        self.scheduler.add_job(self.deliver_outbox, "interval", seconds=DELIVERY_SECONDS, id="deliver",
                               coalesce=True, max_instances=1, misfire_grace_time=grace, replace_existing=True)
        if self.settings.digest.enabled:  # also once at start: a digest missed while down goes out late
            self.scheduler.add_job(self.send_digest, parse_schedule(self.settings.digest.schedule, self.settings.timezone),
                                   id="digest", coalesce=True, max_instances=1, misfire_grace_time=grace,
                                   replace_existing=True, next_run_time=pd.Timestamp.now(tz="UTC").to_pydatetime())

    def _job_groups(self) -> dict[str, tuple[list[str], Any]]:
        """KPIs by the moments their schedules fire (`every day at 7:00` and `0 7 * * *` are one),
        with the trigger they share; in config order."""
        groups: dict[str, tuple[list[str], Any]] = {}
        for name, kpi in self.settings.kpis.items():
            trigger = parse_schedule(kpi.schedule or default_schedule(kpi.freq), self.settings.timezone)
            # A cron trigger's fields (every one, defaults too) and zone say when it fires; an
            # interval trigger's text (its interval) and zone.
            fields = getattr(trigger, "fields", None)
            moment = f"{[str(f) for f in fields] if fields else trigger} {getattr(trigger, 'timezone', '')}"
            groups.setdefault(moment, ([], trigger))[0].append(name)
        return groups

    def _channels(self) -> list[str]:
        digest = self.settings.digest.channels if self.settings.digest.enabled else []
        return sorted({route.channel for route in self.settings.alerting.routes} | set(digest))

    # the jobs

    @_in_config_locale
    def judge_kpis(self, names: Sequence[str]) -> None:
        """The job of KPIs that fall due together: judge their due periods, oldest first, the
        alerts of each period in one message per channel; one log line per KPI; never raises into
        the scheduler."""
        started = time.monotonic()
        settings = self.settings
        with self._jobs:
            self._active += 1
        self.running.update(names)
        try:
            dues = self._judge_all(names, settings)
            for due in dues:
                self._finish(due, settings, time.monotonic() - started)
            if any(due.queued for due in dues):
                self.deliver_outbox()
            if any(due.judged for due in dues):
                self.rebuild_report()
        except Exception:  # noqa: BLE001 - a bug must not stop the other jobs
            log.exception("job failed")
            self.failed = True
        finally:
            self.running.difference_update(names)
            with self._jobs:
                self._active -= 1
                self._jobs.notify_all()

    def send_digest(self) -> None:
        """The weekly digest's job (`alerts.digest`): queue the digest due now by the daemon's
        clock, one message per channel, unless it is queued already, then deliver; never raises
        into the scheduler. Without Slack (or rehearsing) nothing is queued."""
        from alerts.digest import due_week, queue_digest
        from forecaster.i18n import current_locale, use_locale

        if self.store is None or self.notifier is None or self.rehearsal:
            return
        now = self.clock.now().floor("us")
        week = due_week(self.settings, now)
        if week is None:
            return
        try:
            with use_locale(getattr(self.settings, "locale", None) or current_locale()):
                queued = queue_digest(self.settings, self.store, week, now.to_pydatetime(),
                                      executor=_Shared(self.executor, self._mapping))
        except KPIWatchError as exc:
            _event(logging.ERROR, "digest", status="error", week=str(week.start.date()), error=str(exc))
            return
        except Exception:  # noqa: BLE001 - a bug must not stop the other jobs
            log.exception("digest job failed")
            return
        _event(logging.INFO, "digest", status="ok", week=str(week.start.date()), queued=queued)
        if queued:
            self.deliver_outbox()

    def judge_kpi(self, name: str) -> None:
        """One KPI's job on its own (its alerts in messages of their own): `judge_kpis([name])`."""
        self.judge_kpis([name])

    @_in_config_locale
    def judge_due(self, name: str) -> dict[str, Any]:
        """Judge the KPI's due periods now (by the daemon's clock); errors are raised (the job,
        `judge_kpis`, logs them instead). Returns the job's log fields."""
        [due] = self._judge_all([name], self.settings)
        if due.error is not None:
            raise due.error
        return due.log_fields()

    def _judge_all(self, names: Sequence[str], settings: Settings) -> list[_Due]:
        """Judge the KPIs' due periods, a period at a time: the KPIs due for the same period are
        checked side by side (each in its own worker), then stored with their alerts in one
        transaction (`_record`). A KPI that fails drops out of the job (the others go on); one
        whose period is not complete yet waits for the next job. When the daemon stops, the
        checks under way are cancelled and nothing of their period is stored."""
        assert self.store is not None
        now = self.clock.now().floor("us")
        dues = [_Due(name, settings.kpi(name)) for name in names]
        self._each(dues, lambda due: self._plan(due, settings, now))
        while not self.stopping.is_set():
            ready = [due for due in dues if due.next is not None]
            if not ready:
                break
            key = min(due.next for due in ready if due.next is not None)
            together = [due for due in ready if due.next == key]
            reports = self._each(together, lambda due: self._attempt(due, settings, now))
            checked = [(due, report) for due, report in zip(together, reports) if report is not None]
            if checked and not self.stopping.is_set():
                self._record(checked, settings, now)
        if self.stopping.is_set():
            for due in dues:
                if due.error is None and not due.waiting and (due.current is not None or due.periods):
                    due.error = JobCancelled(_CANCELLED)
        return dues

    def _each(self, dues: Sequence[_Due], step: Callable[[_Due], Any]) -> list[Any]:
        """`step(due)` for every KPI, side by side in threads (as many as workers); a KPI's
        exception goes to its `error` (its result None) and stops no other."""
        locale = current_locale()  # a pool thread starts in the default context: texts keep the job's language

        def safely(due: _Due) -> Any:
            try:
                with use_locale(locale):
                    return step(due)
            except Exception as exc:  # noqa: BLE001 - reported on the KPI's own log line
                due.error = exc
                return None

        if len(dues) <= 1 or self.rehearsal:
            return [safely(due) for due in dues]
        with ThreadPoolExecutor(max_workers=min(len(dues), max(self.executor.workers, 1)), thread_name_prefix="kpiwatch-kpi") as pool:
            return list(pool.map(safely, dues))

    def _plan(self, due: _Due, settings: Settings, now: pd.Timestamp) -> None:
        """The KPI's due periods by the ledger, and how complete each is at its source."""
        assert self.store is not None
        kpi = due.kpi
        due.source = make_source(settings.sources[kpi.source], settings.timezone, kpi.source)
        due.delay = max(pd.Timedelta(hours=kpi.data_delay_hours), due.source.data_delay)  # e.g. GA4's 48 h
        due.latest = last_closed_period(now - due.delay, kpi.freq, settings.timezone)
        last = self.store.last_judged(due.name, "")
        due.periods = due_periods(pd.Timestamp(last) if last else None, due.latest, kpi.freq,
                                  settings.daemon.catch_up_periods)
        due.shares = completeness_of(due.source, kpi, due.periods)

    def _attempt(self, due: _Due, settings: Settings, now: pd.Timestamp) -> CheckReport | None:
        """Check the KPI's next period: its report, or None when the period is not judged.

        A period whose rows are not all there yet (`kpi.completeness`) makes the KPI wait:
        neither it nor a later period is judged, and the next job asks again. Once it has been
        incomplete for `kpi.no_data_after_hours` it gets a "no data" message and is skipped (the
        ledger moves past it), never judged as a drop.
        """
        assert due.source is not None and self.store is not None
        name, kpi = due.name, due.kpi
        period = due.current = due.periods.pop(0)
        ended = moment_after(period, kpi.freq, settings.timezone)
        patient = now < ended + due.delay + pd.Timedelta(hours=kpi.no_data_after_hours)
        share = due.shares.get(period)
        # Not all there (its rows, or its value): judged, a gap would read as a drop or store an
        # empty evaluation. Looked up before any fit, every cycle; the check itself finds the
        # rest (a filtered KPI's rows, a ratio's denominator).
        found, completeness = t("card.found_none"), "no value"
        report = None
        if share is not None and not is_complete(share, kpi.completeness):
            found, completeness = t("card.found_share", share=format_percent(share)), f"{share:.2f}"
        elif _has_value(due.source, kpi, period):
            if due.stored is None:  # read once per job; a catch-up steps on from each report's states
                due.stored = {(name, segment): state for segment, state in self.store.detector_states(name).items()}
            report = self._check(settings, ended, name, due.stored, due.source)
            if name in report.period:
                return report
        if patient:
            due.fields.update(waiting=_label(period, kpi.freq), completeness=completeness)
            due.waiting, due.current = True, None
            return None
        due.queued += self._no_data(name, kpi, settings, period, found, now - ended, now)
        due.no_data.append(_label(period, kpi.freq))
        due.current = None
        return None

    def _record(self, checked: Sequence[tuple[_Due, CheckReport]], settings: Settings, now: pd.Timestamp) -> None:
        """Store the checks of one period with their alerts, one message per channel, and move the
        KPIs' ledger, in one transaction (a failure leaves every one of them to the next job)."""
        assert self.store is not None
        report = _merged([report for _, report in checked])
        judged = {(due.name, ""): due.current.to_pydatetime() for due, _ in checked if due.current is not None}
        late = next((note for due, _ in checked if due.current is not None and due.latest is not None
                     and (note := late_text(due.current, due.latest, due.kpi.freq))), "")
        try:
            outcome = record_and_send(report, settings, self.store, self.notifier, now.to_pydatetime(), judged=judged,
                                      late_note=late, deliver_now=False, states=report.states)
        except Exception as exc:  # noqa: BLE001 - each KPI's line says why its period waits
            for due, _ in checked:
                due.error = exc
            return
        for due, mine in checked:
            assert due.current is not None and due.stored is not None
            self.checked[due.name] = mine
            due.stored.update(mine.states)
            due.anomalies += len(mine.alerts)
            due.queued += outcome.queued
            due.judged.append(due.current)
            due.current = None
            self.metrics.periods.labels(due.name).inc()
            self.metrics.anomalies.labels(due.name).inc(len(mine.alerts))

    def _finish(self, due: _Due, settings: Settings, seconds: float) -> None:
        """The KPI's part of the job is over: its metrics, failure alerts and one log line."""
        name, error = due.name, due.error
        fields: dict[str, Any] = {"kpi": name}
        if error is None:
            fields.update(due.log_fields())
            level = logging.INFO
            try:
                self._source_ok(name, settings)
            except KPIWatchError as exc:
                fields.update(alert_error=str(exc))
            self.last_good = time.time()
            self.metrics.last_good.set(self.last_good)
        elif isinstance(error, JobCancelled):
            level = logging.WARNING
            shown = ",".join(_label(p, due.kpi.freq) for p in due.judged)
            fields.update(status="cancelled", periods=shown or "none", error=str(error))
        else:
            self.failed = True
            kind = "source" if isinstance(error, SourceError) else "job"
            if isinstance(error, SourceError):
                level, status, text = logging.WARNING, "source_error", str(error)
                self.metrics.source_errors.labels(name).inc()
            elif isinstance(error, (KPIWatchError, TimeoutError)):
                level, status, text = logging.ERROR, "error", str(error)
                self.metrics.job_errors.labels(name).inc()
            else:  # a bug: its traceback goes to the log, the other KPIs go on
                level, status, text = logging.ERROR, "error", f"{type(error).__name__}: {error}"
                self.metrics.job_errors.labels(name).inc()
                log.error("job failed", exc_info=error)
            fields.update(status=status, error=text)
            self._failed_safely(name, text, settings, kind, fields)
        self.metrics.duration.labels(name).observe(seconds)
        _event(level, "job", **fields, seconds=round(seconds, 2))

    def rebuild_report(self) -> None:
        """Write the report (`<state_dir>/report`) from each KPI's latest check in this run, once
        per job that judged a period; a KPI not judged since the daemon started is listed as not
        judged. Only when the daemon serves it (`daemon.health_port` not 0; replay's rehearsal
        never). Never raises: a failed build is logged and the old report stays served."""
        if self.rehearsal or not self.checked or not self.settings.daemon.health_port:
            return
        from alerts.report.build import report_folder, write_report

        started = time.monotonic()
        try:
            with self._report_lock:  # two jobs finishing together write one after the other
                merged = _merged([self.checked[name] for name in self.settings.kpis if name in self.checked])
                write_report(self.settings, merged, report_folder(self.settings), store=self.store)
        except Exception:  # noqa: BLE001 - the report is a view; judging and alerting go on
            log.exception("report build failed")
            return
        _event(logging.INFO, "report", folder=str(report_folder(self.settings)), kpis=len(self.checked),
               seconds=round(time.monotonic() - started, 2))

    def _feedback(self, name: str) -> dict[tuple[str, str], SeriesFeedback]:
        """The recorded verdicts on this KPI's series, as the detector applies them (a replay
        gives its own: `feedback_override`)."""
        assert self.store is not None
        every = self.feedback_override if self.feedback_override is not None else series_feedback(
            self.store.feedback_records())
        return {where: item for where, item in every.items() if where[0] == name}

    def _check(self, settings: Settings, ended: pd.Timestamp, name: str,
               states: Mapping[tuple[str, str], PackedState], source: Source) -> CheckReport:
        """One KPI's check for the period ended at `ended`: its source read here (the job's
        source object: a file read for the completeness check is not read again), its series
        judged on the executor within `daemon.job_timeout_seconds`, stepping on from `states`."""
        if self.stopping.is_set():
            raise JobCancelled(_CANCELLED)
        try:
            return check(settings, at=ended, kpis=[name], states=states, executor=_Shared(self.executor, self._mapping),
                         timeout=settings.daemon.job_timeout_seconds, progress=self._progress_of(name, ended),
                         sources={name: source}, feedback=self._feedback(name))
        except ExecutorCancelled:
            raise JobCancelled(_CANCELLED) from None
        except TimeoutError:
            raise TimeoutError(f"stopped after {settings.daemon.job_timeout_seconds:g} s "
                               "(daemon.job_timeout_seconds)") from None
        finally:
            self.progress.pop(name, None)

    def _progress_of(self, name: str, ended: pd.Timestamp) -> Callable[[int, int], None]:
        """How far a KPI's check is, for /healthz, and a log line every PROGRESS_SECONDS while
        a long one runs (a new KPI of 10,000 series warms up for minutes)."""
        started = last = time.monotonic()

        def progress(done: int, total: int) -> None:
            nonlocal last
            self.progress[name] = f"{done}/{total} series"
            now = time.monotonic()
            if now - last >= PROGRESS_SECONDS and done < total:
                last = now
                _event(logging.INFO, "judging", kpi=name, period=str(ended.date()), series_done=done, series=total,
                       seconds=round(now - started, 1))

        return progress

    def _no_data(self, name: str, kpi: KPIConfig, settings: Settings, period: pd.Timestamp, found: str,
                 since_end: pd.Timedelta, now: pd.Timestamp) -> int:
        """Skip a period that stayed incomplete past its limit: one "no data" message per route
        (its own key, so a restart queues nothing twice) and the ledger past it, in one
        transaction; returns the new outbox rows. Without Slack only the ledger moves.
        found: what the period has, e.g. "has 40% of its usual rows" or "has no value"."""
        assert self.store is not None
        text = no_data_text(name, format_period(period, kpi.freq), found, since_end / pd.Timedelta(hours=1))
        items = [OutboxItem(f"no-data|{name}|{period.isoformat()}|{channel}", "message", channel, text, {"blocks": []})
                 for channel in settings.alerting.channels_for(name, kpi.tags, "warning")]
        plan = CyclePlan(items=items if self.notifier is not None else [], judged={(name, ""): period.to_pydatetime()})
        return self.store.record_cycle([], plan, now.to_pydatetime())

    @_in_config_locale
    def deliver_outbox(self, max_wait: float = 0.0) -> DeliveryReport | None:
        """Send what is due in the outbox (the delivery job; also right after a check), on the
        daemon's clock: rows are queued with its "now", so a simulated clock ahead of (or behind)
        the wall clock delivers too. max_wait: real seconds to wait for retries. Returns what
        was done (None: nothing tried)."""
        if self.lock is not None and not self.stopping.is_set() and not self.lock.held():
            # Another daemon may be active now: stop (a supervisor restarts us, on standby).
            _event(logging.ERROR, "store lock lost (database connection broken): stopping this daemon")
            self.exit_code = 3
            self.stop()
            return None
        if self.notifier is None or self.store is None or self.rehearsal:
            return None
        if not self.channels_checked and not self._check_slack(at_start=False):
            return None  # Slack still unreachable: the outbox keeps everything
        if not self.deliver_lock.acquire(blocking=False):
            return None  # another thread is sending; it (or the next delivery tick) takes these rows too
        try:
            report = deliver(_CountedOutbox(self.store, self._count_sent), self.notifier, self.channel_ids,
                             DeliveryPolicy(max_wait=self._simulated_seconds(max_wait)), clock=self._now,
                             sleep=self._sleep)
        except (SlackError, StoreError) as exc:
            _event(logging.ERROR, "delivery failed", error=str(exc))
            return None
        finally:
            self.deliver_lock.release()
        self.metrics.failed.inc(report.retries)
        self.metrics.dead.inc(len(report.dead))
        if report.sent or report.retries or report.dead:
            _event(logging.INFO, "delivery", sent=report.sent, retries=report.retries, dead=len(report.dead),
                   waiting=report.waiting)
        return report

    def _count_sent(self, row: OutboxRow) -> None:
        """A row Slack took, in the metrics by kind; only alert messages count as alerts sent."""
        kind = row.kind
        if kind == "message":
            kind = "alert" if row.payload.get("alert_keys") else "notice"
        if kind == "alert":
            self.metrics.sent.inc()
        self.metrics.slack_sent.labels(kind).inc()

    # the daemon's clock, for delivery (retry waits and leases are in its seconds)

    def _now(self) -> datetime:
        return self.clock.now().floor("us").to_pydatetime()

    def _simulated_seconds(self, real: float) -> float:
        """`real` seconds on the daemon's clock (0 on a frozen one: nothing to wait for)."""
        return real * self.clock.speed if self.clock.simulated else real

    def _sleep(self, seconds: float) -> None:
        """Sleep `seconds` of the daemon's clock (a simulated clock at 8640x sleeps 1/8640 of it)."""
        if not self.clock.simulated:
            time.sleep(seconds)
        elif self.clock.speed > 0:
            time.sleep(seconds / self.clock.speed)

    # source failures

    def _check_slack(self, at_start: bool) -> bool:
        """Check the token and the routed channels once. A refusal at start stops the daemon
        (exit 3: a person must fix it); Slack unreachable only delays delivery (the outbox keeps
        the alerts) and is checked again before the next delivery."""
        assert self.notifier is not None
        try:
            self.channel_ids = self.notifier.check(self._channels())
        except SlackError as exc:
            if exc.permanent and at_start:
                raise
            _event(logging.WARNING, "Slack not checked yet; alerts wait in the outbox", error=str(exc))
            return False
        self.channels_checked = True
        return True

    def _failed_safely(self, name: str, error: str, settings: Settings, kind: str, fields: dict[str, Any]) -> None:
        """Count the failure (and alert after enough); a store that is down too only adds to the log line."""
        try:
            self._source_failed(name, error, settings, kind)
        except KPIWatchError as failed:
            fields.update(alert_error=str(failed))

    def _source_failed(self, name: str, error: str, settings: Settings, kind: str = "source") -> None:
        """After `daemon.source_failures` failed cycles in a row: one alert, "source failing" (the
        source is down) or "cannot judge" (the data or a fit fails every time, e.g. a time-out):
        otherwise a KPI stuck on one period would only show in the logs."""
        count = self.failures.get(name, 0) + 1
        self.failures[name] = count
        since = self.failing_since.setdefault(name, self.clock.now())
        self.failing_kind.setdefault(name, kind)
        if count != settings.daemon.source_failures or self.store is None or self.notifier is None:
            return
        kpi = settings.kpi(name)
        text = failing_text(name, kind, count, since, error)
        items = [OutboxItem(_failing_key(name, since, channel), "message", channel, text, {"blocks": []})
                 for channel in settings.alerting.channels_for(name, kpi.tags, "critical")]
        self.store.queue(items, self._now())
        self.deliver_outbox()

    def _source_ok(self, name: str, settings: Settings) -> None:
        """A source back after an alert: a reply in the failing alert's thread."""
        count = self.failures.pop(name, 0)
        since = self.failing_since.pop(name, None)
        kind = self.failing_kind.pop(name, "source")
        if since is None or count < settings.daemon.source_failures or self.store is None:
            return
        text = back_text(name, kind)
        items = [OutboxItem(f"resolve|{_failing_key(name, since, channel)}", "resolve", channel, text,
                            {"line": text}, parent_key=_failing_key(name, since, channel))
                 for channel in self._channels() if self.store.get(_failing_key(name, since, channel))]
        self.store.queue(items, self._now())

    # Slack buttons

    @_in_config_locale
    def _on_click(self, click: Click) -> str:
        """A button click on an incident card (from the health server's thread): record it and
        queue the card's update in one transaction (`alerts.feedback.apply_click`), then ask the
        delivery job to run soon; returns the line shown, e.g. "marked false alarm by @ana".
        Raises KPIWatchError for a click kpiwatch cannot take (an unknown incident)."""
        from alerts.feedback import (
            apply_click,  # the lead's module (issue 19); here until it is merged
        )

        if self.store is None:
            raise KPIWatchError("the daemon is not running yet; click again in a moment")
        line = apply_click(self.store, self.settings, click, now=self._now())
        self.wake_delivery()
        return line

    def wake_delivery(self) -> None:
        """Run the delivery job now instead of at its next tick (thread-safe: APScheduler's
        modify_job takes its own lock and wakes the scheduler). The job runs in the scheduler's
        thread pool, never in the caller's thread (Slack is not called from the HTTP thread).
        Without a running scheduler (`run --once`, tests) the rows wait for the next delivery."""
        if not self.scheduler.running or self.stopping.is_set():
            return
        try:
            self.scheduler.modify_job("deliver", next_run_time=datetime.now(timezone.utc))
        except JobLookupError:  # a SIGHUP reload is re-adding the jobs: the new one runs soon anyway
            pass

    def _slack_actions(self, env: Mapping[str, str]) -> SlackActions | None:
        """The /slack/actions handler when SLACK_SIGNING_SECRET is set; otherwise None, and one
        line at start says the buttons are off and how to turn them on."""
        secret = env.get("SLACK_SIGNING_SECRET", "").strip()
        if not secret:
            _event(logging.INFO, "Slack buttons off: POST /slack/actions answers 404; to turn them on, set "
                   "SLACK_SIGNING_SECRET to the Slack app's Signing Secret and its Interactivity Request URL to "
                   "https://<this host>/slack/actions (README: Slack buttons)")
            return None
        # on_click looked up per click, so a test (or a later wiring) may replace it
        return SlackActions(secret, lambda click: self.on_click(click))

    # health and metrics

    def _start_health(self, env: Mapping[str, str] = os.environ) -> None:
        """Serve /healthz and /metrics on `daemon.bind`:`daemon.health_port` (no authentication:
        127.0.0.1 unless the operator opens it), and POST /slack/actions (Slack's signed button
        clicks, `alerts.actions`) when SLACK_SIGNING_SECRET is set."""
        port, bind = self.settings.daemon.health_port, self.settings.daemon.bind
        if not port:
            if env.get("SLACK_SIGNING_SECRET", "").strip():
                _event(logging.WARNING, "SLACK_SIGNING_SECRET is set but daemon.health_port is 0: Slack buttons "
                       "cannot reach the daemon; set daemon.health_port (and a TLS proxy to it)")
            return
        self.actions = self._slack_actions(env)
        daemon = self

        class Handler(BaseHTTPRequestHandler):
            # A client that stops sending mid-request frees its thread after this many seconds.
            timeout = 10

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                if _is_report(self.path):
                    self.close_connection = True
                    self._answer(405, b"the report is read-only: GET only\n", "text/plain", {"Allow": "GET"})
                    return
                if self.path.split("?", 1)[0] != ACTIONS_PATH:
                    self._answer(404, b"not found: POST only to /slack/actions\n", "text/plain")
                    return
                actions = daemon.actions
                if actions is None:
                    self._answer(404, ACTIONS_OFF, "text/plain")
                    return
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    self._answer(411, b"Content-Length required\n", "text/plain")
                    return
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if length < 0:
                    self._answer(400, b"bad Content-Length\n", "text/plain")
                    return
                if length > actions.max_body:
                    # Read (and drop) a body up to DRAIN_LIMIT first: a client still sending when the
                    # socket closes gets a reset, not the 413. Beyond that, refused unread.
                    self.close_connection = True
                    if length <= DRAIN_LIMIT and not self._drain(length):
                        return
                    self._answer(*actions.too_large(length), "text/plain")
                    return
                try:
                    body = self.rfile.read(length)
                except (TimeoutError, ConnectionError):  # the client went quiet or away: no answer to give
                    self.close_connection = True
                    return
                status, body = actions.handle(body, self.headers)
                self._answer(status, body, "application/json" if body.startswith(b"{") else "text/plain")

            def _drain(self, length: int) -> bool:
                try:
                    while length > 0:
                        chunk = self.rfile.read(min(length, 65536))
                        if not chunk:
                            return False
                        length -= len(chunk)
                except (TimeoutError, ConnectionError):
                    return False
                return True

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path.startswith("/healthz"):
                    status, body = daemon.health_status()
                    self._answer(status, json.dumps(body).encode(), "application/json")
                elif self.path.startswith("/metrics"):
                    self._answer(200, generate_latest(daemon.metrics.registry), CONTENT_TYPE_LATEST)
                elif _is_report(self.path):
                    from alerts.report.build import report_folder

                    self._answer(*report_response(report_folder(daemon.settings), self.path))
                else:
                    self._answer(404, b"not found: try /healthz, /metrics or /report/\n", "text/plain")

            def _answer(self, status: int, body: bytes, ctype: str, headers: Mapping[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:  # probes every few seconds: not worth a line
                pass

        server = _HTTPServerV6 if ipaddress.ip_address(bind).version == 6 else ThreadingHTTPServer
        try:
            self.health = server((bind, port), Handler)
        except OSError as exc:
            raise KPIWatchError(f"cannot serve /healthz on {bind} port {port}: {exc.strerror}; set daemon.health_port "
                                "to a free port (0 = off), or daemon.bind to an address of this machine") from None
        threading.Thread(target=self.health.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()

    def _stop_health(self) -> None:
        if self.health is not None:
            self.health.shutdown()
            self.health.server_close()
            self.health = None

    def health_status(self) -> tuple[int, dict[str, Any]]:
        """200 while the scheduler runs (or a one-off round is under way); 503 when stopping."""
        alive = not self.stopping.is_set()
        age = None if self.last_good is None else round(time.time() - self.last_good, 1)
        body = {"status": "ok" if alive else "stopping", "scheduler_running": self.scheduler.running,
                "last_good_cycle_age_seconds": age, "uptime_seconds": round(time.time() - self.started, 1),
                "kpis": len(self.settings.kpis), "running": sorted(self.running), "progress": dict(self.progress)}
        return (200 if alive else 503), body


REPORT_PATH = "/report"
REPORT_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml",
                ".png": "image/png"}
REPORT_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    # The report has no scripts: a page that ran one would not be ours.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
                               "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _is_report(raw_path: str) -> bool:
    path = urlsplit(raw_path).path
    return path == REPORT_PATH or path.startswith(REPORT_PATH + "/")


def report_response(folder: Path, raw_path: str) -> tuple[int, bytes, str, dict[str, str]]:
    """The answer to `GET raw_path` (under /report) from the report folder: (status, body,
    content type, headers). Only files inside `folder` of the report's own types are served; a
    path with `..`, a hidden part (a temp file being written), a backslash or a NUL, or one that
    resolves outside the folder (a symlink) is refused with 404, as is a missing file. `/report`
    redirects to `/report/` (the pages' links are relative); 503 before the first build."""
    path = urlsplit(raw_path).path
    if path == REPORT_PATH:
        return 301, b"", "text/plain", {"Location": REPORT_PATH + "/"}
    rest = unquote(path[len(REPORT_PATH) + 1:]) or "index.html"
    parts = rest.split("/")
    not_found = (404, b"not found\n", "text/plain", {"X-Content-Type-Options": "nosniff"})
    if any(not part or part.startswith(".") or "\\" in part or "\x00" in part for part in parts):
        return not_found
    root = folder.resolve()
    if not (root / "index.html").is_file():
        return (503, b"the report is not built yet: the daemon builds it after its first cycle that judges a period "
                b"(or run `kpiwatch report`)\n", "text/plain", {"Retry-After": "60"})
    target = (root / rest).resolve()
    ctype = REPORT_TYPES.get(target.suffix.lower())
    if ctype is None or not target.is_relative_to(root) or not target.is_file():
        return not_found
    try:
        body = target.read_bytes()
    except OSError:
        return not_found
    return 200, body, ctype, dict(REPORT_HEADERS)


class _HTTPServerV6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class _Shared:
    """The daemon's executor as one KPI's check sees it: KPIs judged side by side (threads) take
    turns at the executor, a few chunks each (`TURN_CHUNKS` per worker), so a new KPI warming
    up 10,000 series for minutes does not hold up the others' cycles."""

    def __init__(self, executor: Executor, turn: threading.Lock) -> None:
        self.executor, self.turn = executor, turn
        self.workers = executor.workers

    def map(self, function: Callable[[Any], Any], items: Sequence[Any], *, timeout: float | None = None,
            progress: Callable[[int, int], None] | None = None) -> list[Any]:
        """`executor.map` in turns; `timeout` is for all of them."""
        deadline = None if timeout is None else time.monotonic() + timeout
        size = max(1, TURN_CHUNKS * max(self.workers, 1))
        results: list[Any] = []
        for start in range(0, len(items), size):
            left = None if deadline is None else max(deadline - time.monotonic(), 0.001)
            with self.turn:
                done = len(results)
                results.extend(self.executor.map(
                    function, items[start:start + size], timeout=left,
                    progress=None if progress is None else (lambda n, _, d=done: progress(d + n, len(items)))))
        return results

    def cancel(self) -> None:
        self.executor.cancel()

    def close(self) -> None:
        """The daemon closes its executor when it stops, not each check."""


TURN_CHUNKS = 4  # chunks per worker a KPI's check sends before another KPI may take a turn


class _CountedOutbox:
    """The store as delivery's outbox, telling `on_sent` of every row Slack took (delivery
    counts rows; the metrics count alert messages apart from charts, resolves and notices)."""

    def __init__(self, store: Store, on_sent: Callable[[OutboxRow], None]) -> None:
        self._store = store
        self._on_sent = on_sent
        self._seen: dict[int, OutboxRow] = {}

    def waiting(self) -> list[OutboxRow]:
        rows = self._store.waiting()
        self._seen.update((row.id, row) for row in rows)
        return rows

    def mark_sent(self, row_id: int, slack_channel: str, slack_ts: str, note: str = "") -> None:
        self._store.mark_sent(row_id, slack_channel, slack_ts, note)
        if row_id in self._seen:
            self._on_sent(self._seen[row_id])

    def __getattr__(self, name: str) -> Any:  # get, children, mark_sending, mark_retry, mark_dead, ...
        return getattr(self._store, name)


def _merged(reports: Sequence[CheckReport]) -> CheckReport:
    """The checks of KPIs judged together as one check's report (`kpiwatch check` judges every
    KPI in one): their alerts go out as one message per channel."""
    if len(reports) == 1:
        return reports[0]
    return CheckReport({name: period for r in reports for name, period in r.period.items()},
                       tuple(a for r in reports for a in r.alerts), tuple(x for r in reports for x in r.results),
                       tuple(n for r in reports for n in r.incomplete), tuple(n for r in reports for n in r.no_data),
                       reports[0].country)


def _has_value(source: Source, kpi: KPIConfig, period: pd.Timestamp) -> bool:
    """Whether the source has a value of the KPI's first metric (total) for `period`: one cheap
    fetch, no dimensions, that one period."""
    frame = source.fetch(kpi.metrics[:1], [], kpi.freq, start=period, end=period)
    return bool(len(frame)) and bool(frame[kpi.metrics[0]].notna().any())


def _label(period: pd.Timestamp, freq: str) -> str:
    """A period as the log shows it: `2025-12-09`, or `2025-12-09T14:00` for hours."""
    return period.strftime("%Y-%m-%d" if freq == "D" else "%Y-%m-%dT%H:%M")


def _failing_key(name: str, since: pd.Timestamp, channel: str) -> str:
    return f"source-failing|{name}|{since.isoformat()}|{channel}"
