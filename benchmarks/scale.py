"""Scale (issue 18): one `kpiwatch run --once` cycle over N daily series, cold and warm, against
Prophet in a process pool, statsforecast's AutoETS and a numpy seasonal-naive band on the same
series, measured in the same run.

    .venv/bin/python benchmarks/scale.py --series 10000 --json scale-10k.json
    .venv/bin/python benchmarks/scale.py --series 1000 --keep /tmp/scale-1k        # keep data, stores, logs
    .venv/bin/python benchmarks/scale.py --series 100000 --executor both --skip-peers
    .venv/bin/python benchmarks/scale.py --series 200 --source parquet --cycles 1 --peer-sample 20

Data (generated, seeded, its own): a table `kpi_daily(day, campaign, sessions, conversions)` of
731 days (2024-03-01 .. 2026-03-01) in a SQLite database (`--source sql`: table mode, indexes on
the day) or a Parquet file (`--source parquet`). Two KPIs, `sessions` and `conversion_rate`
(conversions / sessions), each segmented by `campaign`; with its total a KPI has campaigns + 1
series, so N series judged in all = 2 x (campaigns + 1). Shape: levels log-uniform 20..20,000
sessions a day, a weekly season of its own amplitude and phase, a mild yearly one, a slow trend,
day-to-day noise (lognormal x Poisson), conversion rates 1-5%; some campaigns start late
(3%) or have a gap of 1-14 days in their history (1%); incidents on 0.5% of the campaigns (at
least 3), over 1-5 days in the last days, where the cycles judge them: drops or spikes of 30-60%
of sessions or of the conversion rate, and one in five an outage (sessions down 85-95%, broken
tracking: so that some alerts are planned at any N; the bands are wide for a 30% drop of a small
campaign). `incidents.json` in the run folder lists them.

kpiwatch as a new user runs it: `kpiwatch run --once --config kpiwatch.yaml` subprocesses on a
simulated clock (`KPIWATCH_CLOCK`, forecaster/schedule.py), `daemon: {catch_up_periods: 1}`:
- cold start: an empty store, the clock on the morning after day 731 - 1 - cycles: every series
  is walked over its whole history (the warm-up) and its latest day judged;
- `--cycles` warm cycles, a day later each: every series steps one day on from its stored state.
Per cycle: wall seconds of the process; the job's own seconds (the daemon's JSON log line
`job`, one per KPI, whose `seconds` run from the job's start: the largest is the job); CPU
seconds and peak memory of the process tree (the daemon, its fork server and worker processes, a
Dask cluster's processes: /proc sampled every 0.1 s with psutil): RSS summed (counts the pages
forked workers share once per process, so it overstates), PSS summed (shared pages split between
their processes: the memory the tree really holds; sampled every 0.5 s) and the largest single
process; CPU is each process's own user + system time as last seen (up to 0.1 s per process is
missed at its end). Processes of the daemon's group alive 10 s after it exited are reported and
killed;
the series judged (distinct series with an evaluation of the day in the store: a run that judged
nothing cannot pass as fast), the anomalous ones, the alerts (the log lines' `anomalies`), the
incidents opened and the Slack messages queued. Alerts are planned as with Slack configured:
`--slack webhook` (default) points SLACK_WEBHOOK_URL at a local sink that answers "ok" (with
Slack off the daemon stores evaluations only and plans no alert); `--slack bot` uses
tests/fakeslack.py with charts on; `--slack off`.

`--executor local|dask|both` writes `executor: {type: dask}` into the config for dask (a Dask
LocalCluster when no `--dask-address`); with both, the same cycles run on two stores and the
series per second of each cycle are compared.

Peers, on the same generated series, in the same run (`--skip-peers` leaves them out):
- Prophet (yearly and weekly seasonality, `interval_width=0.99`, loggers silenced) fitted on each
  series' full history plus a one-day prediction, in a 2-process pool, on a random sample of
  `--peer-sample` series, extrapolated to N (Prophet has no update: the new day costs a refit of
  every series, so its "cold start" and its "new day" are the same fit);
- statsforecast AutoETS(season_length=7), batch (`StatsForecast(n_jobs=2)`), one-step forecast
  with level=[99], on `--sf-sample` series (default 1,000 or all), extrapolated to N; its numba
  compilation is done before the timing (cached on disk);
- a numpy seasonal-naive band (same weekday last week, 99% band from the MAD of 8 weeks of
  weekly differences) over all N series at once, the floor: with and without reading the table.
Ratios: kpiwatch's warm cycle (job seconds) against Prophet's time for the new day of N series,
the cold start against one Prophet fit of each series, and likewise against AutoETS.

Printed: a table (rich); `--json OUT` writes every figure with the machine, the date and the
commit. Run it on an idle machine: the timings of a shared one vary by 2x.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIRST_DAY = date(2024, 3, 1)
DAYS = 731  # 2024-03-01 .. 2026-03-01: the judged days are clear of the year-end retail peak (wider bands)
KPIS = ("sessions", "conversion_rate")
TABLE = "kpi_daily"
MORNING = "06:00:00Z"  # the clock's time of day: the day before is the latest closed one (UTC)
CHUNK = 2000  # campaigns generated and written at a time (memory stays bounded at 100,000 series)
Z99 = 2.5758293035489  # two-sided 99%
INCIDENT_SHARE = 0.005  # of the campaigns, at least 3

CONFIG = """\
# Generated by benchmarks/scale.py ({series} series: {campaigns} campaigns + the total, x 2 KPIs)
timezone: UTC
state: sqlite:///{state}
sources:
  warehouse: {source}
