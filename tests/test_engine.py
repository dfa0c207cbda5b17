"""The one detection engine walked over small seeded series: what it alerts on and what it does
not (direction, for_periods, guardrails, a share over few sessions, gaps, calendar events, daily
habits), the episodes it announces, how it takes a lasting shift in, and that a state pickled
mid-way (the daemon's store) goes on exactly as one walk does."""

from __future__ import annotations

import dataclasses
import math
import pickle
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import pandas as pd
import pytest
from conftest import make_series, with_drop

from forecaster.calendar import Calendar, black_friday
from forecaster.detect import Detector, Rules, guardrail, walk_forward
from forecaster.detect.engine import MEMORY_CAP
from forecaster.detect.rules import sampling_sigma, to_anomaly
from forecaster.models.base import z_value
from forecaster.sources.base import to_kpi_series
from forecaster.types import Direction, Judgement, KPISeries, Severity

nan = float("nan")
UP, DOWN = Direction.UP, Direction.DOWN
POS = 150  # where the trouble starts: well after the first judged period (91)
RETAIL = Calendar(country=None, retail=True)


def weekly(periods: int = 170, seed: int = 3) -> pd.Series:
    """A clean daily series: 100 + a weekly swing of 10 + noise of 2."""
    return make_series(periods=periods, seed=seed)


def kpi(values: pd.Series, denominator: pd.Series | None = None) -> KPISeries:
    return to_kpi_series("sessions", values, freq=values.index.freqstr, denominator=denominator, origin="test")


def scaled(values: pd.Series, factors: Sequence[float], at: int = POS) -> pd.Series:
    """`values` with the ones from position `at` on multiplied by `factors` (NaN: a gap)."""
    out = values.copy()
    for k, factor in enumerate(factors):
        out.iloc[at + k] = nan if math.isnan(factor) else out.iloc[at + k] * factor
    return out


def walk(values: pd.Series, rules: Rules = Rules(), **detector: object) -> list[Judgement]:
    return walk_forward(Detector(rules, **detector), kpi(values))  # type: ignore[arg-type]


def judged(judgements: list[Judgement]) -> list[Judgement]:
    return [j for j in judgements if not math.isnan(j.score)]


def flags(judgements: list[Judgement]) -> str:
    """A: alert, a: anomalous without alert, .: neither."""
    return "".join("A" if j.alert else "a" if j.is_anomaly else "." for j in judgements)


def same(a: list[Judgement], b: list[Judgement]) -> bool:
    """Judgements equal field by field, NaN equal to NaN."""
    def key(j: Judgement) -> tuple:
        return tuple("nan" if isinstance(v, float) and math.isnan(v) else v for v in dataclasses.astuple(j))
    return [key(j) for j in a] == [key(j) for j in b]


# --------------------------------------------------------------------------- a drop, and which way alerts


def test_a_one_day_drop_alerts_down_as_a_new_episode() -> None:
    clean = walk(weekly())
    judgements = walk(scaled(weekly(), [0.4]))
    drop = judgements[POS]
    assert (drop.is_anomaly, drop.alert, drop.reason) == (True, True, "")
    assert (drop.direction, drop.notice, drop.episode, drop.run_length, drop.model) == ("down", "new", True, 1, "ets")
    assert drop.actual < drop.lower < drop.expected < drop.upper and drop.score > 0.99
    anomaly = to_anomaly(kpi(weekly()), drop, Rules())
    assert anomaly is not None and anomaly.severity is Severity.CRITICAL and anomaly.deviation < -0.5
    # The days before are the same walk; the next day is quiet, the episode over (a calm day
    # ends a daily episode), and the drop barely dragged the forecast (it reached the model at
    # the band's edge).
    assert same(judgements[:POS], clean[:POS])
    after = judgements[POS + 1]
    assert (after.alert, after.notice, after.episode) == (False, "", False)
    assert abs(after.expected - clean[POS + 1].expected) < (after.upper - after.expected) / 2
    assert flags(judgements[POS + 1:]) == flags(clean[POS + 1:])


