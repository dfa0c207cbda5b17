"""The detection package's parts on their own: the rules (`guardrail`, `sampling_sigma`,
`severity`, `to_anomaly`, `Rules`), the calibration (`ErrorTail`), the plan of each frequency,
the history a series needs, and the engine's stepping contract (`step`, `advance`,
`walk_forward`). Whole walks over synthetic series are in test_engine.py."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from conftest import make_series
from hypothesis import given, settings
from hypothesis import strategies as st

from forecaster.calendar import Calendar
from forecaster.detect import Detector, Rules, guardrail, history_needed, walk_forward
from forecaster.detect.calibration import NORMAL_Q99, ErrorTail, quantile
from forecaster.detect.engine import MIN_CALIBRATION, MIN_FIT, BehaviourShift, make_plan
from forecaster.detect.rules import CRITICAL_EXCESS, sampling_sigma, severity, to_anomaly
from forecaster.models.base import z_value
from forecaster.settings import KPIConfig, RatioConfig
from forecaster.sources.base import to_kpi_series
from forecaster.types import Direction, Judgement, KPISeries, Severity

nan = float("nan")
UP, DOWN = Direction.UP, Direction.DOWN
T0 = pd.Timestamp("2025-12-01", tz="UTC")
Z99 = z_value(0.99)


def series_of(values: pd.Series, denominator: pd.Series | None = None) -> KPISeries:
    return to_kpi_series("sessions", values, freq=values.index.freqstr, denominator=denominator, origin="test")


# --------------------------------------------------------------------------- guardrails


@pytest.mark.parametrize(
    ("actual", "expected", "volume", "rules", "reason"),
    [
        (112.0, 100.0, nan, Rules(min_abs_change=15.0), "change 12 is below min_abs_change 15"),
        (88.0, 100.0, nan, Rules(min_abs_change=15.0), "change 12 is below min_abs_change 15"),
        (84.5, 100.0, nan, Rules(min_abs_change=15.0), ""),  # a change of 15.5 passes
        (115.0, 100.0, nan, Rules(min_abs_change=15.0), ""),  # exactly the threshold passes
        # a count: the volume is the larger of actual and expected
        (112.0, 100.0, nan, Rules(min_volume=500.0), "volume 112 is below min_volume 500"),
        (80.0, 100.0, nan, Rules(min_volume=500.0), "volume 100 is below min_volume 500"),
        (80.0, 600.0, nan, Rules(min_volume=500.0), ""),
        # a ratio: the volume is its denominator
        (0.3, 0.2, 200.0, Rules(min_volume=500.0), "volume 200 is below min_volume 500"),
        (0.3, 0.2, 500.0, Rules(min_volume=500.0), ""),
        # both: min_abs_change is reported first
        (112.0, 100.0, 200.0, Rules(min_abs_change=15.0, min_volume=500.0), "change 12 is below min_abs_change 15"),
        (150.0, 100.0, 200.0, Rules(min_abs_change=15.0, min_volume=500.0), "volume 200 is below min_volume 500"),
        (150.0, 100.0, nan, Rules(), ""),  # no guardrails: nothing holds it back
    ],
)
def test_guardrail(actual: float, expected: float, volume: float, rules: Rules, reason: str) -> None:
    assert guardrail(actual, expected, volume, rules) == reason


# --------------------------------------------------------------------------- a share's sampling noise


def _var(p: float, n: float) -> float:
    return p * (1 - p) / n


@pytest.mark.parametrize(
    ("rate", "volume", "typical", "extra", "least"),
    [
        # 12 sessions at 2% where 5,000 is usual: the excess binomial variance is added
        (0.02, 12.0, 5000.0, math.sqrt(_var(0.02, 12) - _var(0.02, 5000)), math.sqrt(_var(0.02, 12)) + 0.5 / 12 / Z99),
        # a period as large as usual or larger adds nothing: the band already holds its noise
        (0.02, 5000.0, 5000.0, 0.0, math.sqrt(_var(0.02, 5000)) + 0.5 / 5000 / Z99),
        (0.02, 50_000.0, 5000.0, 0.0, math.sqrt(_var(0.02, 50_000)) + 0.5 / 50_000 / Z99),
        # no typical volume yet: all of the period's binomial noise
        (0.02, 12.0, nan, math.sqrt(_var(0.02, 12)), math.sqrt(_var(0.02, 12)) + 0.5 / 12 / Z99),
        # an expected share outside 0..1 is clipped: no noise but the half count
        (1.2, 10.0, 1000.0, 0.0, 0.5 / 10 / Z99),
        (-0.1, 10.0, 1000.0, 0.0, 0.5 / 10 / Z99),
    ],
)
def test_sampling_sigma(rate: float, volume: float, typical: float, extra: float, least: float) -> None:
    got_extra, got_least = sampling_sigma(rate, volume, typical, Z99)
    assert got_extra == pytest.approx(extra, rel=1e-12, abs=1e-15)
    assert got_least == pytest.approx(least, rel=1e-12)


# --------------------------------------------------------------------------- severity and the anomaly


@pytest.mark.parametrize(
    ("actual", "lower", "upper", "is_bad", "expected"),
    [
        (85.0, 90.0, 110.0, True, Severity.WARNING),
        (80.5, 90.0, 110.0, True, Severity.WARNING),  # 1.95 half-widths out
        (80.0, 90.0, 110.0, True, Severity.CRITICAL),  # exactly CRITICAL_EXCESS half-widths
        (60.0, 90.0, 110.0, True, Severity.CRITICAL),
        (130.0, 95.0, 120.0, True, Severity.WARNING),  # measured against the upper side: 1.5
        (89.0, 95.0, 120.0, True, Severity.CRITICAL),  # against the lower side: 2.2
        (100.5, 100.0, 100.0, True, Severity.CRITICAL),  # a zero-width side: infinitely far out
        (160.0, 90.0, 110.0, False, Severity.GOOD_NEWS),  # the good way is good news however far
    ],
)
def test_severity(actual: float, lower: float, upper: float, is_bad: bool, expected: Severity) -> None:
    assert CRITICAL_EXCESS == 2.0
    assert severity(actual, 100.0, lower, upper, is_bad) is expected


def _judgement(actual: float, alert: bool = True, direction: str = "down") -> Judgement:
    return Judgement(T0, actual, 100.0, 90.0, 110.0, 0.999, True, "", alert=alert, direction=direction,
                     run_length=2, model="ets", notice="new", episode=True)


def test_to_anomaly_carries_the_judgement() -> None:
    series = KPISeries("sessions", pd.Series([1.0], index=[T0]), "D", {"device": "mobile"})
    anomaly = to_anomaly(series, _judgement(70.0), Rules(good=UP, level=0.95), unit="%")
    assert anomaly is not None
    assert (anomaly.kpi, anomaly.segment, anomaly.period, anomaly.freq) == ("sessions", {"device": "mobile"}, T0, "D")
    assert (anomaly.actual, anomaly.expected, anomaly.lower, anomaly.upper) == (70.0, 100.0, 90.0, 110.0)
    assert (anomaly.direction, anomaly.is_bad, anomaly.severity) == (DOWN, True, Severity.CRITICAL)
    assert (anomaly.score, anomaly.model, anomaly.unit, anomaly.run_length, anomaly.level) == (0.999, "ets", "%", 2, 0.95)
    assert anomaly.deviation == pytest.approx(-0.3)


@pytest.mark.parametrize(
    ("judgement", "rules", "expected"),
    [
        (_judgement(70.0, alert=False), Rules(), None),  # anomalous but not an alert: no anomaly
        (_judgement(85.0), Rules(good=UP), (DOWN, True, Severity.WARNING)),
        (_judgement(130.0, direction="up"), Rules(good=UP, good_news=True), (UP, False, Severity.GOOD_NEWS)),
        (_judgement(130.0, direction="up"), Rules(good=DOWN), (UP, True, Severity.CRITICAL)),
        (_judgement(130.0, direction="up"), Rules(), (UP, True, Severity.CRITICAL)),  # no good way: both bad
    ],
)
def test_to_anomaly_direction_and_severity(judgement: Judgement, rules: Rules, expected: tuple | None) -> None:
    series = KPISeries("sessions", pd.Series([1.0], index=[T0]), "D")
    anomaly = to_anomaly(series, judgement, rules)
    assert (None if anomaly is None else (anomaly.direction, anomaly.is_bad, anomaly.severity)) == expected


# --------------------------------------------------------------------------- Rules


@pytest.mark.parametrize(
    ("rules", "alerts_up", "alerts_down"),
    [
        (Rules(), True, True),
        (Rules(good=UP), False, True),
        (Rules(good=UP, good_news=True), True, True),
        (Rules(good=DOWN), True, False),
        (Rules(good=DOWN, good_news=True), True, True),
        (Rules(good_news=True), True, True),
    ],
)
def test_which_way_alerts(rules: Rules, alerts_up: bool, alerts_down: bool) -> None:
    assert (rules.alerts_when(UP), rules.alerts_when(DOWN)) == (alerts_up, alerts_down)
    # only the good way is ever good news
    assert (rules.is_bad(UP), rules.is_bad(DOWN)) == (rules.good is not UP, rules.good is not DOWN)


@pytest.mark.parametrize(
    ("rules", "events", "line"),
    [
        (Rules(), "", "level 0.99, alerts either way, for_periods 1"),
        (Rules(good=UP), "", "level 0.99, alerts when down (good: up), for_periods 1"),
        (Rules(good=DOWN, good_news=True, level=0.95), "", "level 0.95, alerts either way (good news when down), for_periods 1"),
        (Rules(good=UP, min_abs_change=2.5, min_volume=100, for_periods=3), "",
         "level 0.99, alerts when down (good: up), min_abs_change 2.5, min_volume 100, for_periods 3"),
        (Rules(), "holidays of NL", "level 0.99, alerts either way, for_periods 1, event_margin 0.15 (holidays of NL)"),
        (Rules(event_margin=0.0), "holidays of NL", "level 0.99, alerts either way, for_periods 1"),
    ],
)
def test_rules_describe(rules: Rules, events: str, line: str) -> None:
    assert rules.describe(events) == line


def test_rules_from_kpi() -> None:
    kpi = KPIConfig(metric="ad_cost", good="down", level=0.95, min_volume=20, min_abs_change=2.0,
                    for_periods=2, good_news=True, event_margin=0.3)
    assert Rules.from_kpi(kpi, repeat_hours=6.0) == Rules(DOWN, True, 0.95, 20.0, 2.0, 2, 0.3, 6.0)
    assert Rules.from_kpi(KPIConfig(metric="sessions")) == Rules(good=UP)  # a configured KPI's good way is up


RATE = RatioConfig(numerator="conversions", denominator="sessions")


@pytest.mark.parametrize(
    ("kpi", "share"),
    [
        (KPIConfig(ratio=RATE, unit="%"), True),  # a conversion rate: a share of its sessions
        (KPIConfig(ratio=RatioConfig(numerator="cost", denominator="clicks"), unit="EUR"), False),  # CPC
        (KPIConfig(metric="sessions", unit="%"), False),  # not a ratio
    ],
)
def test_detector_for_kpi(kpi: KPIConfig, share: bool) -> None:
    calendar = Calendar("NL")
    detector = Detector.for_kpi(kpi, "D", calendar, "Europe/Amsterdam", repeat_hours=48.0)
    assert detector.share is share
    assert detector.rules == Rules.from_kpi(kpi, 48.0)
    assert (detector.model, detector.model_params, detector.calendar, detector.timezone) == (
        kpi.model, kpi.model_params, calendar, "Europe/Amsterdam")
    assert detector.plan.repeat_after == 2  # 48 hours of days
    # The same settings are the same detector (a stored state stays valid), others are not.
    assert Detector.for_kpi(kpi, "D", calendar, "Europe/Amsterdam", 48.0).fingerprint == detector.fingerprint
    assert Detector.for_kpi(kpi, "D", calendar, "UTC", 48.0).fingerprint != detector.fingerprint


def test_a_calendar_is_for_daily_data_only() -> None:
    assert Detector(freq="D", calendar=Calendar("NL")).calendar == Calendar("NL")
    assert Detector(freq="h", calendar=Calendar("NL")).calendar is None


# --------------------------------------------------------------------------- the plan of each frequency

H_LEVEL = 1 - 0.01 / 24


@pytest.mark.parametrize(
    ("freq", "plan"),
    [
        # (season, level, refit_every, train_window, accept_after, repeat_after, calm_after, min_fit)
        ("D", (7, 0.99, 100, 200, 3, 1, 1, 60)),
        ("h", (24, H_LEVEL, 168, 200, 24, 24, 12, 60)),
        ("5min", (288, 1 - 0.01 / 288, 2016, 2016, 288, 288, 144, 60)),
        ("W-SUN", (52, 0.99, 208, 208, 3, 1, 1, 30)),
        ("MS", (12, 0.99, 100, 200, 3, 1, 1, 30)),
    ],
)
def test_the_plan_of_each_frequency(freq: str, plan: tuple) -> None:
    p = make_plan(freq, Rules())
    got = (p.season, p.level, p.refit_every, p.train_window, p.accept_after, p.repeat_after, p.calm_after, p.min_fit)
    assert got == pytest.approx(plan, rel=1e-12)


def test_the_plan_follows_the_rules_and_the_overrides() -> None:
    plan = make_plan("D", Rules(level=0.95, repeat_hours=96), refit_every=10, train_window=50, accept_after=7)
    assert (plan.level, plan.repeat_after, plan.calm_after) == (0.95, 4, 2)
    assert (plan.refit_every, plan.train_window, plan.accept_after) == (10, 50, 7)


# --------------------------------------------------------------------------- the history a series needs


@pytest.mark.parametrize(("freq", "need"), [("D", 91), ("h", 91), ("5min", 91), ("W-SUN", 61), ("MS", 61)])
def test_history_needed(freq: str, need: int) -> None:
    assert history_needed(freq) == need
    assert need == (MIN_FIT if freq in ("D", "h", "5min") else MIN_CALIBRATION) + MIN_CALIBRATION + 1


@pytest.mark.parametrize(("freq", "season"), [("D", 7), ("h", 24), ("W-SUN", 52), ("MS", 12)])
@pytest.mark.parametrize("extra", [-1, 0, 5])
def test_the_first_judged_period_is_the_one_history_needed_promises(freq: str, season: int, extra: int) -> None:
    need = history_needed(freq)
    series = series_of(make_series(freq=freq, periods=need + extra, season=season, seed=2))
    judged = [j for j in walk_forward(Detector(freq=series.freq), series) if not math.isnan(j.score)]
    assert len(judged) == max(extra + 1, 0)


# --------------------------------------------------------------------------- calibration


@settings(max_examples=200, deadline=None, database=None)
@given(values=st.lists(st.floats(0.0, 1e6), min_size=1, max_size=60), q=st.floats(0.0, 1.0))
def test_quantile_is_numpys_linear_quantile(values: list[float], q: float) -> None:
    array = np.asarray(values)
    assert quantile(array, q) == pytest.approx(float(np.quantile(array, q)), rel=1e-12, abs=1e-9)


@pytest.mark.parametrize(
    ("errors", "floor", "sigma"),
    [
        (np.linspace(0.0, 10.0, 101), 0.0, float(np.quantile(np.linspace(0.0, 10.0, 101), 0.99)) / NORMAL_Q99),
        (np.zeros(50), 0.25, 0.25),  # a flat stretch: the floor, never a zero band
        (np.array([]), 0.5, 0.5),
        (np.full(40, 2.576), 0.0, 2.576 / NORMAL_Q99),
    ],
)
def test_error_tail_sigma(errors: np.ndarray, floor: float, sigma: float) -> None:
    tail = ErrorTail.from_errors(errors, floor)
    assert tail.sigma == pytest.approx(sigma, rel=1e-12)
    for level in (0.8, 0.95, 0.99):
        half = tail.half_width(level)
        assert half == pytest.approx(sigma * z_value(level), rel=1e-12)
        assert tail.score(half) == pytest.approx(level, abs=1e-12)  # the score is the level at the edge
    assert tail.score(0.0) == 0.0


# --------------------------------------------------------------------------- change of behaviour


@pytest.mark.parametrize(
    ("later", "flags"),
    [
        (0.8, False),  # errors as usual
        (3.5, True),  # errors of 3.5 sigmas period after period: the series behaves differently
    ],
)
def test_behaviour_shift(later: float, flags: bool) -> None:
    rng = np.random.default_rng(0)
    shift = BehaviourShift()
    assert not any(shift.update(abs(z)) for z in rng.normal(size=400))
    assert any(shift.update(later) for _ in range(10)) is flags


def test_behaviour_shift_is_silent_until_it_has_a_history() -> None:
    shift = BehaviourShift(min_history=300)
    assert not any(shift.update(z) for z in [0.1] * 290 + [4.0] * 10)  # 300 short means: none read yet
    assert shift.update(4.0)  # the 301st reads them


# --------------------------------------------------------------------------- the stepping contract


def test_step_takes_only_the_next_period() -> None:
    series = series_of(make_series(periods=20, seed=1))
    detector = Detector()
    state = detector.new_state(series)
    assert state.last_period is None
    first = series.values.index[0]
    with pytest.raises(ValueError, match="step: expected the period"):
        detector.step(state, first + pd.Timedelta(days=1), 1.0)
    state, judgement = detector.step(state, first, 100.0)
    assert judgement.period == first and math.isnan(judgement.score)
    assert judgement.reason == "history: too few values for a first fit yet"
    assert (state.position, state.last_period, state.next_period) == (1, first, first + pd.Timedelta(days=1))


def test_advance_goes_on_from_the_state_and_only_as_far_as_asked() -> None:
    series = series_of(make_series(periods=120, seed=1))
    index = series.values.index
    detector = Detector()
    state, first = detector.advance(None, series, index[99])
    assert [j.period for j in first] == list(index[:100])
    same, none = detector.advance(state, series, index[50])  # already past it
    assert none == [] and same is state
    state, rest = detector.advance(state, series, index[-1] + pd.Timedelta(days=2))  # beyond the data: gaps
    assert [j.period for j in rest] == list(pd.date_range(index[100], periods=22, freq="D"))
    assert [j.reason for j in rest[-2:]] == ["no data", "no data"]


def test_a_state_from_other_settings_is_rebuilt() -> None:
    series = series_of(make_series(periods=120, seed=1))
    state = Detector(Rules(level=0.95)).warm_up(series)
    other = Detector()
    rebuilt, judgements = other.advance(state, series, series.values.index[-1])
    assert len(judgements) == 120  # walked again from the first period
    assert rebuilt.fingerprint == other.fingerprint
    assert [(j.lower, j.upper) for j in judgements[95:]] == [(j.lower, j.upper) for j in walk_forward(other, series)[95:]]


def test_walk_forward_reports_from_start_to_end() -> None:
    series = series_of(make_series(periods=120, seed=1))
    index = series.values.index
    everything = walk_forward(Detector(), series)
    window = walk_forward(Detector(), series, start=index[100], end=index[109])
    assert [j.period for j in window] == list(index[100:110])
    assert [j.upper for j in window] == [j.upper for j in everything[100:110]]
