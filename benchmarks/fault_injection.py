"""Fault injection: `kpiwatch run` killed at random moments while Slack misbehaves (a benchmark
and, with a handful of kills, the acceptance test tests/test_fault_injection.py).

The daemon runs as a subprocess on simulated time (a day every 2 s) over a CSV file source of two
daily KPIs whose every spike day is known (a one-day drop to 30%, then normal again: one alert and
one "resolved" reply each). Before it starts, a storm of `--backlog` messages is queued in the
store's outbox (what a `kpiwatch check` of many KPIs leaves while Slack is unreachable). Then:

- each daemon is SIGKILLed (with its workers) at a random moment of its life (`--life` seconds),
  and a new one is started, `--kills` times;
- the fake Slack (tests/fakeslack.py) is down (HTTP 503) for the first lives; back, it takes the
  first post and drops the connection, and rate-limits the look-up for it for 15 s (by then the
  rest of the storm is above it: issue 17 #11a), and from then on it answers a random share (`--fault-rate`) of posts, edits and history reads with 429 (Retry-After 1 s), 500,
  a dropped connection after it posted, or a dropped connection before it saw the request;
- during every `--read-only-every`-th daemon's life, from its start or later, the store is made
  read-only for 2 to 5 s (the SQLite file, its WAL and shared memory: chmod 0444, or as root
  `chattr +i`, which fails writes through handles already open too);
- a last daemon runs (Slack still faulty) until every period is judged and stops on SIGTERM
  (Slack is well again from then on); what is still claimed by a killed sender or waiting for a
  retry is sent with the clock past its lease (what `kpiwatch outbox retry` does 2 minutes
  later), and Slack is compared with what should have been sent.

What should have been sent: every message and "resolved" reply in the outbox (the storm and the
daemon's alerts, each with its alert key in the message metadata) exactly once, and for each day
judged live that the detector found anomalous the bad way (a fall), an alert line naming the KPI
and the day. Lost: a key not in Slack, or such a day without its alert line; duplicated: a key
Slack holds more than once. (How many planted spikes the detector flagged is shown apart: that is
the detector's part, not delivery's.)

    .venv/bin/python benchmarks/fault_injection.py --kills 50
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the fake Slack lives with the tests

from fakeslack import FakeSlack  # noqa: E402

from alerts.daemon import DELIVERY_SECONDS  # noqa: E402
from alerts.delivery import DeliveryPolicy, deliver  # noqa: E402
from alerts.slack import METADATA_EVENT, SlackBot  # noqa: E402
from alerts.store import OutboxItem, Store  # noqa: E402

SIM_START = pd.Timestamp("2026-01-05T06:00:00Z")
SPEED = 43200.0  # simulated seconds per real second: a day every 2 s
KPIS = ("leads_a", "leads_b")
CHANNEL = "#kpi-alerts"
CONFIG = """
timezone: UTC
state: sqlite:///{state}
sources: {{files: {{type: csv, path: "{path}", timestamp: day}}}}
alerting: {{routes: [{{channel: "{channel}"}}], charts: false}}
daemon: {{health_port: 0, log_format: json, catch_up_periods: 200}}
kpis:
{kpis}
"""
KPI = """  {name}:
    metric: {name}
    source: files
    model: ets
    schedule: every 1 seconds
    completeness: 0