@pytest.mark.parametrize(
    ("rules", "factor", "alert", "direction", "severity"),
    [
        (Rules(), 0.4, True, "down", Severity.CRITICAL),
        (Rules(), 1.6, True, "up", Severity.CRITICAL),
        (Rules(good=UP), 0.4, True, "down", Severity.CRITICAL),
        (Rules(good=UP), 1.6, False, "up", None),  # the good way: not an alert ...
        (Rules(good=UP, good_news=True), 1.6, True, "up", Severity.GOOD_NEWS),  # ... unless good news is asked
        (Rules(good=UP, good_news=True), 0.4, True, "down", Severity.CRITICAL),
        (Rules(good=DOWN), 1.6, True, "up", Severity.CRITICAL),  # a cost: a rise is bad
        (Rules(good=DOWN), 0.4, False, "down", None),
        (Rules(good=DOWN, good_news=True), 0.4, True, "down", Severity.GOOD_NEWS),
    ],
)
def test_which_way_alerts(rules: Rules, factor: float, alert: bool, direction: str, severity: Severity | None) -> None:
    judgement = walk(scaled(weekly(), [factor]), rules)[POS]
    assert judgement.is_anomaly  # anomalous either way; the rules decide the alert
    assert (judgement.alert, judgement.direction) == (alert, direction)
    assert judgement.notice == ("new" if alert else "")
    anomaly = to_anomaly(kpi(weekly()), judgement, rules)
    assert (anomaly.severity if anomaly else None) is severity


@pytest.mark.parametrize(
    ("rules", "factors", "expected"),
    [
        (Rules(for_periods=1), [0.4, 0.4, 0.4, 0.4, 1.0], "AAAA."),
        (Rules(for_periods=2), [0.4, 0.4, 0.4, 0.4, 1.0], "aAAA."),
        (Rules(for_periods=3), [0.4, 0.4, 0.4, 0.4, 1.0], "aaAA."),
        (Rules(for_periods=3), [1.0, 0.4, 0.4, 1.0, 1.0], ".aa.."),  # two only
        (Rules(for_periods=3), [0.4, 0.4, 1.0, 0.4, 0.4], "aa.aa"),  # a normal day breaks the run
        (Rules(for_periods=3), [0.4, 0.4, nan, 0.4, 0.4], "aa.aa"),  # so does a gap
        (Rules(for_periods=3), [0.4, 0.4, 1.6, 0.4, 0.4], "aaaaa"),  # and a move the other way
        (Rules(for_periods=3, good=DOWN), [0.4, 0.4, 0.4, 0.4, 1.0], "aaaa."),  # the good way never counts
    ],
)
def test_for_periods(rules: Rules, factors: list[float], expected: str) -> None:
    judgements = walk(scaled(weekly(), factors), rules, accept_after=10)
    window = judgements[POS:POS + len(factors)]
    assert flags(window) == expected
    runs = [j.run_length for j in window]
    if expected == "aaAA.":
        assert runs == [0, 0, 3, 4, 0]  # run_length counts the whole run, not just the alerts
        assert [j.notice for j in window[2:4]] == ["new", "repeat"]


@pytest.mark.parametrize(
    ("rules", "anomalous", "reason_starts"),
    [
        (Rules(min_abs_change=100.0), False, "change "),  # a drop of about 60 sessions
        (Rules(min_volume=1000.0), False, "volume "),  # about 100 sessions a day
        (Rules(min_abs_change=10.0, min_volume=50.0), True, ""),
    ],
)
def test_guardrails_hold_back_a_drop_outside_the_band(rules: Rules, anomalous: bool, reason_starts: str) -> None:
    judgement = walk(scaled(weekly(), [0.4]), rules)[POS]
    assert judgement.actual < judgement.lower  # outside the band all the same
    assert (judgement.is_anomaly, judgement.alert) == (anomalous, anomalous)
    assert judgement.reason == guardrail(judgement.actual, judgement.expected, nan, rules)
    assert judgement.reason.startswith(reason_starts)
    # Inside the band no guardrail is consulted at all.
    inside = [j for j in judged(walk(weekly(), rules)) if j.lower <= j.actual <= j.upper]
    assert len(inside) > 70 and all(j.reason == "" for j in inside)


