"""Slack button clicks (issue 19): how long the daemon's /slack/actions takes to answer a signed
click, against Slack's 3-second limit, idle and while a check cycle writes to the same store.

    .venv/bin/python benchmarks/click_latency.py                  # 200 clicks, SQLite
    .venv/bin/python benchmarks/click_latency.py --clicks 500 --store postgresql://postgres@127.0.0.1:5432/test

A daemon in this process (its real health server on 127.0.0.1, SLACK_SIGNING_SECRET set) on a
store holding `--clicks` open incidents, each answered once by a signed click built as Slack
signs it (HMAC-SHA256 of `v0:{timestamp}:{body}`), verdicts in turn expected / false alarm /
snooze / resolve. Each click: verify, record the verdict and queue the card's edit in one
transaction. Printed: median, 95th percentile and slowest round trip in milliseconds, for the
idle daemon and with `--busy` threads writing evaluation rows to the store meanwhile (a cycle's
batched upsert of 10,000 rows at a time), and how many answered in over 3 s. No Slack is called.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import statistics
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlencode

import pandas as pd

SECRET = "benchmark-signing-secret"
ACTIONS = ("kpiwatch_expected", "kpiwatch_false_alarm", "kpiwatch_snooze", "kpiwatch_resolve")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clicks", type=int, default=200, help="clicks per phase (default 200)")
    parser.add_argument("--store", default="", help="state store URL (default: a SQLite file in a temp folder)")
    parser.add_argument("--busy", type=int, default=1, help="threads writing a cycle's evaluations meanwhile (default 1)")
    args = parser.parse_args()
    os.environ["SLACK_SIGNING_SECRET"] = SECRET
    with tempfile.TemporaryDirectory(prefix="kpiwatch-clicks-") as folder, _store(args.store, Path(folder)) as url:
        idle, busy = run(Path(folder), url, args.clicks, args.busy)
    print(f"clicks answered (ms), {args.clicks} per phase, store {url.split(':')[0]}:")
    for label, seconds in (("idle", idle), (f"beside {args.busy} writer(s)", busy)):
        ms = sorted(s * 1000 for s in seconds)
        p95 = ms[int(0.95 * (len(ms) - 1))]
        late = sum(s > 3.0 for s in seconds)
        print(f"  {label:>22}: median {statistics.median(ms):7.1f}  p95 {p95:7.1f}  max {ms[-1]:7.1f}  over 3 s: {late}")


@contextmanager
def _store(given: str, folder: Path) -> Iterator[str]:
    """A SQLite file in `folder`, or a throw-away schema in the PostgreSQL database `given`
    (dropped afterwards: the database's own tables are left alone)."""
    if not given:
        yield f"sqlite:///{folder / 'state.db'}"
        return
    import sqlalchemy as sa

    schema = f"kpiwatch_bench_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(given)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{given}{'&' if '?' in given else '?'}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def run(folder: Path, url: str, clicks: int, writers: int) -> tuple[list[float], list[float]]:
    from alerts.daemon import Daemon
    from alerts.store import Store

    port = _free_port()
    config = folder / "kpiwatch.yaml"
    config.write_text(f"timezone: UTC\nstate: {url}\nsources: {{default: {{type: demo}}}}\n"
                      f"alerting: {{routes: [{{channel: '#kpi-alerts'}}]}}\n"
                      f"daemon: {{health_port: {port}, log_format: json}}\n"
                      "kpis:\n  sessions: {metric: sessions, segments: [channel]}\n")
    daemon = Daemon(config)
    daemon.store = Store(daemon.settings.state_url)
    daemon._start_health()
    try:
        keys = _open_incidents(daemon.store, daemon.settings, 2 * clicks)
        idle = [_click(port, key, ACTIONS[n % 4]) for n, key in enumerate(keys[:clicks])]
        stop = threading.Event()
        threads = [threading.Thread(target=_write_cycles, args=(daemon.store, stop), daemon=True) for _ in range(writers)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        busy = [_click(port, key, ACTIONS[n % 4]) for n, key in enumerate(keys[clicks:])]
        stop.set()
        for thread in threads:
            thread.join()
        return idle, busy
    finally:
        daemon._stop_health()
        daemon.executor.close()
        daemon.store.close()


def _open_incidents(store, settings, count: int) -> list[str]:  # noqa: ANN001 - Store, Settings
    """`count` unlinked open incidents (one channel value each), stored as a check would."""
    from alerts.incidents import evaluation_records, plan_cycle
    from forecaster.pipeline import CheckReport, SeriesResult
    from forecaster.types import Alert, Anomaly, Direction, Judgement, KPISeries, Severity

    day = pd.Timestamp("2025-12-10", tz="UTC")
    alerts, results = [], []
    index = pd.date_range(end=day, periods=10, freq="D")
    for n in range(count):
        segment = {"channel": f"c{n:05d}"}
        anomaly = Anomaly("sessions", segment, day, "D", 60.0, 100.0, 95.0, 105.0, Direction.DOWN, True,
                          Severity.CRITICAL, 1.0, "ets")
        alerts.append(Alert(anomaly, f"sessions fell 40% on {segment}"))
        judgement = Judgement(day, 60.0, 100.0, 95.0, 105.0, 1.0, True)
        results.append(SeriesResult(KPISeries("sessions", pd.Series(100.0, index=index), "D", segment), (judgement,),
                                    None, level=0.99, fresh=1))
    report = CheckReport({"sessions": day}, tuple(alerts), tuple(results))
    now = datetime(2025, 12, 11, 7, tzinfo=timezone.utc)
    # Planned in slices of 5 (more for one channel would be bundled into one message without buttons).
    for start in range(0, count, 5):
        part = CheckReport(report.period, report.alerts[start:start + 5], report.results[start:start + 5])
        plan = plan_cycle(part, settings, {}, [], now, charts=False, buttons=True)
        store.record_cycle(evaluation_records(part), plan, now)
    return [g.key for g in sorted(store.open_groups().values(), key=lambda g: g.id)]


def _write_cycles(store, stop: threading.Event) -> None:  # noqa: ANN001 - Store
    """A cycle's evaluations (10,000 rows in one batched upsert), again and again until `stop`."""
    from alerts.store import CyclePlan, EvaluationRecord

    day = datetime(2025, 12, 10, tzinfo=timezone.utc)
    rows = [EvaluationRecord("load", f"campaign=c{n}", day, 1.0, 1.0, 0.9, 1.1, 0.1, False) for n in range(10_000)]
    while not stop.is_set():
        store.record_cycle(rows, CyclePlan())


def _click(port: int, incident: str, action: str) -> float:
    payload = {"type": "block_actions", "user": {"id": "U0BENCH", "username": "bench"},
               "container": {"type": "message", "message_ts": "1765350000.000100", "channel_id": "C0ALERTS"},
               "channel": {"id": "C0ALERTS"}, "message": {"ts": "1765350000.000100"},
               "actions": [{"type": "button", "action_id": action, "block_id": "kpiwatch-feedback", "value": incident}]}
    body = urlencode({"payload": json.dumps(payload)}).encode()
    stamp = str(int(time.time()))
    signature = "v0=" + hmac.new(SECRET.encode(), b"v0:" + stamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/slack/actions", data=body, method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": signature})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    seconds = time.perf_counter() - started
    if "by @bench" not in answer.get("text", ""):
        raise SystemExit(f"click on {incident} not taken: {answer}")
    return seconds


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


if __name__ == "__main__":
    main()
