"""A warm cycle reads only the recent periods and steps stored states (issue 18): the same
verdicts as a walk over the whole history, and a full read whenever a series needs it (a
revised value, a series without a state, a state older than the window)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alerts.incidents import evaluation_records
from forecaster.executor import make_executor
from forecaster.pipeline import HISTORY_WINDOW, CheckReport, check
from forecaster.settings import load_config
from forecaster.sources import files as file_sources
from forecaster.types import segment_key

CONFIG = """
timezone: UTC
sources: {{shop: {{type: csv, path: "{path}", timestamp: day}}}}
kpis:
  orders:
    metric: orders
    source: shop
    segments: [campaign]
    min_volume: 0
  conversion_rate:
    ratio: {{numerator: orders, denominator: sessions}}
    unit: "%"
    source: shop
    segments: [campaign]
    min_volume: 0
"""
CAMPAIGNS = ("alpha", "beta", "gamma", "delta")
LAST = pd.Timestamp("2025-06-30", tz="UTC")
DAYS = pd.date_range(pd.Timestamp("2024-10-01", tz="UTC"), LAST, freq="D")


def _write(path: Path, drop_day: pd.Timestamp | None = None, revised: tuple[str, pd.Timestamp] | None = None) -> None:
    """Daily sessions and orders per campaign with a weekly rhythm and noise (seeded); `beta`'s
    orders fall by 60% from `drop_day`; `revised` (campaign, day) gets its orders doubled."""
    rng = np.random.default_rng(3)
    rows = []
    for number, campaign in enumerate(CAMPAIGNS):
        weekly = 1 + 0.2 * np.sin(2 * np.pi * (np.arange(len(DAYS)) + number) / 7)
        sessions = rng.poisson(1000 * (number + 1) * weekly)
        orders = rng.binomial(sessions, 0.03).astype(float)
        if campaign == "beta" and drop_day is not None:
            orders[DAYS >= drop_day] *= 0.4
        if revised is not None and campaign == revised[0]:
            orders[DAYS == revised[1]] *= 2
        rows.append(pd.DataFrame({"day": DAYS.strftime("%Y-%m-%d"), "campaign": campaign,
                                  "sessions": sessions, "orders": orders.round()}))
    pd.concat(rows).to_csv(path, index=False)


@pytest.fixture
def settings(tmp_path: Path):
    data = tmp_path / "shop.csv"
    _write(data, drop_day=LAST - pd.Timedelta(days=1))
    config = tmp_path / "kpiwatch.yaml"
    config.write_text(CONFIG.format(path=data))
    return load_config(config)


@pytest.fixture(scope="module")
def executor():
    with_one = make_executor(workers=1)
    yield with_one
    with_one.close()


@pytest.fixture
def reads(monkeypatch):
    """The `start` of every fetch of the KPIs' frames (None: the whole history)."""
    seen: list[pd.Timestamp | None] = []
    fetch = file_sources.FileSource.fetch

    def spy(self, metrics, dimensions, freq, start=None, end=None, rows=False):
        if dimensions:
            seen.append(start)
        return fetch(self, metrics, dimensions, freq, start=start, end=end, rows=rows)

    monkeypatch.setattr(file_sources.FileSource, "fetch", spy)
    return seen


def _verdicts(report: CheckReport) -> dict[tuple[str, str], tuple[float, float, float, bool]]:
    """Each series' judgement of its judged period: (expected, lower, upper, anomaly)."""
    out = {}
    for result in report.results:
        last = result.judgements[-1]
        assert last.period == report.period[result.series.name]
        out[(result.series.name, segment_key(result.series.segment))] = (
            round(last.expected, 9), round(last.lower, 9), round(last.upper, 9), last.is_anomaly)
    return out


def test_warm_cycles_read_a_window_and_judge_as_a_walk_over_the_whole_history(settings, executor, reads):
    days = list(pd.date_range(LAST - pd.Timedelta(days=4), LAST, freq="D"))
    morning_after = pd.Timedelta(days=1, hours=6)  # the check then judges the day
    report = check(settings, at=days[0] + morning_after, executor=executor)
    states = report.states
    assert len(states) == 2 * (1 + len(CAMPAIGNS))
    for day in days[1:]:
        reads.clear()
        at = day + morning_after
        warm = check(settings, at=at, states=states, executor=executor)
        assert reads == [day - HISTORY_WINDOW * pd.Timedelta(days=1)] * 2  # one windowed read per KPI, no full one
        cold = check(settings, at=at, executor=executor)
        assert _verdicts(warm) == _verdicts(cold)
        assert [r.fresh for r in warm.results] == [1] * len(warm.results)  # one new period each
        assert len(evaluation_records(warm)) == len(warm.results)
        states = warm.states
    anomalies = {(a.anomaly.kpi, segment_key(a.anomaly.segment)) for a in warm.alerts}
    assert ("orders", "campaign=beta") in anomalies  # the drop is found by the stepped states too


def test_a_revised_value_in_the_window_reads_that_kpi_in_full_and_rebuilds(settings, executor, reads, tmp_path):
    day = LAST - pd.Timedelta(days=1)
    states = check(settings, at=day + pd.Timedelta(hours=6), executor=executor).states
    _write(tmp_path / "shop.csv", drop_day=LAST - pd.Timedelta(days=1), revised=("gamma", day - pd.Timedelta(days=20)))
    reads.clear()
    at = LAST + pd.Timedelta(hours=6)
    warm = check(settings, at=at, states=states, executor=executor)
    assert reads.count(None) == 2  # both KPIs hold gamma's orders: read again in full
    assert _verdicts(warm) == _verdicts(check(settings, at=at, executor=executor))
    rebuilt = {segment_key(r.series.segment): r.fresh for r in warm.results if r.series.name == "orders"}
    assert rebuilt["campaign=gamma"] == len(warm.results[0].judgements) and rebuilt["campaign=alpha"] == 1


@pytest.mark.parametrize("case", ["missing", "too old", "unreadable"])
def test_a_series_without_a_usable_state_is_judged_from_its_whole_history(settings, executor, reads, case):
    at = LAST + pd.Timedelta(hours=6)
    if case == "too old":  # the daemon was down for longer than the window
        states = check(settings, at=at - (HISTORY_WINDOW + 20) * pd.Timedelta(days=1), executor=executor).states
    else:
        states = dict(check(settings, at=at - pd.Timedelta(days=1), executor=executor).states)
        key = ("orders", "campaign=delta")
        if case == "missing":
            del states[key]
        else:
            states[key] = type(states[key])(b"not a state", states[key].next_period)
    reads.clear()
    warm = check(settings, at=at, states=states, executor=executor)
    assert None in reads
    assert _verdicts(warm) == _verdicts(check(settings, at=at, executor=executor))