"""


@dataclass
class Figures:
    """What one run did and found."""

    kills: int = 0
    exited: list[str] = field(default_factory=list)  # daemons that ended before their kill
    faults: Counter[str] = field(default_factory=Counter)  # Slack faults injected, by kind
    read_only: int = 0  # windows of a read-only store
    expected: int = 0  # keys that should be in Slack (messages and replies)
    received: int = 0  # keyed messages Slack holds
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    anomalies: int = 0  # days judged live that the detector found anomalous the bad way (each must be alerted)
    anomalies_alerted: int = 0
    spikes: int = 0  # spike days judged live (for the detector's part: how many it flagged)
    spikes_flagged: int = 0
    settled_late: int = 0  # rows still claimed by a killed sender, sent after their lease at the end
    store_errors: int = 0  # daemon log lines naming a state-store failure (the read-only windows)
    store_errors_after: int = 0  # of those, logged over a second after the store was writable again
    unsettled: int = 0  # outbox rows neither sent nor dead at the end
    dead: int = 0
    final_exit: int | None = None
    judged_to: str = ""
    seconds: float = 0.0

    def table(self) -> str:
        faults = ", ".join(f"{kind} {n}" for kind, n in sorted(self.faults.items())) or "none"
        rows = [
            ("kills (SIGKILL)", str(self.kills)),
            ("daemons that ended on their own", str(len(self.exited))),
            ("Slack faults", f"{sum(self.faults.values())} ({faults})"),
            ("read-only store windows", str(self.read_only)),
            ("messages expected (outbox keys)", str(self.expected)),
            ("messages received (keys in Slack)", str(self.received)),
            ("lost", str(len(self.lost))),
            ("duplicated", str(len(self.duplicated))),
            ("anomalous days judged / alerted", f"{self.anomalies} / {self.anomalies_alerted}"),
            ("spike days judged / flagged anomalous", f"{self.spikes} / {self.spikes_flagged}"),
            ("sent after the lease at the end", str(self.settled_late)),
            ("store errors logged / after writable again", f"{self.store_errors} / {self.store_errors_after}"),
            ("outbox rows unsettled / dead", f"{self.unsettled} / {self.dead}"),
            ("judged up to", self.judged_to),
            ("last daemon's exit code (SIGTERM)", str(self.final_exit)),
            ("wall time", f"{self.seconds:.0f} s"),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def spike_days(name: str, start: pd.Timestamp, end: pd.Timestamp, seed: int) -> list[pd.Timestamp]:
    """The KPI's drop days between start and end: one every 9 to 14 days (seeded; more often and
    the detector's calibrated band, learning from the residuals, widens past them)."""
    rng = random.Random(f"{seed}:{name}")
    days, day = [], start + pd.Timedelta(days=rng.randint(2, 4))
    while day <= end:
        days.append(day)
        day += pd.Timedelta(days=rng.randint(9, 14))
    return days


def write_data(path: Path, seed: int) -> dict[str, list[pd.Timestamp]]:
    """Two years of history before SIM_START and two after; returns each KPI's spike days."""
    days = pd.date_range(SIM_START.normalize() - pd.Timedelta(days=730), SIM_START.normalize() + pd.Timedelta(days=730),
                         freq="D")
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"day": days.strftime("%Y-%m-%d")})
    spikes = {}
    for name in KPIS:
        base = 1000 + 150 * (days.day_of_week < 5) + rng.normal(0, 15, len(days))
        spikes[name] = spike_days(name, SIM_START.normalize() + pd.Timedelta(days=1), days[-1], seed)
        base[days.isin(spikes[name])] *= 0.3
        frame[name] = base.round()
    frame.to_csv(path, index=False)
    return spikes


def storm(count: int) -> list[OutboxItem]:
    """`count` one-KPI alerts, as a check of many KPIs queues them while Slack is down."""
    return [OutboxItem(f"storm|{CHANNEL}|kpi{i:04d}", "message", CHANNEL, f":red_circle: storm kpi{i:04d} fell 70%",
                       {"blocks": []}) for i in range(count)]


class Daemon:
    """One `kpiwatch run` in its own process group (with its fork server and workers)."""

    def __init__(self, config: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("a") as handle:
            self.process = subprocess.Popen([sys.executable, "-m", "forecaster.cli", "run", "--config", str(config)],
                                            env=env, stdout=handle, stderr=handle, cwd=config.parent,
                                            start_new_session=True)
        self.note("spawned")

    def note(self, event: str, **fields: object) -> None:
        """A harness line in the daemon log, so a finding can be placed among the daemon's lines."""
        line = {"time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f%z"), "message": "harness",
                "event": event, "pid": self.process.pid, **fields}
        with self.log.open("a") as handle:
            handle.write(json.dumps(line) + "\n")

    def kill(self) -> int | None:
        """SIGKILL the whole group; None when it was still running (else its own exit code)."""
        code = self.process.poll()
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(60)
        self.note("killed" if code is None else "had exited", code=code)
        return code

    def stop(self, timeout: float) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            code = -9
        self.note("stopped (SIGTERM)", code=code)
        return code


