"""Soak test of `kpiwatch run`: memory over many cycles (a benchmark, not a test).

Runs the daemon as a subprocess on simulated time (a day per second) over a CSV file source with
several years of daily data, one KPI scheduled every second, so each cycle judges one new day in a
worker process. Samples the resident memory (RSS) of the daemon and of all its child processes
(fork server, workers) and prints a table: minutes, cycles (job lines), periods judged, RSS.

    .venv/bin/python benchmarks/daemon_soak.py --minutes 10
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

CONFIG = """
timezone: UTC
state: sqlite:///{state}
sources: {{files: {{type: csv, path: "{path}", timestamp: day}}}}
daemon: {{health_port: 0, log_format: json, catch_up_periods: 3}}
kpis:
  leads:
    metric: leads
    source: files
    model: ets
    schedule: every 1 seconds
    completeness: 0
"""


def rss_kib(pid: int) -> int:
    """Resident memory of a process and all its descendants, KiB (from /proc)."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue
        stack.extend(int(child) for child in children)
    return total


def counts(log: Path) -> tuple[int, int]:
    """(job lines, periods judged) so far."""
    jobs = periods = 0
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("message") == "job":
                jobs += 1
                if event.get("status") == "ok" and event.get("periods", "none due") != "none due":
                    periods += len(event["periods"].split(","))
    return jobs, periods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to run (default 10)")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between samples (default 30)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kpiwatch-soak-") as folder:
        root = Path(folder)
        days = pd.date_range("2023-01-01", "2029-12-31", freq="D")
        leads = [200 + 40 * (d.day_of_week < 5) + (d.day_of_year % 7) for d in days]
        pd.DataFrame({"day": days.strftime("%Y-%m-%d"), "leads": leads}).to_csv(root / "leads.csv", index=False)
        (root / "kpiwatch.yaml").write_text(CONFIG.format(state=root / "state.db", path=root / "leads.csv"))
        env = {**os.environ, "KPIWATCH_CLOCK": f"2025-01-01T06:00:00Z*86400@{time.time()}"}
        env.pop("SLACK_BOT_TOKEN", None)
        env.pop("SLACK_WEBHOOK_URL", None)
        log = root / "daemon.log"
        with log.open("w") as handle:
            daemon = subprocess.Popen([sys.executable, "-m", "forecaster.cli", "run", "--config", str(root / "kpiwatch.yaml")],
                                      env=env, stdout=handle, stderr=handle, cwd=root, start_new_session=True)
        print(f"{'minutes':>8} {'cycles':>7} {'periods':>8} {'RSS MiB (daemon + workers)':>28}")
        started = time.time()
        try:
            while time.time() - started < args.minutes * 60:
                time.sleep(args.every)
                jobs, periods = counts(log)
                print(f"{(time.time() - started) / 60:8.1f} {jobs:7d} {periods:8d} {rss_kib(daemon.pid) / 1024:28.1f}",
                      flush=True)
        finally:
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(120)
        print(f"daemon exit code {code}")


if __name__ == "__main__":
    main()
