"""`kpiwatch run`: the daemon. APScheduler 3.x runs one job per KPI on its schedule; the ledger
in the state store (not the scheduler) says which periods are due, so every closed period is
judged once through restarts, downtime and clock changes.

A period is judged only when its data are complete: the source's raw rows for it reach
`completeness` of the usual count (`forecaster.completeness`); until then the KPI waits, and a
period still incomplete after `no_data_after_hours` gets a "no data" message instead of a verdict.

A job judges each due period in a fresh worker process with a time limit (a hung fit is
killed, Prophet's temp files go with the process, memory stays flat), then stores the result and
queues its alerts in one transaction. A separate delivery job sends the outbox; one lock per
store keeps a second daemon on standby. SIGTERM/SIGINT finish the running job, flush the outbox
and exit 0; SIGHUP reloads the config (an invalid one is refused and the old one kept).
"""

from __future__ import annotations

import fcntl
import json
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from apscheduler.schedulers.blocking import BlockingScheduler
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from alerts.delivery import DeliveryPolicy, deliver
from alerts.incidents import record_and_send
from alerts.slack import Notifier, SlackError, make_notifier
from alerts.store import CyclePlan, OutboxItem, Store, StoreError
from forecaster.completeness import is_complete
from forecaster.detect import State
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
from forecaster.types import KPIWatchError, SourceError
from forecaster.units import format_period

log = logging.getLogger("kpiwatch.daemon")
DELIVERY_SECONDS = 5  # how often the outbox is sent (retries wait for their own time)
LOCK_POLL_SECONDS = 2.0


class LockBusy(KPIWatchError):
    """Another daemon holds the store (exit code 3 with --no-wait)."""

    exit_code = 3


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


# -- the worker process --------------------------------------------------------------------------


def _check_in_worker(settings: Settings, at: pd.Timestamp, name: str,
                     states: Mapping[tuple[str, str], State]) -> CheckReport:
    """One KPI's check in a worker process (one process per period: nothing leaks across),
    stepping each series on from its stored detector state."""
    return check(settings, at=at, kpis=[name], workers=1, states=states)


class Worker:
    """A worker process that runs one function call at a time, with a time limit.

    A call that outlives its limit has its process killed (and a fresh one started on the
    next call), so a hung fit never blocks the daemon. The process is also replaced after
    `max_calls` calls, so memory stays flat over months. Workers are forked from a fork
    server: forking the daemon itself, with its threads, is not safe.
    """

    def __init__(self, max_calls: int = 200) -> None:
        self.max_calls = max_calls
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["forecaster.pipeline"])  # imported once, in the server
        self._process: Any = None
        self._conn: Any = None
        self._calls = 0

    def call(self, function: Callable[..., Any], args: tuple[Any, ...], seconds: float) -> Any:
        """`function(*args)` in the worker; its exception is raised here; TimeoutError after
        `seconds`; KPIWatchError when the process dies."""
        if self._process is None or not self._process.is_alive() or self._calls >= self.max_calls:
            self._start()
        self._calls += 1
        self._conn.send((function, args))
        try:
            answered = self._conn.poll(seconds)
            ok, value = self._conn.recv() if answered else (False, None)
        except (EOFError, OSError):
            code = self._process.exitcode if self._process is not None else None
            self.close()
            raise KPIWatchError(f"the worker process died (exit code {code}); see the log above") from None
        if not answered:  # (raised out here: TimeoutError is an OSError and must not read as a death)
            self.close()
            raise TimeoutError(f"stopped after {seconds:.0f} s (daemon.job_timeout_seconds)")
        if not ok:
            raise value
        return value

    def close(self) -> None:
        """Stop the process (kill: a hung fit does not listen)."""
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join()
            self._conn.close()
        self._process = self._conn = None

    def _start(self) -> None:
        self.close()
        parent, child = self._context.Pipe()
        self._process = self._context.Process(target=_worker_loop, args=(child,), daemon=True)
        self._process.start()
        child.close()
        self._conn, self._calls = parent, 0


