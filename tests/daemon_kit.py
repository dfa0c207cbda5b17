"""Helpers for the daemon tests: `kpiwatch run` as a subprocess (its JSON log lines, the fake
Slack's channel, the SQLite store), and a daemon in this process on an injected clock.

Nothing here waits on the wall clock for the daemon's sake: the tests freeze the daemon's clock
(`Clock(start, speed=0)`, or `KPIWATCH_CLOCK=START*0` for a subprocess) and poll for what they
wait for (a log line, a row), so a loaded machine only makes them slower, never wrong.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from fakeslack import FakeSlack

from alerts.daemon import Daemon
from alerts.slack import SlackBot
from alerts.store import Store
from forecaster.schedule import Clock

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def frozen(at: str) -> str:
    """A `KPIWATCH_CLOCK` value that stands still at `at` (ISO 8601, UTC)."""
    return f"{at}*0"


class Run:
    """One `kpiwatch run` process (in its own process group, with its workers); its log lines are
    collected from stderr. Every Run is killed at the end of its test, pass or fail."""

    started: list[Run] = []

    def __init__(self, config: Path, env: dict[str, str], log: Path, *args: str) -> None:
        self.log = log
        handle = log.open("a")
        env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))}
        self.process = subprocess.Popen([sys.executable, "-m", "forecaster.cli", "run", "--config", str(config), *args],
                                        env=env, stdout=handle, stderr=handle, cwd=config.parent,
                                        start_new_session=True)
        Run.started.append(self)

    @classmethod
    def kill_all(cls) -> None:
        """SIGKILL every daemon still running and its process group (fork server, workers)."""
        for run in cls.started:
            run.kill()
        cls.started.clear()

    def kill(self) -> None:
        """SIGKILL the daemon and its workers, mid-whatever."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(60)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout)


def events(log: Path, message: str = "job") -> list[dict]:
    if not log.exists():
        return []
    lines = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:  # a line being written right now
                pass
    return [line for line in lines if line.get("message") == message]


def judged_days(log: Path, kpi: str | None = None) -> list[str]:
    """The periods the log's job lines say were judged, in order (of `kpi`, or of every KPI)."""
    days = []
    for job in events(log):
        if job.get("status") == "ok" and job["periods"] != "none due" and kpi in (None, job.get("kpi")):
            days.extend(job["periods"].split(","))
    return days


def wait_until(predicate: Callable[[], object], timeout: float = 240, step: float = 0.1) -> None:
    """Poll `predicate` until it holds. The timeout only ends a test that would hang: it is far
    above what anything takes on a loaded machine, and nothing is asserted about the time."""
    if not soon(predicate, timeout, step):
        raise AssertionError("timed out waiting")


def soon(predicate: Callable[[], object], timeout: float, step: float = 0.1) -> bool:
    """Whether `predicate` holds within `timeout` seconds (polled every `step`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def posted_keys(slack: FakeSlack, channel: str = "C0ALERTS") -> list[str]:
    """The outbox keys of the channel's top-level messages (kpiwatch puts each in the metadata)."""
    return [m["metadata"]["event_payload"]["key"] for m in slack.messages(channel)
            if not m["thread_ts"] and m.get("metadata")]


def query(state: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(state) as db:
        return db.execute(sql).fetchall()


def unsettled_rows(state: Path) -> int:
    """Outbox rows not yet in Slack or dead (waiting, or claimed by a sender)."""
    if not state.exists():
        return 0
    try:
        return query(state, "SELECT count(*) FROM outbox WHERE state IN ('pending', 'sending')")[0][0]
    except sqlite3.OperationalError:  # no schema yet
        return 0


def write_leads(path: Path, start: str = "2024-01-01", end: str = "2025-12-31",
                columns: tuple[str, ...] = ("leads",), drop_from: str | None = None, share: float = 0.3) -> None:
    """Daily leads with a weekly rhythm (no incident), one column per name in `columns`; from
    `drop_from` on every column falls to `share` of normal."""
    days = pd.date_range(start, end, freq="D")
    normal = pd.Series([200 + 40 * (d.day_of_week < 5) + (d.day_of_year % 7) for d in days], index=days, dtype=float)
    if drop_from is not None:
        normal[normal.index >= pd.Timestamp(drop_from)] *= share
    frame = pd.DataFrame({"day": days.strftime("%Y-%m-%d")})
    for i, column in enumerate(columns):
        frame[column] = (normal * (1 + i / 10)).round().astype(int).to_numpy()
    frame.to_csv(path, index=False)


class _JobLines(logging.Handler):
    def __init__(self, message: str) -> None:
        super().__init__(logging.INFO)
        self.message = message
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == self.message:
            self.lines.append(dict(getattr(record, "fields", {})))


@contextmanager
def job_lines(message: str = "job") -> Iterator[list[dict]]:
    """The fields of every `message` line (default: the job lines) the daemon logs in this
    process while inside, in order (a handler on its own logger: `kpiwatch run` in-process stops
    propagation to the root)."""
    logger = logging.getLogger("kpiwatch.daemon")
    handler, level = _JobLines(message), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def frozen_clock(at: str | pd.Timestamp) -> Clock:
    """The daemon's clock standing still at `at` (UTC when it names no zone)."""
    when = pd.Timestamp(at)
    return Clock(when.tz_convert("UTC") if when.tzinfo else when.tz_localize("UTC"), speed=0.0)


@contextmanager
def daemon_in_process(config: Path, at: str | pd.Timestamp | Clock, slack: FakeSlack | None = None) -> Iterator[Daemon]:
    """A daemon in this process on `config`, its store open, its clock frozen at `at` (or the
    Clock given; set `daemon.clock` to move it), talking to `slack` (None: no Slack). Its
    jobs are called directly (`judge_kpis`, `deliver_outbox`): no scheduler, no signals."""
    daemon = Daemon(config, clock=at if isinstance(at, Clock) else frozen_clock(at))
    daemon.store = Store(daemon.settings.state_url)
    if slack is not None:
        daemon.notifier = SlackBot("xoxb-test", base_url=slack.url)
        daemon.channel_ids, daemon.channels_checked = daemon.notifier.check(daemon._channels()), True
    try:
        yield daemon
    finally:
        daemon.executor.close()
        daemon.store.close()


@contextmanager
def own_signals() -> Iterator[None]:
    """`Daemon.run` in this process installs its SIGTERM/SIGINT/SIGHUP handlers: put pytest's back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


@contextmanager
def slack_env(monkeypatch, slack: FakeSlack, clock: str | None = None) -> Iterator[FakeSlack]:
    """The environment `kpiwatch run` reads: the fake Slack's bot, and `KPIWATCH_CLOCK` if given."""
    monkeypatch.delenv("SLACK_WEBHOOK_URL", raising=False)
    monkeypatch.setenv("SLACK_API_URL", slack.url)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
    if clock is not None:
        monkeypatch.setenv("KPIWATCH_CLOCK", clock)
    with own_signals():
        yield slack