alerting:
  routes: [{{channel: "#kpi-alerts"}}]
  charts: {charts}
daemon: {{health_port: 0, log_format: json, catch_up_periods: 1, job_timeout_seconds: 604800}}
{executor}kpis:
  sessions:
    metric: sessions
    source: warehouse
    segments: [campaign]
    min_volume: 50
  conversion_rate:
    ratio: {{numerator: conversions, denominator: sessions}}
    source: warehouse
    segments: [campaign]
    unit: "%"
    min_volume: 200
    min_abs_change: 0.002
"""


# -- the data ------------------------------------------------------------------------------------


@dataclass
class Data:
    """The generated series: campaigns x days of sessions and conversions, and which rows exist."""

    sessions: np.ndarray  # int32 (campaigns, days)
    conversions: np.ndarray  # int32
    present: np.ndarray  # bool: a row in the table
    incidents: list[dict[str, Any]]

    @property
    def campaigns(self) -> int:
        return self.sessions.shape[0]

    @property
    def series(self) -> int:
        return 2 * (self.campaigns + 1)

    def values(self, index: int) -> np.ndarray:
        """Series `index` (0 .. series-1: sessions' total, its campaigns, then conversion_rate's)
        as floats over the days, NaN where it has no value."""
        kpi, rest = divmod(index, self.campaigns + 1)
        if rest == 0:
            sessions = self.sessions.sum(axis=0, dtype=np.float64)
            conversions = self.conversions.sum(axis=0, dtype=np.float64)
            seen = self.present.any(axis=0)
        else:
            sessions = self.sessions[rest - 1].astype(np.float64)
            conversions = self.conversions[rest - 1].astype(np.float64)
            seen = self.present[rest - 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            out = sessions if kpi == 0 else conversions / sessions
        return np.where(seen & np.isfinite(out), out, np.nan)

    def matrix(self) -> np.ndarray:
        """Every series at once (series, days), NaN where no value."""
        sessions = np.where(self.present, self.sessions, 0).astype(np.float64)
        conversions = np.where(self.present, self.conversions, 0).astype(np.float64)
        sessions = np.vstack([sessions.sum(axis=0), sessions])
        conversions = np.vstack([conversions.sum(axis=0), conversions])
        seen = np.vstack([self.present.any(axis=0), self.present])
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = conversions / sessions
        return np.vstack([np.where(seen, sessions, np.nan), np.where(seen & np.isfinite(rate), rate, np.nan)])


def campaigns_for(series: int) -> int:
    """Campaigns for about `series` series judged in all (2 KPIs x (campaigns + the total))."""
    return max(1, series // 2 - 1)


def generate(campaigns: int, seed: int, cycles: int, days: int = DAYS) -> Data:
    """The seeded series (see the module docstring)."""
    rng = np.random.default_rng(seed)
    t = np.arange(days, dtype=np.float64)
    sessions = np.empty((campaigns, days), dtype=np.int32)
    conversions = np.empty((campaigns, days), dtype=np.int32)
    present = np.ones((campaigns, days), dtype=bool)
    for lo in range(0, campaigns, CHUNK):
        m = min(CHUNK, campaigns - lo)
        level = np.exp(rng.uniform(np.log(20), np.log(20_000), m))[:, None]
        weekly = 1 + rng.uniform(0.05, 0.5, m)[:, None] * np.sin(2 * np.pi * t / 7 + rng.uniform(0, 2 * np.pi, m)[:, None])
        yearly = 1 + rng.uniform(0, 0.2, m)[:, None] * np.sin(2 * np.pi * t / 365.25 + rng.uniform(0, 2 * np.pi, m)[:, None])
        trend = np.exp(rng.normal(0, 0.15, m)[:, None] * t / 365.25)
        noise = np.exp(rng.normal(0, 1, (m, days)) * rng.uniform(0.03, 0.1, m)[:, None])
        mean = level * weekly * yearly * trend * noise
        sessions[lo:lo + m] = rng.poisson(mean)
        rate = rng.uniform(0.01, 0.05, m)[:, None] * (
            1 + 0.1 * np.sin(2 * np.pi * t / 7 + rng.uniform(0, 2 * np.pi, m)[:, None]))
        conversions[lo:lo + m] = rng.binomial(sessions[lo:lo + m], np.clip(rate, 0, 1))
    # Late starts and gaps, in the history only (every series has its judged days).
    late = rng.random(campaigns) < 0.03
    for c in np.flatnonzero(late):
        present[c, :rng.integers(1, 500)] = False
    gappy = rng.random(campaigns) < 0.01
    for c in np.flatnonzero(gappy):
        start = int(rng.integers(30, days - 60))
        present[c, start:start + int(rng.integers(1, 15))] = False
    # Incidents in the last days: the cold day, the warm days and the few before them.
    incidents = []
    first_judged = days - 1 - cycles
    hit = rng.choice(campaigns, size=min(campaigns, max(3, round(INCIDENT_SHARE * campaigns))), replace=False)
    for c in sorted(int(c) for c in hit):
        start = int(rng.integers(max(0, first_judged - 2), days))
        length = max(int(rng.integers(1, 6)), first_judged + 1 - start)  # it reaches the judged days
        end = min(days, start + length)
        draw = rng.random()
        kind = "outage" if draw < 0.2 else "drop" if draw < 0.6 else "spike"
        size = float(rng.uniform(0.85, 0.95) if kind == "outage" else rng.uniform(0.3, 0.6))
        factor = 1 - size if kind != "spike" else 1 + size
        what = "sessions" if kind == "outage" or rng.random() < 0.7 else "conversion_rate"
        span = slice(start, end)
        if what == "sessions":  # fewer (or more) sessions at the usual conversion rate
            rate = conversions[c, span] / np.maximum(sessions[c, span], 1)
            sessions[c, span] = (rng.binomial(sessions[c, span], factor) if kind == "drop"
                                 else sessions[c, span] + rng.poisson(sessions[c, span] * size))
            conversions[c, span] = rng.binomial(sessions[c, span], np.clip(rate, 0, 1))
        else:  # the same sessions, fewer (or more) of them converting
            conversions[c, span] = np.minimum(rng.poisson(conversions[c, span] * factor), sessions[c, span])
        incidents.append({"campaign": campaign_name(c), "kpi": what, "kind": kind, "size": round(size, 3),
                          "first_day": str(FIRST_DAY + timedelta(days=start)),
                          "last_day": str(FIRST_DAY + timedelta(days=end - 1))})
    return Data(sessions, conversions, present, incidents)


def campaign_name(index: int) -> str:
    return f"campaign_{index:06d}"


def write_sql(data: Data, path: Path) -> None:
    """The table in a SQLite file, campaign by campaign chunk, with indexes on the day (the
    source compares `date(day)` on SQLite, hence the index on that expression too)."""
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute(f"CREATE TABLE {TABLE} (day DATE NOT NULL, campaign TEXT NOT NULL, sessions INTEGER NOT NULL, "
                 "conversions INTEGER NOT NULL)")
    days = np.array([str(FIRST_DAY + timedelta(days=i)) for i in range(data.sessions.shape[1])], dtype=object)
    for lo in range(0, data.campaigns, CHUNK):
        part = slice(lo, min(lo + CHUNK, data.campaigns))
        rows, cols = np.nonzero(data.present[part])
        names = np.array([campaign_name(lo + r) for r in range(part.stop - lo)], dtype=object)
        conn.executemany(f"INSERT INTO {TABLE} VALUES (?, ?, ?, ?)",
                         zip(days[cols], names[rows], data.sessions[part][rows, cols].tolist(),
                             data.conversions[part][rows, cols].tolist()))
    conn.execute(f"CREATE INDEX {TABLE}_day ON {TABLE} (day)")
    conn.execute(f"CREATE INDEX {TABLE}_date ON {TABLE} (date(day))")
    conn.commit()
    conn.close()


def write_parquet(data: Data, path: Path) -> None:
    """The same table as one Parquet file (a date column)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("day", pa.date32()), ("campaign", pa.string()), ("sessions", pa.int64()),
                        ("conversions", pa.int64())])
    first = np.datetime64(FIRST_DAY.isoformat(), "D")
    with pq.ParquetWriter(path, schema) as writer:
        for lo in range(0, data.campaigns, CHUNK):
            part = slice(lo, min(lo + CHUNK, data.campaigns))
            rows, cols = np.nonzero(data.present[part])
            names = np.array([campaign_name(lo + r) for r in range(part.stop - lo)], dtype=object)
            writer.write_table(pa.table({
                "day": pa.array(first + cols.astype("timedelta64[D]"), pa.date32()),
                "campaign": pa.array(names[rows], pa.string()),
                "sessions": data.sessions[part][rows, cols].astype(np.int64),
                "conversions": data.conversions[part][rows, cols].astype(np.int64)}, schema=schema))