def _worker_loop(conn: Any) -> None:
    """The worker's side: run each (function, args) received and send back (ok, value)."""
    # Ctrl-C or a group SIGTERM is for the daemon, which lets the call finish (or kills us).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        try:
            function, args = conn.recv()
        except EOFError:
            return  # the daemon is gone
        try:
            result: tuple[bool, Any] = (True, function(*args))
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the daemon's job
            result = (False, exc if isinstance(exc, KPIWatchError) else KPIWatchError(f"{type(exc).__name__}: {exc}"))
        try:
            conn.send(result)
        except (BrokenPipeError, OSError):
            return


# -- observability -------------------------------------------------------------------------------


@dataclass
class Metrics:
    """Prometheus metrics of one daemon (its own registry)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.periods = Counter("kpiwatch_periods_judged", "Periods judged", ["kpi"], registry=r)
        self.anomalies = Counter("kpiwatch_anomalies", "Alerts raised by checks", ["kpi"], registry=r)
        self.sent = Counter("kpiwatch_alerts_sent", "Outbox rows delivered to Slack", registry=r)
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
        return json.dumps(payload, default=str)


class TextFormatter(logging.Formatter):
    """`time level message key=value ...`."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in getattr(record, "fields", {}).items())
        return f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S%z')} {record.levelname.lower()} {record.getMessage()} {fields}".rstrip()


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
        self._shutdown: threading.Thread | None = None
        self.running: set[str] = set()  # KPIs being judged right now (shown by /healthz)
        # Worker processes shared by the KPI jobs: as many as cores, taken and given back.
        self.workers: queue.Queue[Worker] = queue.Queue()
        for _ in range(max(1, os.cpu_count() or 1)):
            self.workers.put(Worker())

    # lifecycle

    def run(self, once: bool = False) -> int:
        """Start, serve until stopped (or one round with `once`), flush, exit code."""
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
                   slack="on" if self.notifier else "off", simulated_clock=self.clock.simulated)
            if once:
                for name in self.settings.kpis:
                    self.judge_kpi(name)
            else:
                self._schedule_jobs()
                if not self.stopping.is_set():  # a SIGTERM during start-up: do not block in start()
                    self.scheduler.start()  # blocks until shutdown
                if self._shutdown is not None:
                    self._shutdown.join()  # the running job has finished
            self.deliver_outbox(max_wait=10.0)
            _event(logging.INFO, "stopped", exit_code=self.exit_code)
            return self.exit_code
        finally:
            self._stop_health()
            while not self.workers.empty():
                self.workers.get().close()
            self.lock.release()
            self.store.close()

    def stop(self, *_: object) -> None:
        """SIGTERM/SIGINT: let the running job finish, then return from `run`."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        _event(logging.INFO, "stopping: finishing the running job")
        if self.scheduler.running:
            # shutdown(wait=True) joins the running job; not from inside the signal handler
            self._shutdown = threading.Thread(target=self.scheduler.shutdown, kwargs={"wait": True})
            self._shutdown.start()

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
        """One job per KPI (explicit ids), plus the delivery job."""
        grace = self.settings.daemon.misfire_grace_seconds
        for name, kpi in self.settings.kpis.items():
            trigger = parse_schedule(kpi.schedule or default_schedule(kpi.freq), self.settings.timezone)
            self.scheduler.add_job(self.judge_kpi, trigger, args=[name], id=f"kpi:{name}", name=name,
                                   coalesce=True, max_instances=1, misfire_grace_time=grace,
                                   replace_existing=True, next_run_time=pd.Timestamp.now(tz="UTC").to_pydatetime())
        self.scheduler.add_job(self.deliver_outbox, "interval", seconds=DELIVERY_SECONDS, id="deliver",
                               coalesce=True, max_instances=1, misfire_grace_time=grace, replace_existing=True)

    def _channels(self) -> list[str]:
        return sorted({route.channel for route in self.settings.alerting.routes})

    # the jobs

    def judge_kpi(self, name: str) -> None:
        """The job of one KPI: judge every due period; never raises into the scheduler."""
        started = time.monotonic()
        settings = self.settings
        kpi = settings.kpi(name)
        fields: dict[str, Any] = {"kpi": name}
        self.running.add(name)
        try:
            fields.update(self._judge_due(name, kpi, settings))
            self._source_ok(name, settings)
            self.last_good = time.time()
            self.metrics.last_good.set(self.last_good)
            level = logging.INFO
        except SourceError as exc:
            level = logging.WARNING
            fields.update(status="source_error", error=str(exc))
            self.metrics.source_errors.labels(name).inc()
            self._failed_safely(name, str(exc), settings, "source", fields)
        except (KPIWatchError, TimeoutError) as exc:
            level = logging.ERROR
            fields.update(status="error", error=str(exc))
            self.metrics.job_errors.labels(name).inc()
            self._failed_safely(name, str(exc), settings, "job", fields)
        except Exception as exc:  # noqa: BLE001 - a bug must not stop the other KPIs' jobs
            level = logging.ERROR
            fields.update(status="error", error=f"{type(exc).__name__}: {exc}")
            self.metrics.job_errors.labels(name).inc()
            log.exception("job failed")
            self._failed_safely(name, fields["error"], settings, "job", fields)
        finally:
            self.running.discard(name)
        seconds = time.monotonic() - started
        self.metrics.duration.labels(name).observe(seconds)
        _event(level, "job", **fields, seconds=round(seconds, 2))

    def judge_due(self, name: str) -> dict[str, Any]:
        """Judge the KPI's due periods now (by the daemon's clock); errors are raised (the job,
        `judge_kpi`, logs them instead). Returns the job's log fields."""
        return self._judge_due(name, self.settings.kpi(name), self.settings)

    def _judge_due(self, name: str, kpi: KPIConfig, settings: Settings) -> dict[str, Any]:
        """Judge the due periods oldest first, each in its own worker and transaction.

        A period whose rows are not all there yet (`kpi.completeness`) stops the KPI's round:
        neither it nor a later period is judged, and the next round asks again. Once it has
        been incomplete for `kpi.no_data_after_hours` it gets a "no data" message and is
        skipped (the ledger moves past it), never judged as a drop.
        """
        assert self.store is not None
        now = self.clock.now().floor("us")
        source = make_source(settings.sources[kpi.source], settings.timezone, kpi.source)
        delay = max(pd.Timedelta(hours=kpi.data_delay_hours), source.data_delay)  # e.g. GA4's 48 h
        latest = last_closed_period(now - delay, kpi.freq, settings.timezone)
        last = self.store.last_judged(name, "")
        periods = due_periods(pd.Timestamp(last) if last else None, latest, kpi.freq,
                              settings.daemon.catch_up_periods)
        shares = completeness_of(source, kpi, periods)
        anomalies = queued = 0
        judged: list[pd.Timestamp] = []
        fields: dict[str, Any] = {}
        no_data: list[str] = []
        stored: dict[tuple[str, str], State] | None = None
        for period in periods:
            if self.stopping.is_set():
                break
            ended = moment_after(period, kpi.freq, settings.timezone)
            patient = now < ended + delay + pd.Timedelta(hours=kpi.no_data_after_hours)
            share = shares.get(period)
            if share is not None and not is_complete(share, kpi.completeness):
                if patient:
                    fields.update(waiting=_label(period, kpi.freq), completeness=f"{share:.2f}")
                    break
                queued += self._no_data(name, kpi, settings, period, f"has {share:.0%} of its usual rows",
                                        now - ended, now)
                no_data.append(_label(period, kpi.freq))
                continue
            report = None
            if _has_value(source, kpi, period):
                if stored is None:  # read once per job; a catch-up steps on from each report's states
                    stored = {(name, segment): state for segment, state in self.store.detector_states(name).items()}
                report = self._check(settings, ended, name, stored)
            if report is None or name not in report.period:
                # The source has nothing for the period (its data stopped, or is later than its
                # delay): judged, it would store an empty evaluation and move on without a word.
                # Same patience as a partial period. Looked up before any fit, every cycle; the
                # check itself finds the rest (a filtered KPI's rows, a ratio's denominator).
                if patient:
                    fields.update(waiting=_label(period, kpi.freq), completeness="no value")
                    break
                queued += self._no_data(name, kpi, settings, period, "has no value", now - ended, now)
                no_data.append(_label(period, kpi.freq))
                continue
            late = _late_note(period, latest, kpi.freq)
            outcome = record_and_send(report, settings, self.store, self.notifier, now.to_pydatetime(),
                                      judged={(name, ""): period.to_pydatetime()}, late_note=late, deliver_now=False,
                                      states=report.states)
            stored.update(report.states)
            anomalies += len(report.alerts)
            queued += outcome.queued
            judged.append(period)
            self.metrics.periods.labels(name).inc()
            self.metrics.anomalies.labels(name).inc(len(report.alerts))
        if queued:
            self.deliver_outbox()
        if no_data:
            fields["no_data"] = ",".join(no_data)
        shown = ",".join(_label(p, kpi.freq) for p in judged)
        return {"status": "ok", "periods": shown or "none due", "anomalies": anomalies, "queued": queued, **fields}

    def _check(self, settings: Settings, ended: pd.Timestamp, name: str,
               states: Mapping[tuple[str, str], State]) -> CheckReport:
        """One KPI's check for the period ended at `ended`, in a worker process with a time limit
        (in this process when rehearsing: replay has no hung fits to fear and no time to lose)."""
        if self.rehearsal:
            return _check_in_worker(settings, ended, name, states)
        worker = self.workers.get()
        try:
            return worker.call(_check_in_worker, (settings, ended, name, states), settings.daemon.job_timeout_seconds)
        finally:
            self.workers.put(worker)

    def _no_data(self, name: str, kpi: KPIConfig, settings: Settings, period: pd.Timestamp, found: str,
                 since_end: pd.Timedelta, now: pd.Timestamp) -> int:
        """Skip a period that stayed incomplete past its limit: one "no data" message per route
        (its own key, so a restart queues nothing twice) and the ledger past it, in one
        transaction; returns the new outbox rows. Without Slack only the ledger moves.
        found: what the period has, e.g. "has 40% of its usual rows" or "has no value"."""
        assert self.store is not None
        hours = since_end / pd.Timedelta(hours=1)
        text = (f":grey_question: No data: {name} for {format_period(period, kpi.freq)} {found} {hours:.0f} h "
                "after it ended; it is not judged (a gap is not a drop). Check the export or the source.")
        items = [OutboxItem(f"no-data|{name}|{period.isoformat()}|{route.channel}", "message", route.channel, text,
                            {"blocks": []})
                 for route in settings.alerting.routes if route.takes(name, kpi.tags, "warning")]
        plan = CyclePlan(items=items if self.notifier is not None else [], judged={(name, ""): period.to_pydatetime()})
        return self.store.record_cycle([], plan, now.to_pydatetime())

    def deliver_outbox(self, max_wait: float = 0.0) -> None:
        """Send what is due in the outbox (the delivery job; also right after a check)."""
        if self.lock is not None and not self.stopping.is_set() and not self.lock.held():
            # Another daemon may be active now: stop (a supervisor restarts us, on standby).
            _event(logging.ERROR, "store lock lost (database connection broken): stopping this daemon")
            self.exit_code = 3
            self.stop()
            return
        if self.notifier is None or self.store is None or self.rehearsal:
            return
        if not self.channels_checked and not self._check_slack(at_start=False):
            return  # Slack still unreachable: the outbox keeps everything
        if not self.deliver_lock.acquire(blocking=False):
            return  # another thread is sending; it (or the next delivery tick) takes these rows too
        try:
            report = deliver(self.store, self.notifier, self.channel_ids, DeliveryPolicy(max_wait=max_wait))
        except (SlackError, StoreError) as exc:
            _event(logging.ERROR, "delivery failed", error=str(exc))
            return
        finally:
            self.deliver_lock.release()
        self.metrics.sent.inc(report.sent)
        self.metrics.failed.inc(report.retries)
        self.metrics.dead.inc(len(report.dead))
        if report.sent or report.retries or report.dead:
            _event(logging.INFO, "delivery", sent=report.sent, retries=report.retries, dead=len(report.dead),
                   waiting=report.waiting)

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
        if kind == "source":
            text = (f":warning: Source failing: {name} could not be read for {count} cycles in a row (since "
                    f"{since:%Y-%m-%d %H:%M} UTC): {error}. Its last state is kept; missed periods are judged when it is back.")
        else:
            text = (f":warning: Cannot judge: {name} failed {count} cycles in a row (since {since:%Y-%m-%d %H:%M} "
                    f"UTC): {error}. Its last state is kept; the period is tried again every cycle.")
        items = [OutboxItem(_failing_key(name, since, route.channel), "message", route.channel, text, {"blocks": []})
                 for route in settings.alerting.routes if route.takes(name, kpi.tags, "critical")]
        self.store.queue(items)
        self.deliver_outbox()

    def _source_ok(self, name: str, settings: Settings) -> None:
        """A source back after an alert: a reply in the failing alert's thread."""
        count = self.failures.pop(name, 0)
        since = self.failing_since.pop(name, None)
        kind = self.failing_kind.pop(name, "source")
        if since is None or count < settings.daemon.source_failures or self.store is None:
            return
        text = (f":white_check_mark: Source back: {name} is read again; the missed periods were judged." if kind == "source"
                else f":white_check_mark: Judged again: {name}; the missed periods were judged.")
        items = [OutboxItem(f"resolve|{_failing_key(name, since, route.channel)}", "resolve", route.channel, text,
                            {"line": text}, parent_key=_failing_key(name, since, route.channel))
                 for route in settings.alerting.routes if self.store.get(_failing_key(name, since, route.channel))]
        self.store.queue(items)

    # health and metrics

    def _start_health(self) -> None:
        port = self.settings.daemon.health_port
        if not port:
            return
        daemon = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path.startswith("/healthz"):
                    status, body = daemon.health_status()
                    self._answer(status, json.dumps(body).encode(), "application/json")
                elif self.path.startswith("/metrics"):
                    self._answer(200, generate_latest(daemon.metrics.registry), CONTENT_TYPE_LATEST)
                else:
                    self._answer(404, b"not found: try /healthz or /metrics\n", "text/plain")

            def _answer(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:  # probes every few seconds: not worth a line
                pass

        try:
            self.health = ThreadingHTTPServer(("0.0.0.0", port), Handler)
        except OSError as exc:
            raise KPIWatchError(f"cannot serve /healthz on port {port}: {exc.strerror}; set daemon.health_port "
                                "to a free port (0 = off)") from None
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
                "kpis": len(self.settings.kpis), "running": sorted(self.running)}
        return (200 if alive else 503), body


def _has_value(source: Source, kpi: KPIConfig, period: pd.Timestamp) -> bool:
    """Whether the source has a value of the KPI's first metric (total) for `period`: one cheap
    fetch, no dimensions, that one period."""
    frame = source.fetch(kpi.metrics[:1], [], kpi.freq, start=period, end=period)
    return bool(len(frame)) and bool(frame[kpi.metrics[0]].notna().any())


def _label(period: pd.Timestamp, freq: str) -> str:
    """A period as the log shows it: `2025-12-09`, or `2025-12-09T14:00` for hours."""
    return period.strftime("%Y-%m-%d" if freq == "D" else "%Y-%m-%dT%H:%M")


def _late_note(period: pd.Timestamp, latest: pd.Timestamp, freq: str) -> str:
    if period >= latest:
        return ""
    step = pd.Timedelta(days=1) if freq == "D" else pd.Timedelta(hours=1)
    behind = int((latest - period) / step)
    unit = "day" if freq == "D" else "hour"
    return f"Late: judged {behind} {unit}{'s' if behind != 1 else ''} after it closed (kpiwatch was down or the data was late)."


def _failing_key(name: str, since: pd.Timestamp, channel: str) -> str:
    return f"source-failing|{name}|{since.isoformat()}|{channel}"
