"""`check --dry-run` (also `--at` a past day) changes nothing in the state store (issue 17, item 5):
the remembered detector states (with their model choices), the ledger and the evaluations stay
row for row as they were, and a dry run against a store that does not exist yet creates no file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
from click.testing import CliRunner

from alerts.daemon import Daemon
from alerts.store import Store
from forecaster.cli import cli
from forecaster.schedule import Clock
from forecaster.settings import load_config

CONFIG = """
timezone: UTC
state: sqlite:///{state}
sources: {{files: {{type: csv, path: '{csv}'}}}}
kpis:
  signups: {{metric: signups, source: files}}
"""


def _write_csv(path: Path) -> None:
    """120 days of weekly-seasonal signups (seeded), with a drop on 20 Apr 2025."""
    days = pd.date_range("2025-01-01", periods=120, freq="D")
    rng = np.random.default_rng(7)
    values = 200 + 40 * (days.day_of_week < 5) + rng.normal(0, 6, len(days))
    values[days == "2025-04-20"] *= 0.4
    pd.DataFrame({"timestamp": days.strftime("%Y-%m-%d"), "signups": values.round(1)}).to_csv(path, index=False)


def _rows(path: Path) -> dict[str, list[tuple]]:
    """Every row of every table, sorted (read with sqlite3 so nothing of ours opens it)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {name: sorted(conn.execute(f'SELECT * FROM "{name}"').fetchall(), key=repr) for name in tables}
    finally:
        conn.close()


def test_a_dry_run_check_at_a_past_day_changes_no_stored_row(tmp_path: Path) -> None:
    csv, state, config = tmp_path / "signups.csv", tmp_path / "state.db", tmp_path / "kpiwatch.yaml"
    _write_csv(csv)
    config.write_text(CONFIG.format(state=state, csv=csv))
    # The daemon's state after judging up to 27 Apr: ledger, detector states, evaluations.
    daemon = Daemon(config)
    daemon.store = Store(load_config(config).state_url)
    daemon.clock = Clock(pd.Timestamp("2025-04-28T08:00:00+00:00"), speed=0.0)
    daemon.judge_due("signups")
    daemon.store.close()
    before = _rows(state)
    assert before["detector_states"] and before["ledger"] and before["evaluations"]

    runner = CliRunner()
    for args in (["--at", "2025-04-21T09:00"], ["--at", "2025-03-02T09:00"], []):
        result = runner.invoke(cli, ["check", "--config", str(config), "--dry-run", *args])
        assert result.exit_code == 0, result.output
        assert _rows(state) == before, args
    assert "signups" in runner.invoke(cli, ["check", "--config", str(config), "--dry-run", "--at",
                                            "2025-04-21T09:00"]).output  # it did judge (the drop)


def test_a_dry_run_creates_no_store(tmp_path: Path) -> None:
    csv, config = tmp_path / "signups.csv", tmp_path / "kpiwatch.yaml"
    state = tmp_path / "not-yet" / "state.db"
    _write_csv(csv)
    config.write_text(CONFIG.format(state=state, csv=csv))
    result = CliRunner().invoke(cli, ["check", "--config", str(config), "--dry-run", "--at", "2025-04-21T09:00"])
    assert result.exit_code == 0, result.output
    assert not state.parent.exists()