def prepare(folder: Path, series: int, seed: int, cycles: int, source: str) -> tuple[Data, float, bool]:
    """The data in `folder` (generated, or reused when a kept folder holds the same): (data,
    seconds to generate and write, reused)."""
    campaigns = campaigns_for(series)
    meta = {"campaigns": campaigns, "seed": seed, "cycles": cycles, "days": DAYS, "version": 3}
    stamp, arrays = folder / "generated.json", folder / "series.npz"
    target = folder / ("data.db" if source == "sql" else "data.parquet")
    if stamp.exists() and arrays.exists() and json.loads(stamp.read_text()) == meta:
        saved = np.load(arrays)
        data = Data(saved["sessions"], saved["conversions"], saved["present"],
                    json.loads((folder / "incidents.json").read_text()))
        if target.exists():
            return data, 0.0, True
        began = time.perf_counter()
    else:
        began = time.perf_counter()
        data = generate(campaigns, seed, cycles)
        np.savez(arrays, sessions=data.sessions, conversions=data.conversions, present=data.present)
        (folder / "incidents.json").write_text(json.dumps(data.incidents, indent=1))
        stamp.write_text(json.dumps(meta))
    (write_sql if source == "sql" else write_parquet)(data, target)
    return data, time.perf_counter() - began, False


def write_config(folder: Path, data: Data, source: str, executor: str, state: Path, charts: bool,
                 dask_address: str | None, workers: int | None) -> Path:
    if source == "sql":
        spec = f'{{type: sql, url: "sqlite:///{folder / "data.db"}", table: {TABLE}, timestamp: day}}'
    else:
        spec = f'{{type: parquet, path: "{folder / "data.parquet"}", timestamp: day}}'
    block = ""
    if executor == "dask":
        keys = ["type: dask"]
        if dask_address:
            keys.append(f'address: "{dask_address}"')
        elif workers:
            keys.append(f"workers: {workers}")
        block = f"executor: {{{', '.join(keys)}}}\n"
    elif workers:
        block = f"executor: {{type: local, workers: {workers}}}\n"
    path = folder / f"kpiwatch-{executor}.yaml"
    path.write_text(CONFIG.format(series=data.series, campaigns=data.campaigns, state=state, source=spec,
                                  charts="true" if charts else "false", executor=block))
    return path