# --------------------------------------------------------------------------- the band itself


@pytest.mark.parametrize("level", [0.9, 0.99])
def test_score_band_and_flag_agree_on_every_judged_period(level: float) -> None:
    values = scaled(weekly(periods=300, seed=8), [0.4, 1.0, 1.0, 1.5, 1.0, 0.7])
    judgements = judged(walk(values, Rules(level=level)))
    assert len(judgements) == 300 - 90
    assert sum(j.is_anomaly for j in judgements) >= 3
    for j in judgements:
        assert j.lower < j.expected < j.upper
        assert 0.0 <= j.score <= 1.0
        outside = j.actual < j.lower or j.actual > j.upper
        assert j.is_anomaly == outside  # daily data: the band alone decides (no guardrails set)
        if abs(abs(j.actual - j.expected) - (j.upper - j.expected)) > 1e-9:
            assert (j.score > level) == outside  # the score is the level exactly at the edge


def test_normal_days_rarely_alert() -> None:
    # Level 0.99 is 1% of normal days outside the band; a band calibrated on a few dozen errors
    # at first runs a little narrow (about 2% over the first 100 judged days of clean data).
    judgements = judged(walk(weekly(periods=400, seed=11)))
    assert sum(j.alert for j in judgements) <= 0.03 * len(judgements)


# --------------------------------------------------------------------------- a share over few sessions


def conversion_rate(last_sessions: float, last_rate: float, days: int = 150) -> tuple[pd.Series, pd.Series]:
    """A 2% conversion rate over ~5,000 sessions a day (binomial noise), the last day set."""
    rng = np.random.default_rng(0)
    index = pd.date_range("2024-01-01", periods=days, freq="D", tz="UTC")
    sessions = rng.poisson(5000, days).astype(float)
    rate = rng.binomial(sessions.astype(int), 0.02) / sessions
    sessions[-1], rate[-1] = last_sessions, last_rate
    return pd.Series(rate, index=index), pd.Series(sessions, index=index)


@pytest.mark.parametrize(
    ("sessions", "rate", "share", "anomalous"),
    [
        (12.0, 1 / 12, True, False),  # 1 order out of 12 sessions: noise
        (12.0, 0.0, True, False),  # no order out of 12: noise too
        (50_000.0, 1 / 12, True, True),  # 8.3% over 50,000 sessions: news
        (50_000.0, 0.0, True, True),
        (12.0, 1 / 12, False, True),  # not a share (a CPC): the calibrated band alone judges
        (5_000.0, 0.02, True, False),
    ],
)
def test_a_share_over_few_sessions_widens_by_its_binomial_noise(sessions: float, rate: float, share: bool,
                                                                anomalous: bool) -> None:
    values, volume = conversion_rate(sessions, rate)
    judgement = walk_forward(Detector(share=share), kpi(values, volume))[-1]
    assert judgement.is_anomaly is anomalous


def test_the_widening_is_the_excess_binomial_variance_over_a_usual_day() -> None:
    z = z_value(0.99)
    small = walk_forward(Detector(share=True), kpi(*conversion_rate(12.0, 0.02)))
    large = walk_forward(Detector(share=True), kpi(*conversion_rate(50_000.0, 0.02)))
    assert same(small[:-1], large[:-1])  # the same history
    tail_sigma = (large[-1].upper - large[-1].expected) / z  # a large day adds nothing to the calibrated band
    usual = float(np.median(conversion_rate(12.0, 0.02)[1].iloc[-29:-1]))  # the last 28 judged days' sessions
    extra, least = sampling_sigma(small[-1].expected, 12.0, usual, z)
    assert small[-1].upper - small[-1].expected == pytest.approx(z * max(math.hypot(tail_sigma, extra), least), rel=1e-9)


