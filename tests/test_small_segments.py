"""A conversion rate over a handful of sessions a day is noise: two years of it give no alert,
while the same relative drop on a large segment does (issue: ratios done right).

Shown twice: on the demo shop's tiny channel (`affiliate`, ~8 sessions a day) with the detector
and default model the check uses, and on synthetic series of exactly known rates.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from forecaster.calendar import Calendar
from forecaster.detect import Detector, walk_forward
from forecaster.kpis import kpi_series
from forecaster.pipeline import SeriesResult, evaluate_series
from forecaster.settings import KPIConfig, RatioConfig
from forecaster.sources.base import to_kpi_series
from forecaster.demo import INCIDENTS, SMALL_CHANNEL
from forecaster.sources.demo import DemoSource
from forecaster.types import KPISeries

DAYS = 730
WINDOW = 30  # periods a check reports


def conversion_rate(sessions_per_day: float, drop_from: int | None = None, seed: int = 0):
    rng = np.random.default_rng(seed)
    index = pd.date_range("2024-01-01", periods=DAYS, freq="D", tz="UTC")
    sessions = rng.poisson(sessions_per_day, DAYS).astype(float)
    rate = np.full(DAYS, 0.02)
    if drop_from is not None:
        rate[drop_from : drop_from + 3] *= 0.6  # the demo's mobile incident: -40% for 3 days
    conversions = rng.binomial(sessions.astype(int), rate).astype(float)
    ratio = np.where(sessions > 0, conversions / np.maximum(sessions, 1), np.nan)
    return to_kpi_series("conversion_rate", pd.Series(ratio, index=index),
                         denominator=pd.Series(sessions, index=index))


def detector(kpi: KPIConfig, calendar: Calendar = Calendar()) -> Detector:
    return Detector.for_kpi(kpi, "D", calendar, "UTC")


def down(judgements) -> list[pd.Timestamp]:
    """The periods judged anomalous the bad way (down): what would alert with default settings."""
    return [j.period for j in judgements if j.is_anomaly and j.actual < j.expected]


def alerts_over_history(series) -> list[pd.Timestamp]:
    """Walk the detector over the whole history with default settings; the alerted periods."""
    kpi = KPIConfig(ratio=RatioConfig(numerator="conversions", denominator="sessions"), unit="%")
    return down(walk_forward(detector(kpi), series))


@pytest.mark.slow
def test_twelve_sessions_a_day_never_alert_in_two_years() -> None:
    assert alerts_over_history(conversion_rate(12)) == []


@pytest.mark.slow
def test_the_same_relative_drop_on_a_large_segment_alerts() -> None:
    drop_day = 500
    flagged = alerts_over_history(conversion_rate(50_000, drop_from=drop_day, seed=1))
    index = pd.date_range("2024-01-01", periods=DAYS, freq="D", tz="UTC")
    assert index[drop_day] in flagged
    assert len([t for t in flagged if t not in index[drop_day : drop_day + 3]]) <= 7  # ~1% of 600 days



# ---------------------------------------------------------------- on the demo shop's tiny channel

DROP = 0.6  # incident 1's size: the conversion rate at 0.6x for 3 days
DROP_DAYS = 3
# Default settings (level 0.99, no min_volume, no min_abs_change, the default model).
DEMO_KPI = KPIConfig(ratio=RatioConfig(numerator="conversions", denominator="sessions"), unit="%",
                     segments=["channel"], check_window=WINDOW)
CALENDAR = Calendar("NL")


@pytest.fixture(scope="module")
def demo_rates() -> dict[str, KPISeries]:
    """conversion_rate per channel of the demo shop, daily over its two years."""
    frame = DemoSource().fetch(DEMO_KPI.metrics, ["channel"], "D")
    return {s.segment["channel"]: s for s in kpi_series("conversion_rate", DEMO_KPI, frame) if s.segment}


def drops(result: SeriesResult) -> list[pd.Timestamp]:
    """The periods of a check judged anomalous the bad way (down)."""
    return down(result.judgements)


def with_rate_drop(series: KPISeries, first: pd.Timestamp) -> KPISeries:
    """The series with its rate at DROP x for DROP_DAYS days from `first` (sessions unchanged)."""
    values = series.values.copy()
    days = pd.date_range(first, periods=DROP_DAYS, freq="D")
    values.loc[days] = values.loc[days] * DROP
    return replace(series, values=values)


def drop_start(tiny: KPISeries) -> pd.Timestamp:
    """The 3 days of the last year where the tiny channel converted most (so the drop really moves
    its data), clear of calendar events and incidents (their bands are widened or learned)."""
    orders = (tiny.values * tiny.denominator).fillna(0.0)
    busy = orders.rolling(DROP_DAYS).sum().shift(-(DROP_DAYS - 1))
    incident_days = {i.start + timedelta(days=k) for i in INCIDENTS for k in range((i.end - i.start).days + 1)}

    def clear(first: pd.Timestamp) -> bool:
        days = [first.date() + timedelta(days=k) for k in range(-1, DROP_DAYS + 1)]
        return not any(CALENDAR.events_on(d) or d in incident_days for d in days)

    candidates = busy[(busy.index >= busy.index[-1] - pd.Timedelta(days=365)) & busy.notna()]
    return max((t for t in candidates.index if clear(t)), key=lambda t: (candidates[t], t))


@pytest.mark.slow
def test_the_demo_has_a_tiny_channel(demo_rates: dict[str, KPISeries]) -> None:
    tiny = demo_rates[SMALL_CHANNEL]
    assert tiny.denominator is not None
    sessions = tiny.denominator
    assert 3 <= sessions.quantile(0.05) and sessions.quantile(0.95) <= 15 and sessions.median() == pytest.approx(8, abs=2)
    assert (tiny.values == 0).mean() > 0.8  # most days not a single order: the rate is count noise
    assert demo_rates["organic"].denominator.median() > 5_000


@pytest.mark.slow
def test_the_tiny_demo_channel_never_alerts_in_two_years(demo_rates: dict[str, KPISeries]) -> None:
    judgements = walk_forward(detector(DEMO_KPI, CALENDAR), demo_rates[SMALL_CHANNEL])
    assert sum(1 for j in judgements if not np.isnan(j.score)) > 600  # judged, not skipped
    assert down(judgements) == []


@pytest.mark.slow
@pytest.mark.parametrize(("channel", "alerts"), [(SMALL_CHANNEL, False), ("organic", True), ("paid_search", True)])
def test_incident_sized_drop_alerts_on_a_large_channel_only(
    demo_rates: dict[str, KPISeries], channel: str, alerts: bool
) -> None:
    first = drop_start(demo_rates[SMALL_CHANNEL])  # the same 3 days for every channel
    series = demo_rates[channel]
    dropped = with_rate_drop(series, first)
    days = pd.date_range(first, periods=DROP_DAYS, freq="D")
    assert (dropped.values.loc[days] < series.values.loc[days]).any()  # the drop really moved the data
    result = evaluate_series(dropped, DEMO_KPI, detector(DEMO_KPI, CALENDAR), days[-1])
    if alerts:
        assert set(days) <= set(drops(result)), drops(result)
        assert result.anomaly is not None and result.anomaly.direction.value == "down"
    else:
        assert drops(result) == [] and result.anomaly is None