class ReadOnly:
    """The SQLite store made read-only (the file, its WAL and shared memory) for `seconds`, then
    writable again. As root a chmod changes nothing, so there the files are made immutable
    (`chattr +i`: writes fail even through handles already open); else chmod 0444."""

    def __init__(self, state: Path, seconds: float, note: Callable[[str], None] = lambda event: None) -> None:
        self.note = note
        self.files = [p for p in (state, Path(f"{state}-wal"), Path(f"{state}-shm")) if p.exists()]
        self.immutable = os.geteuid() == 0 and _chattr("+i", self.files)
        if not self.immutable:
            for path in self.files:
                path.chmod(0o444)
        self.timer = threading.Timer(seconds, self.restore)
        self.timer.start()

    def restore(self) -> None:
        if self.immutable:
            _chattr("-i", self.files)
        else:
            for path in self.files:
                path.chmod(0o644)
        self.note("store writable")


def _chattr(flag: str, files: list[Path]) -> bool:
    """chattr FLAG on files; False when the tool or the file system does not allow it."""
    try:
        return subprocess.run(["chattr", flag, *map(str, files)], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


def ledger(state: Path) -> dict[str, datetime]:
    """The last judged period of each KPI."""
    store = Store(f"sqlite:///{state}")
    try:
        return {name: day for name in KPIS if (day := store.last_judged(name)) is not None}
    finally:
        store.close()


def events(log: Path, message: str) -> list[dict]:
    """The daemon's JSON log lines with this message (and the harness's own)."""
    lines = [line for line in log.read_text().splitlines() if line.startswith("{")] if log.exists() else []
    return [event for event in map(json.loads, lines) if event.get("message") == message]


def first_judged(log: Path) -> dict[str, pd.Timestamp]:
    """Each KPI's first period judged live (a fresh store's first job also walks the history
    before it, storing evaluations without alerting: those days are not expected in Slack)."""
    first: dict[str, pd.Timestamp] = {}
    for job in events(log, "job"):
        if job.get("status") == "ok" and job.get("periods", "none due") != "none due":
            day = min(pd.Timestamp(p, tz="UTC") for p in job["periods"].split(","))
            first[job["kpi"]] = min(first.get(job["kpi"], day), day)
    return first


def settle(state: Path, slack: FakeSlack) -> int:
    """Send what the daemons left: rows claimed by a killed sender wait for their lease (120 s);
    this is `kpiwatch outbox retry` after it, with the clock moved past the lease instead."""
    store = Store(f"sqlite:///{state}")
    try:
        bot = SlackBot("xoxb-test", base_url=slack.url)
        later = datetime.now(timezone.utc) + timedelta(seconds=DeliveryPolicy.lease + 5)
        report = deliver(store, bot, bot.check([CHANNEL]), DeliveryPolicy(max_wait=30), clock=lambda: later,
                         sleep=lambda s: None)
        return report.sent
    finally:
        store.close()


def compare(state: Path, log: Path, slack: FakeSlack, spikes: dict[str, list[pd.Timestamp]],
            figures: Figures) -> None:
    """Slack against the outbox and against the spike days judged."""
    store = Store(f"sqlite:///{state}")
    try:
        rows = store.rows(states=["pending", "sending", "sent", "dead"], limit=1_000_000)
        counts = store.counts()
    finally:
        store.close()
    expected = {r.key for r in rows if r.kind in ("message", "resolve")}
    messages = slack.messages("C0ALERTS")
    keys = Counter(m["metadata"]["event_payload"]["key"] for m in messages
                   if (m.get("metadata") or {}).get("event_type") == METADATA_EVENT)
    figures.expected, figures.received = len(expected), sum(keys.values())
    figures.lost = sorted(expected - set(keys)) + sorted(set(keys) - expected)  # the latter: never queued
    figures.duplicated = sorted(k for k, n in keys.items() if n > 1)
    figures.unsettled, figures.dead = counts["pending"] + counts["sending"], counts["dead"]
    lines = [line for m in messages if not m.get("thread_ts") for line in m["text"].splitlines()]
    last, first = ledger(state), first_judged(log)
    figures.judged_to = ", ".join(f"{k} {v:%Y-%m-%d}" for k, v in sorted(last.items()))
    store = Store(f"sqlite:///{state}")
    try:
        judged = {name: [r for r in store.evaluations_of(name) if name in first
                         and first[name] <= pd.Timestamp(r.period) <= pd.Timestamp(last[name])] for name in KPIS}
    finally:
        store.close()
    for name, records in judged.items():
        flagged = {pd.Timestamp(r.period) for r in records if r.anomalous}
        live = {pd.Timestamp(r.period) for r in records}
        planted = set(spikes[name])
        figures.spikes += len(live & planted)
        figures.spikes_flagged += len(flagged & planted)
        for record in records:
            if not (record.anomalous and record.actual < record.lower):  # leads: only a fall is bad news
                continue
            figures.anomalies += 1
            if any(f"{name} fell" in line and f"{record.period:%a %d %b %Y}" in line for line in lines):
                figures.anomalies_alerted += 1
            else:
                figures.lost.append(f"alert of {name} on {record.period:%Y-%m-%d}")


def store_errors(log: Path) -> tuple[int, int]:
    """(state-store errors the daemons logged, those logged over a second after the store was
    writable again and before that daemon's kill: a handle that did not recover)."""
    total = after = 0
    writable: datetime | None = None
    for line in log.read_text().splitlines():
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        if event.get("message") == "harness":
            writable = pd.Timestamp(event["time"]).to_pydatetime() if event["event"] == "store writable" else None
            continue
        if "state store" in str(event.get("error", "")):
            total += 1
            after += writable is not None and pd.Timestamp(event["time"]).to_pydatetime() > writable + timedelta(seconds=1)
    return total, after


def run(kills: int, seed: int = 1, backlog: int = 250, life: tuple[float, float] = (2.0, 12.0),
        fault_rate: float = 0.2, read_only_every: int = 7, outage_lives: int = 2, final_timeout: float = 240.0,
        final_rounds: float = 2.2,
        workdir: Path | None = None, say: Callable[[str], None] = print) -> Figures:
    """One fault-injection run; see the module docstring. Returns its figures.

    life: seconds each daemon runs before its SIGKILL (uniform). outage_lives: the first lives
    during which Slack answers 503 to everything. final_rounds: delivery rounds (of 5 s) the last
    daemon runs once every closed day is judged. final_timeout: seconds it may take in all.
    """
    started = time.monotonic()
    figures = Figures()
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="kpiwatch-faults-") as scratch:
        folder = workdir or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        state, config, log = folder / "state.db", folder / "kpiwatch.yaml", folder / "daemon.log"
        spikes = write_data(folder / "leads.csv", seed)
        config.write_text(CONFIG.format(state=state, path=folder / "leads.csv", channel=CHANNEL,
                                        kpis="".join(KPI.format(name=name) for name in KPIS)))
        store = Store(f"sqlite:///{state}")
        # queued at the simulated start: the daemons' clock begins there, not at the wall clock's now
        store.queue(storm(backlog), SIM_START.to_pydatetime())
        store.close()
        with FakeSlack() as slack:
            env = {**os.environ, "SLACK_API_URL": slack.url, "SLACK_BOT_TOKEN": "xoxb-test", "PYTHONUNBUFFERED": "1",
                   "KPIWATCH_CLOCK": f"{SIM_START.isoformat()}*{SPEED}@{time.time()}",
                   "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
            env.pop("SLACK_WEBHOOK_URL", None)
            slack.outage(outage_lives > 0)
            for number in range(1, kills + 1):
                if number == outage_lives + 1:
                    slack.outage(False)
                    # Issue 17 #11a: Slack back, the first post is accepted and its connection
                    # dropped, and the look-up for it is rate-limited for 15 s: the rest of the
                    # storm goes out before the look-up.
                    slack.fail_next("chat.postMessage", drop=True)
                    slack.fail_next("conversations.history", status=429, retry_after=15)
                    slack.chaos(fault_rate, seed)
                daemon = Daemon(config, env, log)
                lifetime = rng.uniform(*life)
                guard = None
                if read_only_every and number % read_only_every == 0:  # from start-up or mid-life on
                    pause = rng.uniform(0.0, lifetime / 2)
                    time.sleep(pause)
                    guard = ReadOnly(state, rng.uniform(2.0, 5.0), daemon.note)
                    daemon.note("store read-only", files=len(guard.files), seconds=round(guard.timer.interval, 1))
                    figures.read_only += 1
                    lifetime -= pause
                time.sleep(lifetime)
                code = daemon.kill()
                if guard is not None:
                    guard.timer.join()
                if code is not None:
                    figures.exited.append(f"life {number}: exit {code}")
                figures.kills += code is None
                if number % 10 == 0:
                    say(f"{number} lives, {sum(slack.faults.values())} faults, "
                        f"{len(slack.messages('C0ALERTS'))} messages in Slack")
            slack.outage(False)
            if kills <= outage_lives:
                slack.chaos(fault_rate, seed)
            # The last daemon (Slack still faulty): it runs until every closed day is judged, then
            # two delivery rounds more, and stops on SIGTERM.
            final = Daemon(config, env, log)
            deadline = time.monotonic() + final_timeout
            starts = len(events(log, "started"))
            reached: float | None = None
            while time.monotonic() < deadline and final.process.poll() is None:
                time.sleep(1.0)
                if len(events(log, "started")) <= starts:
                    continue  # still starting (or waiting for the store lock)
                judged = ledger(state)
                goal = _closed_day(env["KPIWATCH_CLOCK"]).to_pydatetime()
                if reached is None and len(judged) == len(KPIS) and min(judged.values()) >= goal:
                    reached = time.monotonic()
                if reached is not None and time.monotonic() - reached > final_rounds * DELIVERY_SECONDS:
                    break
            slack.chaos(0.0)  # Slack well again: the stop's last delivery need not wait out retries
            figures.faults = Counter(slack.faults)
            figures.final_exit = final.stop(60) if final.process.poll() is None else final.process.returncode
            figures.settled_late = settle(state, slack)
            figures.store_errors, figures.store_errors_after = store_errors(log)
            compare(state, log, slack, spikes, figures)
            (folder / "slack.json").write_text(json.dumps(slack.messages("C0ALERTS"), default=str))
    figures.seconds = time.monotonic() - started
    return figures


def _closed_day(clock: str) -> pd.Timestamp:
    """The last closed day by the simulated clock now (the goal of the last daemon)."""
    start, _, rest = clock.partition("*")
    speed, _, anchor = rest.partition("@")
    now = pd.Timestamp(start) + pd.Timedelta(seconds=(time.time() - float(anchor)) * float(speed))
    return now.normalize() - pd.Timedelta(days=2)  # a day's data delay and a margin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50, help="daemons SIGKILLed (default 50)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--backlog", type=int, default=250, help="messages queued before the first start (default 250)")
    parser.add_argument("--life", type=float, nargs=2, default=(2.0, 12.0), metavar=("MIN", "MAX"),
                        help="seconds a daemon runs before its kill (default 2 12)")
    parser.add_argument("--fault-rate", type=float, default=0.2, help="share of Slack calls that fail (default 0.2)")
    parser.add_argument("--read-only-every", type=int, default=7, help="every n-th daemon starts on a read-only store")
    parser.add_argument("--keep", type=Path, help="keep the store, log and Slack's messages in this folder")
    args = parser.parse_args()
    figures = run(args.kills, args.seed, args.backlog, tuple(args.life), args.fault_rate, args.read_only_every,
                  workdir=args.keep, say=lambda line: print(line, file=sys.stderr, flush=True))
    print(figures.table())
    for line in figures.exited:
        print(f"ended on its own: {line}")
    for key in figures.lost[:20]:
        print(f"lost: {key}")
    for key in figures.duplicated[:20]:
        print(f"duplicated: {key}")
    sys.exit(1 if figures.lost or figures.duplicated else 0)


if __name__ == "__main__":
    main()