@pytest.mark.parametrize(("sessions", "reason"), [(50.0, "volume 50 is below min_volume 100"), (500.0, "")])
def test_min_volume_of_a_ratio_is_its_denominator(sessions: float, reason: str) -> None:
    values, volume = conversion_rate(sessions, 0.3)
    judgement = walk_forward(Detector(Rules(min_volume=100.0), share=True), kpi(values, volume))[-1]
    assert judgement.actual > judgement.upper
    assert (judgement.is_anomaly, judgement.reason) == (reason == "", reason)


# --------------------------------------------------------------------------- gaps and short series


def test_a_gap_is_no_data_and_the_walk_goes_on() -> None:
    clean = walk(weekly())
    judgements = walk(scaled(weekly(), [nan]))
    gap = judgements[POS]
    assert (gap.reason, gap.is_anomaly, gap.alert, gap.direction, gap.notice) == ("no data", False, False, "", "")
    assert math.isnan(gap.actual) and math.isnan(gap.score) and math.isnan(gap.lower)
    assert gap.expected == pytest.approx(clean[POS].expected)  # the forecast stood in for the value
    assert not any(j.is_anomaly for j in judgements[POS + 1:POS + 8])
    assert all(not math.isnan(j.score) for j in judgements[POS + 1:])


def test_a_series_shorter_than_the_history_needed_has_no_judged_period() -> None:
    judgements = walk(weekly(periods=90))
    assert len(judgements) == 90 and judged(judgements) == []
    assert {j.reason for j in judgements} == {"history: too few values for a first fit yet",
                                              "history: calibrating the band"}
    assert not any(j.is_anomaly or j.alert for j in judgements)


# --------------------------------------------------------------------------- episodes


@pytest.mark.parametrize(
    ("repeat_hours", "notices", "episode"),
    [
        # drops on days 0, 1, 2, 3, 5 and 8: a daily episode ends after one calm day (half of 24 hours)
        (24, ["new", "repeat", "repeat", "repeat", "", "new", "", "", "new", ""], "TTTTFTFFTF"),
        (72, ["new", "", "", "repeat", "", "new", "", "", "new", ""], "TTTTFTFFTF"),
        # 96 hours: repeated after 4 days, ended after 2 calm ones: day 5 belongs to the first episode
        (96, ["new", "", "", "", "", "repeat", "", "", "new", ""], "TTTTTTTFTT"),
    ],
)
def test_an_episode_is_announced_repeated_and_ended(repeat_hours: float, notices: list[str], episode: str) -> None:
    factors = [0.4 if k in (0, 1, 2, 3, 5, 8) else 1.0 for k in range(10)]
    window = walk(scaled(weekly(), factors), Rules(repeat_hours=repeat_hours))[POS:POS + 10]
    assert flags(window) == "".join("A" if f < 1 else "." for f in factors)
    assert [j.notice for j in window] == notices
    assert "".join("T" if j.episode else "F" for j in window) == episode


# --------------------------------------------------------------------------- a lasting shift


def test_a_lasting_level_shift_alerts_then_becomes_the_new_normal() -> None:
    judgements = walk(with_drop(weekly(periods=280), POS, 0.4))
    assert flags(judgements[POS - 20:POS]) == "." * 20
    shifted = judgements[POS:]
    assert (shifted[0].alert, shifted[0].direction, shifted[0].notice) == (True, "down", "new")
    assert all(j.direction == "down" for j in shifted if j.alert)
    # By the next refit (position 220) at the latest the forecast is on the new level and quiet.
    settled = shifted[70:]
    assert not any(j.is_anomaly for j in settled)
    assert np.median([abs(j.expected - j.actual) for j in settled]) < 2.0  # the noise is 2


@pytest.mark.parametrize("accept_after", [3, 6])
def test_after_accept_after_anomalous_periods_values_reach_the_model_as_they_are(accept_after: int) -> None:
    # Seasonal naive forecasts the value the model saw a week earlier, so the forecasts show
    # what it saw: the first accept_after - 1 shifted values pulled back to the band's edge
    # (Huber cleaning), from the accept_after-th anomalous period in a row on the values themselves.
    judgements = walk(with_drop(weekly(), POS, 0.4), model="seasonal_naive", accept_after=accept_after)
    for k in range(8):
        seen, week_later = judgements[POS + k], judgements[POS + k + 7]
        assert seen.is_anomaly
        model_saw = seen.lower if k < accept_after - 1 else seen.actual
        assert week_later.expected == pytest.approx(model_saw, rel=1e-12), k