# -- Slack stand-ins -----------------------------------------------------------------------------


class _Sink(BaseHTTPRequestHandler):
    posts = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).posts += 1
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@contextmanager
def slack(kind: str) -> Iterator[tuple[dict[str, str], Any]]:
    """(environment for the daemon, a callable giving the posts so far)."""
    if kind == "off":
        yield {}, lambda: 0
        return
    if kind == "bot":
        sys.path.insert(0, str(ROOT / "tests"))
        from fakeslack import FakeSlack

        with FakeSlack() as fake:
            yield ({"SLACK_BOT_TOKEN": "xoxb-test", "SLACK_API_URL": fake.url},
                   lambda: sum(1 for method, _ in fake.calls if method == "chat.postMessage"))
        return
    handler = type("Sink", (_Sink,), {"posts": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"SLACK_WEBHOOK_URL": f"http://127.0.0.1:{server.server_port}/services/T0/B0/scale"}, lambda: handler.posts
    finally:
        server.shutdown()
        server.server_close()


# -- one kpiwatch cycle ------------------------------------------------------------------------


@dataclass
class Cycle:
    """One `kpiwatch run --once` and what it did."""

    name: str
    clock: str
    day: str
    exit_code: int | None = None
    wall_s: float = 0.0
    job_s: float | None = None  # the largest `seconds` of the job lines
    cpu_s: float = 0.0  # process tree, user + system
    peak_rss_mib: float = 0.0  # process tree, summed
    peak_process_mib: float = 0.0  # the largest single process
    peak_pss_mib: float = 0.0  # process tree, proportional set size summed (shared pages split), every 0.5 s
    lingering: int = 0  # processes of the daemon's group still alive 10 s after it exited (then killed)
    processes: int = 0  # distinct processes seen in the tree
    series_judged: int = 0  # distinct series with an evaluation of `day` in the store
    judged_by_kpi: dict[str, int] = field(default_factory=dict)
    anomalous: int = 0  # of those, judged anomalous
    alerts: int = 0  # the job lines' `anomalies`
    incidents_opened: int = 0
    queued: int = 0  # outbox rows added
    slack_posts: int = 0
    jobs: list[dict[str, Any]] = field(default_factory=list)  # the job lines as logged
    error: str = ""

    @property
    def seconds(self) -> float:
        """The job's time, else the process's."""
        return self.job_s if self.job_s is not None else self.wall_s

    @property
    def series_per_s(self) -> float:
        return self.series_judged / self.seconds if self.seconds else 0.0


def _tree(pid: int) -> list[Any]:
    import psutil

    try:
        top = psutil.Process(pid)
        return [top, *top.children(recursive=True)]
    except psutil.Error:
        return []


def _reap_group(pgid: int, wait: float = 10.0) -> int:
    """The processes of the daemon's own group (its session, started here) still alive after it
    exited: waited for up to `wait` s, then killed; how many there were."""
    import psutil

    def alive() -> list[Any]:
        found = []
        for proc in psutil.process_iter(["pid"]):
            try:
                if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except (OSError, psutil.Error):
                continue
        return found

    deadline = time.monotonic() + wait
    while (left := alive()) and time.monotonic() < deadline:
        time.sleep(0.2)
    if left:
        try:
            os.killpg(pgid, 9)
        except ProcessLookupError:
            pass
    return len(left)


def _store_counts(state: Path, day: str) -> dict[str, Any]:
    if not state.exists():
        return {"judged": {}, "anomalous": 0, "incidents": 0, "outbox": 0}
    conn = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        judged, anomalous = {}, 0
        if "evaluations" in tables:
            for kpi, segments, bad in conn.execute(
                    "SELECT kpi, count(DISTINCT segment), count(DISTINCT CASE WHEN anomalous THEN segment END) "
                    "FROM evaluations WHERE substr(period, 1, 10) = ? GROUP BY kpi", (day,)):
                judged[kpi] = segments
                anomalous += bad
        count = (lambda table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                 if table in tables else 0)
        return {"judged": judged, "anomalous": anomalous, "incidents": count("incidents"), "outbox": count("outbox")}
    finally:
        conn.close()


def run_cycle(name: str, config: Path, state: Path, day_index: int, env: dict[str, str], posts: Any,
              log: Path, timeout: float | None) -> Cycle:
    """`kpiwatch run --once` with the clock on the morning after day `day_index`, measured."""
    import psutil

    day = FIRST_DAY + timedelta(days=day_index)
    clock = f"{day + timedelta(days=1)}T{MORNING}"
    cycle = Cycle(name, clock, str(day))
    before = _store_counts(state, str(day))
    posted = posts()
    command = [sys.executable, "-m", "forecaster.cli", "run", "--once", "--config", str(config)]
    began = time.perf_counter()
    cpu: dict[tuple[int, float], float] = {}  # (pid, create time) -> user + system
    with log.open("w") as handle:
        process = subprocess.Popen(command, env={**env, "KPIWATCH_CLOCK": clock}, stdout=handle, stderr=subprocess.STDOUT,
                                   cwd=config.parent, start_new_session=True)
        try:
            samples = 0
            while True:
                rss, biggest, pss = 0, 0, 0
                full = samples % 5 == 0  # PSS reads smaps: every 0.5 s
                samples += 1
                for proc in _tree(process.pid):
                    try:
                        with proc.oneshot():
                            times = proc.cpu_times()
                            memory = proc.memory_info().rss
                            cpu[(proc.pid, proc.create_time())] = times.user + times.system
                        if full:
                            pss += proc.memory_full_info().pss
                    except psutil.Error:
                        continue
                    rss += memory
                    biggest = max(biggest, memory)
                cycle.peak_rss_mib = max(cycle.peak_rss_mib, rss / 2**20)
                cycle.peak_process_mib = max(cycle.peak_process_mib, biggest / 2**20)
                cycle.peak_pss_mib = max(cycle.peak_pss_mib, pss / 2**20)
                if process.poll() is not None:
                    break
                if timeout and time.perf_counter() - began > timeout:
                    os.killpg(process.pid, 9)
                    process.wait()
                    cycle.error = f"stopped after --timeout {timeout:.0f} s"
                    break
                time.sleep(0.1)
        except BaseException:
            os.killpg(process.pid, 9)
            process.wait()
            raise
    cycle.wall_s = time.perf_counter() - began
    cycle.lingering = _reap_group(process.pid)
    cycle.exit_code = process.returncode
    cycle.cpu_s = sum(cpu.values())
    cycle.processes = len(cpu)
    cycle.slack_posts = posts() - posted
    lines = log.read_text(errors="replace").splitlines()
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("message") == "job":
            cycle.jobs.append({k: v for k, v in event.items() if k not in ("time", "logger", "message")})
    if cycle.jobs:
        cycle.job_s = max(float(job.get("seconds", 0)) for job in cycle.jobs)
        cycle.alerts = sum(int(job.get("anomalies", 0)) for job in cycle.jobs)
    bad = [job for job in cycle.jobs if job.get("status") != "ok"]
    if (cycle.exit_code or bad) and not cycle.error:
        shown = bad[0].get("error") if bad else next(
            (line for line in reversed(lines) if line.strip()), f"exit code {cycle.exit_code}")
        cycle.error = str(shown)[:300]
    after = _store_counts(state, str(day))
    cycle.judged_by_kpi = after["judged"]
    cycle.series_judged = sum(after["judged"].values())
    cycle.anomalous = after["anomalous"]
    cycle.incidents_opened = after["incidents"] - before["incidents"]
    cycle.queued = after["outbox"] - before["outbox"]
    return cycle


def run_kpiwatch(folder: Path, data: Data, args: argparse.Namespace, executor: str,
                 say: Any) -> list[Cycle]:
    """Cold start then the warm cycles on a fresh store."""
    state = folder / f"state-{executor}.db"
    for leftover in folder.glob(f"state-{executor}.db*"):
        leftover.unlink()
    config = write_config(folder, data, args.source, executor, state, charts=args.slack == "bot",
                          dask_address=args.dask_address, workers=args.workers)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "KPIWATCH_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(args.tree.resolve()), *filter(None, [os.environ.get("PYTHONPATH")])])
    cycles: list[Cycle] = []
    first = DAYS - 1 - args.cycles
    with slack(args.slack) as (slack_env, posts):
        for k in range(args.cycles + 1):
            name = "cold start" if k == 0 else f"warm cycle {k}"
            say(f"kpiwatch ({executor}): {name}, judging {FIRST_DAY + timedelta(days=first + k)} ...")
            cycle = run_cycle(name, config, state, first + k, {**env, **slack_env}, posts,
                              folder / f"run-{executor}-{k}.log", args.timeout)
            say(f"  {cycle.seconds:.1f} s (wall {cycle.wall_s:.1f} s), {cycle.series_judged} series judged, "
                f"{cycle.alerts} alerts, peak {cycle.peak_rss_mib:.0f} MiB"
                + (f"; FAILED: {cycle.error}" if cycle.error else ""))
            cycles.append(cycle)
            if cycle.exit_code not in (0, None) and not cycle.series_judged:
                break  # a config the code refuses (e.g. an executor it does not know): no use going on
    return cycles


def caught(state: Path, incidents: list[dict[str, Any]], days: list[str]) -> dict[str, int]:
    """Of the injected incidents on the judged days, how many were judged anomalous on one of
    their days (a sanity check that the cycles judged the data, not a detection benchmark)."""
    judged = set(days)
    due = [i for i in incidents if any(i["first_day"] <= d <= i["last_day"] for d in judged)]
    if not due or not state.exists():
        return {"injected_on_judged_days": len(due), "flagged": 0}
    conn = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        flagged = {(kpi, segment, period[:10]) for kpi, segment, period in conn.execute(
            "SELECT kpi, segment, period FROM evaluations WHERE anomalous")}
    finally:
        conn.close()
    hits = sum(1 for i in due if any((i["kpi"], f"campaign={i['campaign']}", d) in flagged
                                     for d in judged if i["first_day"] <= d <= i["last_day"]))
    return {"injected_on_judged_days": len(due), "flagged": hits}


# -- peers ---------------------------------------------------------------------------------------


def _quiet() -> None:
    """Prophet's and cmdstanpy's loggers silenced (cmdstanpy adds its own stderr handler unless
    the logger has one), as forecaster/models/prophet.py does."""
    for name in ("cmdstanpy", "prophet", "prophet.plot"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.CRITICAL + 1)
        logger.propagate = False
        if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
            logger.addHandler(logging.NullHandler())
    warnings.filterwarnings("ignore")


def _prophet_one(values: np.ndarray) -> tuple[float, float]:
    """Fit Prophet on one series' history (days with a value) and predict the next day: (fit
    seconds, predict seconds) in the worker."""
    import pandas as pd
    from prophet import Prophet

    _quiet()
    keep = ~np.isnan(values)
    days = pd.date_range(FIRST_DAY.isoformat(), periods=len(values), freq="D")
    frame = pd.DataFrame({"ds": days[keep], "y": values[keep]})
    began = time.perf_counter()
    model = Prophet(yearly_seasonality=True, weekly_seasonality=True, daily_seasonality=False, interval_width=0.99)
    model.fit(frame)
    fitted = time.perf_counter()
    model.predict(pd.DataFrame({"ds": [days[-1] + pd.Timedelta(days=1)]}))
    return fitted - began, time.perf_counter() - fitted


def _warm_worker() -> None:
    """Import Prophet and its Stan model in the pool's worker before the timing."""
    _quiet()
    import prophet  # noqa: F401


def peer_prophet(data: Data, sample: np.ndarray, processes: int = 2) -> dict[str, Any]:
    import multiprocessing

    series = [data.values(int(i)) for i in sample]
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(processes, mp_context=context, initializer=_warm_worker) as pool:
        list(pool.map(_prophet_one, series[:processes]))  # workers started, Stan loaded: not timed
        began = time.perf_counter()
        timings = list(pool.map(_prophet_one, series))
        wall = time.perf_counter() - began
    per = wall / len(series)
    return {"processes": processes, "sample": len(series), "wall_s": wall, "per_series_s": per,
            "series_per_s": 1 / per, "extrapolated_n_s": per * data.series,
            "fit_s_median": float(np.median([t[0] for t in timings])),
            "predict_s_median": float(np.median([t[1] for t in timings]))}


def peer_statsforecast(data: Data, sample: np.ndarray, processes: int = 2) -> dict[str, Any]:
    import pandas as pd
    from statsforecast import StatsForecast
    from statsforecast.models import AutoETS

    frames = []
    for i in sample:
        values = data.values(int(i))
        start = int(np.argmax(~np.isnan(values)))
        y = pd.Series(values[start:]).interpolate(limit_direction="both").to_numpy()  # no gaps for ETS
        frames.append(pd.DataFrame({"unique_id": int(i), "y": y,
                                    "ds": pd.date_range(FIRST_DAY + timedelta(days=start), periods=len(y), freq="D")}))
    frame = pd.concat(frames, ignore_index=True)
    warm = frame[frame["unique_id"] == int(sample[0])]
    StatsForecast(models=[AutoETS(season_length=7)], freq="D", n_jobs=1).forecast(df=warm, h=1, level=[99])  # numba
    began = time.perf_counter()
    out = StatsForecast(models=[AutoETS(season_length=7)], freq="D", n_jobs=processes).forecast(
        df=frame, h=1, level=[99])
    wall = time.perf_counter() - began
    if len(out) != len(sample):
        raise RuntimeError(f"statsforecast returned {len(out)} forecasts for {len(sample)} series")
    per = wall / len(sample)
    return {"processes": processes, "sample": len(sample), "wall_s": wall, "per_series_s": per,
            "series_per_s": 1 / per, "extrapolated_n_s": per * data.series}


def peer_snaive(data: Data, folder: Path, source: str) -> dict[str, Any]:
    """The floor: same weekday last week, a 99% band from the MAD of 8 weeks of weekly
    differences, every series at once; timed on the arrays, and from reading the table."""
    began = time.perf_counter()
    if source == "sql":
        conn = sqlite3.connect(folder / "data.db")
        cursor = conn.execute(f"SELECT julianday(day) - julianday('{FIRST_DAY}'), CAST(substr(campaign, 10) AS INTEGER), sessions, "
                              f"conversions FROM {TABLE}")
        parts = []
        while chunk := cursor.fetchmany(500_000):
            parts.append(np.array(chunk, dtype=np.float64))
        conn.close()
        rows = np.concatenate(parts) if parts else np.zeros((0, 4))
        day, campaign = rows[:, 0].astype(int), rows[:, 1].astype(int)
        sessions, conversions = rows[:, 2], rows[:, 3]
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(folder / "data.parquet")
        day = (table["day"].to_numpy().astype("datetime64[D]") - np.datetime64(FIRST_DAY.isoformat(), "D")).astype(int)
        campaign = np.char.rpartition(table["campaign"].to_numpy().astype(str), "_")[:, 2].astype(int)
        sessions, conversions = table["sessions"].to_numpy(), table["conversions"].to_numpy()
    shape = (data.campaigns, DAYS)
    present = np.zeros(shape, bool); present[campaign, day] = True
    read = Data(np.zeros(shape, np.int32), np.zeros(shape, np.int32), present, [])
    read.sessions[campaign, day] = sessions
    read.conversions[campaign, day] = conversions
    loaded = time.perf_counter()
    flagged = _snaive_band(read.matrix())
    done = time.perf_counter()
    band = done - loaded
    return {"series": data.series, "band_s": band, "with_read_s": done - began, "per_series_s": band / data.series,
            "series_per_s": data.series / band if band else float("inf"), "flagged": int(flagged)}


def _snaive_band(matrix: np.ndarray) -> int:
    expected = matrix[:, -8]
    diffs = matrix[:, -57:-1] - matrix[:, -64:-8]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        scale = 1.4826 * np.nanmedian(np.abs(diffs), axis=1)
    actual = matrix[:, -1]
    return int(np.sum(np.abs(actual - expected) > Z99 * scale))


# -- the report --------------------------------------------------------------------------------


def machine(tree: Path) -> dict[str, Any]:
    """The machine, the date and the commit of the kpiwatch checkout measured."""
    import psutil

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=tree,
                                    capture_output=True, text=True, check=False).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", False
    return {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "commit": commit + ("+dirty" if dirty else ""),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}


