"""SIGTERM stops the daemon within `daemon.shutdown_grace` (default 10 s, as `docker stop`
waits), cancelling the checks under way; the period they were judging is not marked judged, so
after a restart it is judged once and each alert sent once (issue 17, #7)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from daemon_kit import (
    Run,
    events,
    free_port,
    frozen,
    judged_days,
    posted_keys,
    query,
    unsettled_rows,
    wait_until,
)
from fakeslack import FakeSlack


GRACE = 5.0
CONFIG = """
timezone: Europe/Amsterdam
state: sqlite:///{state}
sources: {{default: {{type: demo}}}}
alerting: {{routes: [{{channel: "#kpi-alerts"}}]}}
daemon: {{health_port: {port}, log_format: json, shutdown_grace: {grace}}}
kpis:
  conversion_rate:
    ratio: {{numerator: conversions, denominator: sessions}}
    unit: "%"
    segments: [device, channel]
    model: ets
    schedule: every 1 seconds
    min_volume: 200
    min_abs_change: 0.001
"""


def worker_started(pid: int) -> bool:
    """Whether the daemon `pid` has a worker process: a grandchild (the daemon starts a fork
    server, which forks the workers; its other child is multiprocessing's resource tracker).
    The first check runs in it: a worker exists = the check is under way."""
    listed = subprocess.run(["ps", "-o", "pid=,ppid=", "-g", str(pid)], capture_output=True, text=True).stdout
    parents = {int(p): int(pp) for p, pp in (line.split() for line in listed.strip().splitlines())}
    return any(parent not in (pid, 0) and parents.get(parent) == pid for parent in parents.values())


def test_sigterm_in_the_middle_of_a_long_job_exits_0_within_the_grace_and_a_restart_judges_once(tmp_path):
    state = tmp_path / "state.db"
    config = tmp_path / "kpiwatch.yaml"
    config.write_text(CONFIG.format(state=state, port=free_port(), grace=GRACE))
    log = tmp_path / "daemon.log"
    with FakeSlack() as slack:
        # Frozen after 8 Dec (the demo's mobile conversion drop): the first job walks two years of
        # history for 8 series, in a worker process, for many seconds.
        env = {**os.environ, "SLACK_API_URL": slack.url, "SLACK_BOT_TOKEN": "xoxb-test", "PYTHONUNBUFFERED": "1",
               "KPIWATCH_CLOCK": frozen("2025-12-09T06:00:00Z")}
        env.pop("SLACK_WEBHOOK_URL", None)
        try:
            run = Run(config, env, log)
            wait_until(lambda: events(log, "started"))
            wait_until(lambda: worker_started(run.process.pid), step=0.05)
            asked = time.monotonic()
            code = run.stop(signal.SIGTERM, timeout=60)
            took = time.monotonic() - asked
            assert code == 0
            assert took < GRACE, f"stopped {took:.1f} s after SIGTERM"
            [job] = events(log)
            assert job["status"] == "cancelled" and job["periods"] == "none", job
            assert "judged after the restart" in job["error"]
            # Nothing of the interrupted period is stored: not judged, nothing queued.
            assert query(state, "SELECT count(*) FROM ledger")[0][0] == 0
            assert query(state, "SELECT count(*) FROM evaluations")[0][0] == 0
            assert query(state, "SELECT count(*) FROM outbox")[0][0] == 0

            run = Run(config, env, log)
            wait_until(lambda: judged_days(log) and unsettled_rows(state) == 0)
            assert run.stop() == 0
        finally:
            Run.kill_all()
        keys = posted_keys(slack)
    assert judged_days(log) == ["2025-12-08"]  # judged once, after the restart
    assert keys and len(keys) == len(set(keys))  # every alert sent once
    assert "conversion_rate on device=mobile fell" in " ".join(m["text"] for m in slack.messages("C0ALERTS"))
    sent = [row[0] for row in query(state, "SELECT key FROM notifications WHERE kind = 'message'")]
    assert sorted(sent) == sorted(keys)
    periods = query(state, "SELECT count(*), count(DISTINCT segment) FROM evaluations WHERE period LIKE '2025-12-08%'")
    assert periods[0][0] == periods[0][1]  # one evaluation per series for the day