@pytest.mark.parametrize("model", ["ets", "seasonal_naive"])
def test_a_lasting_shift_widens_the_band_by_at_most_memory_cap(model: str) -> None:
    # engine.py: "a run of huge ones (an incident, a shift) widens it by at most that factor".
    judgements = walk(with_drop(weekly(periods=200), POS, 0.4), model=model)
    run = judgements[POS:POS + 8]
    assert flags(run) == "A" * 8  # one run of anomalies
    before = judgements[POS].upper - judgements[POS].expected
    assert max(j.upper - j.expected for j in run) <= MEMORY_CAP * before * 1.1


@pytest.mark.parametrize("accept_after", [3, 6])
def test_a_lasting_shift_alerts_until_the_accepted_values_are_forecast(accept_after: int) -> None:
    # Seasonal naive: the first forecast made from an accepted value is a week after the
    # accept_after-th shifted period; every shifted day before it is forecast from the old level.
    judgements = walk(with_drop(weekly(), POS, 0.4), model="seasonal_naive", accept_after=accept_after)
    last = accept_after + 5
    assert flags(judgements[POS:POS + last + 8]) == "A" * (last + 1) + "." * 7


# --------------------------------------------------------------------------- calendar events


def black_fridays(factor_2023: float, factor_2024: float) -> pd.Series:
    """Two years of days from 1 Jan 2023; Black Friday (the Friday only) at the factors given."""
    values = make_series(periods=731, seed=5, start="2023-01-01")
    for year, factor in ((2023, factor_2023), (2024, factor_2024)):
        values[pd.Timestamp(black_friday(year), tz="UTC")] *= factor
    return values


@lru_cache(maxsize=8)
def bf_walk(factor_2023: float, factor_2024: float, calendar: Calendar | None = RETAIL,
            event_margin: float = 0.15) -> dict[pd.Timestamp, Judgement]:
    judgements = walk(black_fridays(factor_2023, factor_2024), Rules(event_margin=event_margin), calendar=calendar)
    return {j.period: j for j in judgements}


BF_2023 = pd.Timestamp("2023-11-24", tz="UTC")
BF_2024 = pd.Timestamp("2024-11-29", tz="UTC")


def test_the_first_black_friday_is_learned_not_judged() -> None:
    first = bf_walk(2.0, 2.0)[BF_2023]
    assert "first" in first.reason and "black_friday" in first.reason
    assert math.isnan(first.score) and not first.is_anomaly and not first.alert
    assert first.expected < first.actual / 1.5  # the forecast of an ordinary Friday
    # Without a calendar the same day is an ordinary day twice its size: an alert.
    plain = bf_walk(2.0, 2.0, None)[BF_2023]
    assert (plain.alert, plain.direction) == (True, "up")


@pytest.mark.parametrize(
    ("factor_2024", "alert", "direction"),
    [
        (2.0, False, ""),  # twice as big again: what Black Friday does
        (1.0, True, "down"),  # an ordinary day where Black Friday was expected: news
    ],
)
def test_the_next_black_friday_is_judged_against_last_years_effect(factor_2024: float, alert: bool, direction: str) -> None:
    judgement = bf_walk(2.0, factor_2024)[BF_2024]
    assert not math.isnan(judgement.score) and judgement.reason == ""
    assert judgement.expected > 150  # the forecast times last year's effect (about 2)
    assert judgement.alert is alert
    if alert:
        assert judgement.direction == direction


def test_event_margin_widens_an_event_days_band_by_its_share_of_expected() -> None:
    narrow, wide = bf_walk(2.0, 2.0, RETAIL, 0.0)[BF_2024], bf_walk(2.0, 2.0, RETAIL, 0.3)[BF_2024]
    assert narrow.expected == wide.expected
    assert (wide.upper - wide.expected) - (narrow.upper - narrow.expected) == pytest.approx(0.3 * abs(wide.expected))
    # An ordinary day is not touched by the margin.
    day = BF_2024 - pd.Timedelta(days=14)
    assert bf_walk(2.0, 2.0, RETAIL, 0.0)[day].upper == bf_walk(2.0, 2.0, RETAIL, 0.3)[day].upper


