"""A dry run, `check --at` a past day and `replay` change no stored state (issue 16): the daemon's
detector states and ledger stay as they were, so its next cycle steps on exactly where it stopped."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from forecaster.cli import cli
from forecaster.settings import load_config
from alerts.store import Store

CONFIG = """
timezone: Europe/Amsterdam
state: sqlite:///{state}
sources: {{default: {{type: demo}}}}
kpis:
  page_load_time:
    ratio: {{numerator: page_load_seconds, denominator: sessions}}
    good: down
    unit: s
"""


def _store_digest(path: Path) -> str:
    """The state store's tables as the daemon reads them (file bytes would change on a mere open)."""
    store = Store(f"sqlite:///{path}")
    try:
        states = store.detector_states("page_load_time")
        parts = [str(store.last_judged("page_load_time")), str(sorted(states)),
                 str(sorted((k, s.blob, str(s.next_period)) for k, s in states.items())),
                 str([(r.period, r.actual) for r in store.evaluations_of("page_load_time")])]
    finally:
        store.close()
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def test_dry_run_check_at_and_replay_leave_the_daemons_state_alone(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    config = tmp_path / "kpiwatch.yaml"
    config.write_text(CONFIG.format(state=state))
    # The daemon's state after judging 1 Dec 2025: a ledger, a stored detector state, evaluations.
    from alerts.daemon import Daemon
    from forecaster.schedule import Clock

    daemon = Daemon(config)
    daemon.store = Store(load_config(config).state_url)
    daemon.clock = Clock(pd.Timestamp("2025-12-02T08:00:00+01:00").tz_convert("UTC"), speed=0.0)
    daemon.judge_due("page_load_time")
    daemon.store.close()
    before = _store_digest(state)
    assert "2025-12-01" in str(Store(f"sqlite:///{state}").last_judged("page_load_time"))

    runner = CliRunner()
    for args in (["check", "--config", str(config), "--dry-run"],
                 ["check", "--config", str(config), "--dry-run", "--at", "2025-11-20T08:00"],
                 ["replay", "page_load_time", "--config", str(config), "--from", "2025-11-25",
                  "--output", str(tmp_path / "replay.csv")]):
        result = runner.invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert _store_digest(state) == before, args
    replayed = pd.read_csv(tmp_path / "replay.csv")
    assert len(replayed) == 16 and replayed["score"].notna().all()  # 25 Nov - 10 Dec, all judged
