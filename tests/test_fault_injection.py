"""The fault-injection acceptance test: `kpiwatch run` SIGKILLed at random moments while the fake
Slack is down and then answers 429/500/drops, over a backlog of more than 200 messages and a
store made read-only for a few seconds; Slack must hold every message once (issue 17 #11).

The harness is benchmarks/fault_injection.py (its full run: `--kills 50`); here with 3 kills."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def harness():
    """benchmarks/ is not an installed package: load the module from its file."""
    spec = importlib.util.spec_from_file_location("kpiwatch_bench_faults", ROOT / "benchmarks" / "fault_injection.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_killed_three_times_under_slack_faults_and_a_read_only_store_every_message_once(tmp_path):
    figures = harness().run(kills=3, seed=3, backlog=210, life=(6.5, 9.5), fault_rate=0.25, read_only_every=2,
                            outage_lives=1, final_timeout=90.0, final_rounds=1.1, workdir=tmp_path, say=print)
    print(figures.table())
    assert figures.kills + len(figures.exited) == 3, figures.exited
    assert figures.read_only == 1 and sum(figures.faults.values()) > 0, figures.faults
    assert figures.expected > 210 and figures.anomalies >= 1
    assert figures.lost == [] and figures.duplicated == [], (figures.lost, figures.duplicated)
    assert figures.received == figures.expected and figures.anomalies_alerted == figures.anomalies
    assert figures.unsettled == 0 and figures.dead == 0
    assert figures.final_exit == 0  # the last daemon stops cleanly on SIGTERM