def test_event_days_are_local_dates() -> None:
    # Days labelled 23:00 UTC are the next day in Amsterdam in winter: Black Friday is the row
    # stamped the Thursday evening.
    values = black_fridays(2.0, 2.0)
    values.index = values.index - pd.Timedelta(hours=1)
    values.index.freq = "D"
    judgements = walk_forward(Detector(calendar=RETAIL, timezone="Europe/Amsterdam"), kpi(values))
    by_period = {j.period: j for j in judgements}
    assert "first black_friday" in by_period[BF_2023 - pd.Timedelta(hours=1)].reason
    assert by_period[BF_2024 - pd.Timedelta(hours=1)].alert is False


# --------------------------------------------------------------------------- daily habits (sub-daily data)


def test_a_spike_at_the_same_hour_as_yesterday_is_a_habit_not_news() -> None:
    values = make_series(freq="h", periods=24 * 14, season=24, seed=4)
    for day in (10, 11, 12):
        values.iloc[24 * day + 10] *= 1.6
    judgements = walk_forward(Detector(freq="h"), kpi(values))
    first, second, third = (judgements[24 * day + 10] for day in (10, 11, 12))
    assert (first.alert, first.notice, first.direction) == (True, "new", "up")
    for later in (second, third):
        assert later.actual > later.upper and not later.is_anomaly
        assert later.reason == "a daily habit: outside the band at this time yesterday too"
    assert sum(j.alert for j in judgements) == 1


# --------------------------------------------------------------------------- a stored state goes on the same way


def troubled(periods: int = 230) -> pd.Series:
    """A weekly series with a drop, a gap, a spike and a three-day dip."""
    return scaled(weekly(periods=periods, seed=6), [0.4, 1, 1, 1, 1, nan, 1, 1, 1, 1, 1.8, 1, 1, 0.6, 0.6, 0.6])


@pytest.mark.parametrize(
    ("model", "split"),
    [
        ("ets", 40),  # before the first fit
        ("ets", 75),  # while calibrating the band
        ("ets", 152),  # inside an incident
        ("ets", 200),  # after a refit
        ("seasonal_naive", 155),
        ("auto", 155),
        pytest.param("prophet", 155, marks=[pytest.mark.slow,  # prophet.serialize reads JSON the pandas 3 way
                                            pytest.mark.filterwarnings("ignore:The 'convert_dates' keyword")]),
    ],
)
def test_a_pickled_state_goes_on_exactly_as_one_walk(model: str, split: int) -> None:
    series = kpi(troubled())
    index = series.values.index
    detector = Detector(model=model)
    whole = walk_forward(detector, series)
    state, head = detector.advance(None, series, index[split - 1])
    stored = pickle.loads(pickle.dumps(state))  # the daemon's store
    stored, tail = Detector(model=model).advance(stored, series, index[-1])  # a new process: a new detector
    assert len(tail) == len(index) - split
    assert same(head + tail, whole)
    assert stored.position == len(index)


def test_a_pickled_state_keeps_a_shares_volumes_and_the_events_learned() -> None:
    values, volume = conversion_rate(12.0, 0.02, days=140)
    share = kpi(values, volume)
    detector = Detector(share=True)
    state, head = detector.advance(None, share, share.values.index[119])
    _, tail = detector.advance(pickle.loads(pickle.dumps(state)), share, share.values.index[-1])
    assert same(head + tail, walk_forward(detector, share))

    events = kpi(black_fridays(2.0, 1.0))
    detector = Detector(calendar=RETAIL)
    state, head = detector.advance(None, events, BF_2024 - pd.Timedelta(days=3))
    assert state.effects  # last year's effects, learned
    _, tail = detector.advance(pickle.loads(pickle.dumps(state)), events, events.values.index[-1])
    assert same(head + tail, walk_forward(detector, events))