def ratios(cycles: list[Cycle], peers: dict[str, Any]) -> dict[str, Any]:
    """kpiwatch / peer, below 1 = kpiwatch faster: the warm cycle against the peer's new day for
    N series (a refit of each), the cold start against one fit of each series."""
    out: dict[str, Any] = {}
    cold = next((c for c in cycles if c.name == "cold start" and c.series_judged), None)
    warm = [c for c in cycles if c.name != "cold start" and c.series_judged]
    for peer in ("prophet", "statsforecast"):
        figures = peers.get(peer)
        if not figures or "extrapolated_n_s" not in figures:
            continue
        n = figures["extrapolated_n_s"]
        if warm:
            out[f"warm_vs_{peer}_new_day"] = min(c.seconds for c in warm) / n
        if cold:
            out[f"cold_vs_{peer}_one_fit_each"] = cold.seconds / n
    return out


def print_report(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(shutil.get_terminal_size((180, 24)).columns, 150))
    m = result["machine"]
    console.print(f"[bold]kpiwatch scale[/bold]: {result['series']:,} series ({result['campaigns']:,} campaigns + "
                  f"total, x {len(KPIS)} KPIs), {DAYS} days, source {result['source']}, Slack {result['slack']}; "
                  f"{m['date']}, commit {m['commit']}, {m['cores']} cores, load {m['load_average']}")
    console.print(f"data: {result['generation']}; incidents injected on {len(result['incidents'])} campaigns")
    for executor, cycles in result["kpiwatch"].items():
        table = Table(title=f"kpiwatch run --once, executor {executor}")
        for heading in ("cycle", "judges", "job s", "wall s", "CPU s", "series judged", "series/s", "anomalous",
                        "alerts", "incidents", "queued", "peak RSS MiB", "peak PSS MiB", "largest MiB", "procs", "exit"):
            table.add_column(heading, justify="left" if heading in ("cycle", "judges") else "right")
        for c in cycles:
            table.add_row(c["name"], c["day"], _f(c["job_s"]), _f(c["wall_s"]), _f(c["cpu_s"]),
                          f"{c['series_judged']:,}", _f(c["series_per_s"], 0), str(c["anomalous"]), str(c["alerts"]),
                          str(c["incidents_opened"]), str(c["queued"]), _f(c["peak_rss_mib"], 0),
                          _f(c["peak_pss_mib"], 0), _f(c["peak_process_mib"], 0), str(c["processes"]),
                          str(c["exit_code"]) + (" !" if c["error"] else ""))
        console.print(table)
        hits = result.get("incidents_flagged", {}).get(executor)
        if hits:
            console.print(f"  injected incidents on the judged days: {hits['injected_on_judged_days']}, judged "
                          f"anomalous on one of their days: {hits['flagged']}")
        for c in cycles:
            if c["error"]:
                console.print(f"  [red]{c['name']}[/red]: {c['error']}")
            if c["lingering"]:
                console.print(f"  {c['name']}: {c['lingering']} process(es) of the daemon's group outlived it by 10 s "
                              "(killed)")
    if result.get("executors_compared"):
        for name, figures in result["executors_compared"].items():
            console.print(f"dask / local series per second, {name}: {figures:.2f}x")
    peers = result.get("peers") or {}
    if peers:
        table = Table(title=f"peers on the same series (N = {result['series']:,})")
        for heading in ("peer", "series timed", "seconds", "per series ms", "series/s", "for N s", "note"):
            table.add_column(heading, justify="left" if heading in ("peer", "note") else "right")
        if "prophet" in peers:
            p = peers["prophet"]
            table.add_row("Prophet, 2-process pool, fit + 1-day predict", f"{p['sample']:,}", _f(p["wall_s"]),
                          _f(p["per_series_s"] * 1000), _f(p["series_per_s"]), _f(p["extrapolated_n_s"], 0),
                          f"extrapolated from the sample; fit {p['fit_s_median']:.2f} s, predict "
                          f"{p['predict_s_median']:.2f} s median")
        if "statsforecast" in peers:
            p = peers["statsforecast"]
            extra = "all series" if p["sample"] >= result["series"] else "extrapolated from the sample"
            table.add_row("statsforecast AutoETS(7), n_jobs=2, level 99", f"{p['sample']:,}", _f(p["wall_s"]),
                          _f(p["per_series_s"] * 1000), _f(p["series_per_s"]), _f(p["extrapolated_n_s"], 0), extra)
        if "snaive" in peers:
            p = peers["snaive"]
            table.add_row("numpy seasonal-naive band (floor)", f"{p['series']:,}", _f(p["band_s"], 3),
                          _f(p["per_series_s"] * 1000, 4), _f(p["series_per_s"], 0), _f(p["band_s"], 3),
                          f"{p['with_read_s']:.2f} s with reading the table; {p['flagged']} flagged")
        for name, error in peers.get("errors", {}).items():
            table.add_row(name, "", "", "", "", "", f"failed: {error}")
        console.print(table)
    for executor, figures in result.get("ratios", {}).items():
        shown = ", ".join(f"{k} {v:.3f}" for k, v in figures.items())
        if shown:
            console.print(f"kpiwatch ({executor}) / peer (below 1: kpiwatch faster): {shown}")


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


