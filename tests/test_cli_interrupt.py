"""Ctrl-C during `kpiwatch check` stops it at once, its worker processes too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from forecaster.types import BadInputError

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).resolve().parents[1] / "config" / "kpiwatch.yaml"


def group_size(group: int) -> int:
    found = subprocess.run(["pgrep", "-g", str(group)], capture_output=True, text=True).stdout.split()
    return len(found)


SLOW_CONFIG = """
timezone: Europe/Amsterdam
sources: {default: {type: demo}}
kpis:
  sessions: {metric: sessions, segments: [channel, device], model: prophet}
"""


def _as_in_a_terminal() -> None:
    """Ctrl-C as a terminal delivers it: a test run started in the background (`make test &`,
    a CI runner) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_during_a_check_ends_it_and_its_workers_within_seconds(tmp_path):
    # Prophet walked over two years for 11 series (a refit every 100 days): the check is fitting
    # for a minute or more, so the Ctrl-C comes while its workers are busy.
    config = tmp_path / "kpiwatch.yaml"
    config.write_text(SLOW_CONFIG)
    check = subprocess.Popen([sys.executable, "-m", "forecaster.cli", "check", "--config", str(config),
                              "--at", "2025-12-11T08:00", "--dry-run"], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True, preexec_fn=_as_in_a_terminal,
                             env={**os.environ, "PYTHONPATH": str(CONFIG.parents[1])})
    try:
        deadline = time.time() + 120
        while group_size(check.pid) < 2 and time.time() < deadline:  # the workers are fitting
            time.sleep(0.5)
        assert group_size(check.pid) >= 2, "the check never started its workers"
        time.sleep(2)
        os.killpg(check.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
        code = check.wait(30)
        stderr = check.stderr.read().decode()
        assert code != 0, stderr  # click says "Aborted!" and exits 1
        assert "Traceback" not in stderr, stderr
        # A worker ended mid-fit may leave its Stan optimiser to finish that one fit (a second or so).
        deadline = time.time() + 30
        while group_size(check.pid) and time.time() < deadline:
            time.sleep(0.5)
        assert group_size(check.pid) == 0  # no worker left fitting in the background
    finally:
        try:
            os.killpg(check.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        check.wait(30)


def _fails_fast_or_sleeps(item: str) -> str:
    """Stands in for a chunk of series in the workers: one bad, the rest slow."""
    if item == "bad":
        raise BadInputError("bad: this series cannot be judged")
    time.sleep(120)
    return item


def test_a_failed_series_ends_the_other_workers_at_once():
    # In-process callers (not only a CLI that exits) must not keep fitting after a failure.
    from forecaster.executor import ProcessExecutor

    started = time.monotonic()
    with ProcessExecutor(workers=2) as pool:
        with pytest.raises(BadInputError, match="cannot be judged"):
            pool.map(_fails_fast_or_sleeps, ["slow1", "bad", "slow2", "slow3"])
        assert time.monotonic() - started < 60
        deadline = time.time() + 10
        while any(_running(pid) for pid in pool.pids) and time.time() < deadline:
            time.sleep(0.2)
        assert not any(_running(pid) for pid in pool.pids)  # the slow ones were killed, not left sleeping


def _running(pid: int) -> bool:
    """Whether process `pid` is alive (a killed worker not yet reaped by its parent is not)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