# -- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="See the module docstring.")
    parser.add_argument("--series", type=int, default=10_000, help="series judged in all (default 10,000)")
    parser.add_argument("--source", choices=("sql", "parquet"), default="sql")
    parser.add_argument("--executor", choices=("local", "dask", "both"), default="local")
    parser.add_argument("--dask-address", help="a Dask scheduler (default: a LocalCluster started by kpiwatch)")
    parser.add_argument("--workers", type=int, help="executor.workers in the config (default: kpiwatch's)")
    parser.add_argument("--cycles", type=int, default=2, help="warm cycles after the cold start (default 2)")
    parser.add_argument("--slack", choices=("webhook", "bot", "off"), default="webhook")
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--peer-sample", type=int, default=100, help="series Prophet fits (default 100)")
    parser.add_argument("--sf-sample", type=int, default=1000, help="series statsforecast fits (default 1,000)")
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--timeout", type=float, help="seconds before a cycle is killed (default none)")
    parser.add_argument("--tree", type=Path, default=ROOT,
                        help="the kpiwatch checkout the daemon runs (PYTHONPATH; default: this one)")
    parser.add_argument("--keep", type=Path, help="run folder to keep (data reused when it matches)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    if args.series < 4 or args.cycles < 0 or args.cycles > 30:
        parser.error("--series must be at least 4 and --cycles 0..30")

    def say(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    holder = None
    if args.keep:
        folder = args.keep.resolve()
        folder.mkdir(parents=True, exist_ok=True)
    else:
        holder = tempfile.TemporaryDirectory(prefix="kpiwatch-scale-")
        folder = Path(holder.name)
    def save(result: dict[str, Any]) -> None:  # after each stage: a long run's figures are not lost
        if args.json:
            args.json.write_text(json.dumps(result, indent=1, default=str))

    try:
        result = run(args, folder, say, save)
    finally:
        if holder is not None:
            holder.cleanup()
    print_report(result)
    save(result)
    return result


def run(args: argparse.Namespace, folder: Path, say: Any, save: Any) -> dict[str, Any]:
    say(f"run folder {folder}")
    data, seconds, reused = prepare(folder, args.series, args.seed, args.cycles, args.source)
    rows = int(data.present.sum())
    generation = (f"reused from {folder}" if reused else
                  f"{rows:,} rows generated and written ({args.source}) in {seconds:.1f} s")
    say(f"data: {generation}")
    result: dict[str, Any] = {
        "series": data.series, "campaigns": data.campaigns, "days": DAYS, "rows": rows, "source": args.source,
        "slack": args.slack, "cycles": args.cycles, "seed": args.seed, "machine": machine(args.tree.resolve()),
        "generation": generation, "generation_s": None if reused else seconds, "incidents": data.incidents,
        "command": " ".join(["benchmarks/scale.py", *sys.argv[1:]]), "kpiwatch": {}, "peers": {}, "ratios": {},
    }
    executors = ("local", "dask") if args.executor == "both" else (args.executor,)
    for executor in executors:
        cycles = run_kpiwatch(folder, data, args, executor, say)
        result["kpiwatch"][executor] = [{**asdict(c), "seconds": c.seconds, "series_per_s": c.series_per_s}
                                        for c in cycles]
        result.setdefault("incidents_flagged", {})[executor] = caught(
            folder / f"state-{executor}.db", data.incidents, [c.day for c in cycles if c.series_judged])
    if len(executors) == 2:
        local, dask = result["kpiwatch"]["local"], result["kpiwatch"]["dask"]
        result["executors_compared"] = {
            a["name"]: b["series_per_s"] / a["series_per_s"]
            for a, b in zip(local, dask) if a["series_per_s"] and b["series_per_s"]}
    save(result)
    if not args.skip_peers:
        rng = np.random.default_rng(args.seed + 1)
        peers: dict[str, Any] = {"errors": {}}
        for name, step in (
            ("snaive", lambda: peer_snaive(data, folder, args.source)),
            ("statsforecast", lambda: peer_statsforecast(
                data, np.sort(rng.choice(data.series, min(args.sf_sample, data.series), replace=False)))),
            ("prophet", lambda: peer_prophet(
                data, np.sort(rng.choice(data.series, min(args.peer_sample, data.series), replace=False)))),
        ):
            say(f"peer {name} ...")
            began = time.perf_counter()
            try:
                peers[name] = step()
            except Exception as exc:  # noqa: BLE001 - a missing peer package must not lose the kpiwatch figures
                peers["errors"][name] = f"{type(exc).__name__}: {exc}"[:300]
            say(f"  {time.perf_counter() - began:.1f} s")
        result["peers"] = peers
        for executor in executors:
            cycles = [Cycle(**{k: v for k, v in c.items() if k not in ("seconds", "series_per_s")})
                      for c in result["kpiwatch"][executor]]
            result["ratios"][executor] = ratios(cycles, peers)
    shutil.rmtree(folder / "__pycache__", ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
