"""Tests of the interval detector: `judge` (score, band, guardrails), and `anomaly_at` on top of
`judge_series` (direction, severity, "for N periods", run length), on tiny hand-built series.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecaster.detect import CRITICAL_EXCESS, MIN_RELATIVE_HALF_WIDTH, Rules, anomaly_at, judge, judge_series
from forecaster.models import fit_forecast
from forecaster.models.base import z_value
from forecaster.settings import KPIConfig
from forecaster.types import Anomaly, Direction, Forecast, KPISeries, Severity

nan = float("nan")
T0 = pd.Timestamp("2025-12-01", tz="UTC")
UP, DOWN = Direction.UP, Direction.DOWN


def _judge(actual: float, expected: float = 100.0, lower: float = 90.0, upper: float = 110.0, **kwargs: object):
    """judge() on one period with the default rules unless `rules=` is given."""
    rules = kwargs.pop("rules", Rules())
    return judge(T0, actual, expected, lower, upper, rules, **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- judge: the band


@pytest.mark.parametrize(
    ("actual", "is_anomaly"),
    [(100.0, False), (105.0, False), (95.0, False), (110.0, False), (90.0, False),
     (110.5, True), (89.5, True), (150.0, True), (0.0, True)],
)
def test_inside_the_band_is_not_an_anomaly_outside_is(actual: float, is_anomaly: bool) -> None:
    judgement = _judge(actual)
    assert judgement.is_anomaly is is_anomaly
    assert judgement.reason == ""
    assert (judgement.period, judgement.actual, judgement.expected) == (T0, actual, 100.0)
    assert (judgement.lower, judgement.upper) == pytest.approx((90.0, 110.0))


@pytest.mark.parametrize("level", [0.8, 0.95, 0.99])
@pytest.mark.parametrize(("lower", "upper"), [(90.0, 110.0), (95.0, 120.0), (60.0, 101.5)])
def test_score_equals_level_at_either_edge(level: float, lower: float, upper: float) -> None:
    rules = Rules(level=level)
    assert _judge(upper, lower=lower, upper=upper, rules=rules).score == pytest.approx(level, abs=1e-9)
    assert _judge(lower, lower=lower, upper=upper, rules=rules).score == pytest.approx(level, abs=1e-9)


def test_score_is_measured_in_units_of_each_side_of_the_band() -> None:
    # Band 100 (-5, +20): half-way to the upper edge (110) scores like half-way to the lower (97.5).
    up = _judge(110.0, lower=95.0, upper=120.0).score
    down = _judge(97.5, lower=95.0, upper=120.0).score
    assert up == pytest.approx(down, abs=1e-12)
    assert up == pytest.approx(math.erf(z_value(0.99) / 2 / math.sqrt(2)), abs=1e-12)


@pytest.mark.parametrize("side", [1.0, -1.0])
def test_score_is_monotone_in_distance_and_within_0_1(side: float) -> None:
    distances = [0.0, 1.0, 5.0, 9.9, 10.0, 10.1, 15.0, 20.0, 30.0, 50.0, 1e6]
    scores = [_judge(100.0 + side * d).score for d in distances]
    assert scores[0] == 0.0
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert all(a < b for a, b in zip(scores[:8], scores[1:9], strict=True))  # strictly up to 3 half-widths
    assert all(a <= b for a, b in zip(scores, scores[1:], strict=False))


@pytest.mark.parametrize("rules", [Rules(), Rules(min_abs_change=5.0, min_volume=10.0)])
def test_missing_actual_is_no_data(rules: Rules) -> None:
    judgement = _judge(nan, rules=rules)
    assert judgement.reason == "no data"
    assert judgement.is_anomaly is False
    assert judgement.score == 0.0


# --------------------------------------------------------------------------- judge: guardrails


@pytest.mark.parametrize(
    ("actual", "rules", "volume", "is_anomaly", "reason"),
    [
        (112.0, Rules(min_abs_change=15.0), nan, False, "change 12 is below min_abs_change 15"),
        (84.5, Rules(min_abs_change=15.0), nan, True, ""),  # a change of 15.5 passes
        (88.0, Rules(min_abs_change=15.0), nan, False, "change 12 is below min_abs_change 15"),
        (116.0, Rules(min_abs_change=15.0), nan, True, ""),
        (105.0, Rules(min_abs_change=15.0), nan, False, ""),  # inside: no guardrail reason at all
        # a count: the volume is the larger of actual and expected
        (112.0, Rules(min_volume=500.0), nan, False, "volume 112 is below min_volume 500"),
        (80.0, Rules(min_volume=500.0), nan, False, "volume 100 is below min_volume 500"),
        # a ratio: the volume is its denominator
        (112.0, Rules(min_volume=500.0), 200.0, False, "volume 200 is below min_volume 500"),
        (112.0, Rules(min_volume=500.0), 500.0, True, ""),
        # both: min_abs_change is reported first
        (112.0, Rules(min_abs_change=15.0, min_volume=500.0), 200.0, False, "change 12 is below min_abs_change 15"),
    ],
)
def test_guardrails(actual: float, rules: Rules, volume: float, is_anomaly: bool, reason: str) -> None:
    judgement = _judge(actual, rules=rules, volume=volume)
    assert (judgement.is_anomaly, judgement.reason) == (is_anomaly, reason)


@pytest.mark.parametrize(
    ("actual", "is_anomaly"),
    [(100.5, False), (99.5, False), (100.99, False), (101.01, True), (98.9, True)],
)
def test_zero_width_band_is_floored(actual: float, is_anomaly: bool) -> None:
    # A constant forecast (band of width 0) still gets 1% of expected on each side.
    judgement = _judge(actual, expected=100.0, lower=100.0, upper=100.0)
    assert MIN_RELATIVE_HALF_WIDTH == 0.01
    assert judgement.is_anomaly is is_anomaly
    assert (judgement.lower, judgement.upper) == pytest.approx((99.0, 101.0))


@pytest.mark.parametrize(
    ("volume", "is_anomaly"),
    [(12.0, False), (50_000.0, True), (5_000.0, True)],
)
def test_proportion_with_a_tiny_denominator_is_not_an_anomaly(volume: float, is_anomaly: bool) -> None:
    # 1 conversion out of 12 sessions (8.3%) against a 2.0% +- 0.1 point band, typical volume 5,000.
    judgement = _judge(1 / 12, expected=0.02, lower=0.019, upper=0.021, volume=volume,
                       typical_volume=5000.0, proportion=True)
    assert judgement.is_anomaly is is_anomaly


def test_tiny_denominator_widens_the_band_by_the_binomial_excess() -> None:
    p, z = 0.02, z_value(0.99)
    extra = p * (1 - p) / 12 - p * (1 - p) / 5000
    judgement = _judge(1 / 12, expected=p, lower=0.019, upper=0.021, volume=12.0, typical_volume=5000.0,
                       proportion=True)
    widened = math.hypot(0.001 / z, math.sqrt(extra))
    sampling = math.sqrt(p * (1 - p) / 12) + 0.5 / 12 / z  # the floor: sampling noise + half a count
    assert judgement.upper == pytest.approx(p + z * max(widened, sampling), rel=1e-12)
    # Not a proportion (e.g. CPA in euro): the same numbers are judged on the model band alone.
    plain = _judge(1 / 12, expected=p, lower=0.019, upper=0.021, volume=12.0, typical_volume=5000.0)
    assert plain.is_anomaly is True


@pytest.mark.parametrize(
    ("actual", "on_event", "is_anomaly"),
    [(120.0, False, True), (120.0, True, False), (80.0, True, False), (124.0, True, False),
     (126.0, True, True), (74.0, True, True)],
)
def test_event_widens_the_band_by_event_margin(actual: float, on_event: bool, is_anomaly: bool) -> None:
    judgement = _judge(actual, rules=Rules(event_margin=0.15), on_event=on_event)
    assert judgement.is_anomaly is is_anomaly
    width = 25.0 if on_event else 10.0  # 10 from the model + 15% of 100
    assert (judgement.lower, judgement.upper) == pytest.approx((100.0 - width, 100.0 + width))


@settings(max_examples=300, deadline=None, database=None)
@given(
    expected=st.floats(-1e6, 1e6),
    below=st.floats(0.0, 1e5),
    above=st.floats(0.0, 1e5),
    actual=st.floats(-1e7, 1e7),
    level=st.floats(0.51, 0.999),
    on_event=st.booleans(),
)
def test_score_and_flag_agree(
    expected: float, below: float, above: float, actual: float, level: float, on_event: bool
) -> None:
    judgement = judge(T0, actual, expected, expected - below, expected + above, Rules(level=level),
                      on_event=on_event)
    assert 0.0 <= judgement.score <= 1.0
    assert judgement.lower <= expected <= judgement.upper
    if judgement.is_anomaly:
        assert judgement.score >= level - 1e-9
    elif judgement.lower < actual < judgement.upper:
        assert judgement.score <= level + 1e-9


# --------------------------------------------------------------------------- anomaly_at


def _series(actuals: list[float], name: str = "sessions", denominator: list[float] | None = None) -> KPISeries:
    index = pd.date_range(T0, periods=len(actuals), freq="D")
    den = None if denominator is None else pd.Series(denominator, index=index, dtype="float64")
    return KPISeries(name, pd.Series(actuals, index=index, dtype="float64"), "D", {"device": "mobile"}, den)


def _forecast(index: pd.DatetimeIndex, mean: float = 100.0, half: float = 10.0) -> Forecast:
    m = pd.Series(mean, index=index, dtype="float64")
    return Forecast(m, m - half, m + half, 0.99, "ets")


def _anomaly(actuals: list[float], rules: Rules) -> Anomaly | None:
    series = _series(actuals)
    judgements = judge_series(series, _forecast(series.values.index), rules)
    return anomaly_at(series, judgements, rules, "ets", unit="")


# Band 100 +- 10 every period; only the last period can raise. Expected: None, or
# (direction, is_bad, severity, run_length). Critical at |actual - expected| >= 2 half-widths.
ANOMALY_CASES = [
    # good = up (sessions): a fall is bad
    pytest.param([100, 100, 100, 100, 85], Rules(good=UP), (DOWN, True, Severity.WARNING, 1), id="up-fall-warning"),
    pytest.param([100, 100, 100, 100, 80.5], Rules(good=UP), (DOWN, True, Severity.WARNING, 1), id="up-fall-1.95"),
    pytest.param([100, 100, 100, 100, 80], Rules(good=UP), (DOWN, True, Severity.CRITICAL, 1), id="up-fall-2.0"),
    pytest.param([100, 100, 100, 100, 60], Rules(good=UP), (DOWN, True, Severity.CRITICAL, 1), id="up-fall-crit"),
    pytest.param([100, 100, 100, 100, 95], Rules(good=UP), None, id="up-inside"),
    pytest.param([100, 100, 100, 100, 125], Rules(good=UP), None, id="up-rise-quiet"),
    pytest.param([100, 100, 100, 100, 125], Rules(good=UP, good_news=True), (UP, False, Severity.GOOD_NEWS, 1),
                 id="up-rise-good-news"),
    pytest.param([100, 100, 100, 100, 85], Rules(good=UP, good_news=True), (DOWN, True, Severity.WARNING, 1),
                 id="up-fall-with-good-news-on"),
    # good = down (CPA): a rise is bad
    pytest.param([100, 100, 100, 100, 115], Rules(good=DOWN), (UP, True, Severity.WARNING, 1), id="down-rise"),
    pytest.param([100, 100, 100, 100, 130], Rules(good=DOWN), (UP, True, Severity.CRITICAL, 1), id="down-rise-crit"),
    pytest.param([100, 100, 100, 100, 80], Rules(good=DOWN), None, id="down-fall-quiet"),
    pytest.param([100, 100, 100, 100, 80], Rules(good=DOWN, good_news=True), (DOWN, False, Severity.GOOD_NEWS, 1),
                 id="down-fall-good-news"),
    # for N periods and run length
    pytest.param([100, 100, 85, 85, 85], Rules(for_periods=3), (DOWN, True, Severity.WARNING, 3), id="for3-met"),
    pytest.param([100, 100, 100, 85, 85], Rules(for_periods=3), None, id="for3-two-only"),
    pytest.param([100, 100, 115, 85, 85], Rules(for_periods=3), None, id="for3-other-way-breaks"),
    pytest.param([85, 85, nan, 85, 85], Rules(for_periods=3), None, id="for3-gap-breaks"),
    pytest.param([85, 95, 85, 85, 85], Rules(for_periods=3), (DOWN, True, Severity.WARNING, 3), id="for3-run-3"),
    pytest.param([85, 85, 85, 85, 70], Rules(for_periods=3), (DOWN, True, Severity.CRITICAL, 5), id="run-5"),
    pytest.param([85, 85, 100, 85, 85], Rules(), (DOWN, True, Severity.WARNING, 2), id="run-2"),
    # the last period decides
    pytest.param([85, 85, 85, 85, 100], Rules(), None, id="last-inside"),
    pytest.param([85, 85, 85, 85, nan], Rules(), None, id="last-no-data"),
    pytest.param([100, 100, 100, 100, 85], Rules(min_abs_change=20.0), None, id="last-guardrail"),
]


@pytest.mark.parametrize(("actuals", "rules", "expected"), ANOMALY_CASES)
def test_anomaly_at(actuals: list[float], rules: Rules, expected: tuple | None) -> None:
    anomaly = _anomaly(actuals, rules)
    if expected is None:
        assert anomaly is None
        return
    assert anomaly is not None
    assert (anomaly.direction, anomaly.is_bad, anomaly.severity, anomaly.run_length) == expected


def test_anomaly_fields() -> None:
    rules = Rules(level=0.95, good=UP)
    series = _series([100, 100, 70])
    judgements = judge_series(series, _forecast(series.values.index), rules)
    anomaly = anomaly_at(series, judgements, rules, "prophet", unit="%")
    assert anomaly is not None
    assert anomaly.kpi == "sessions"
    assert anomaly.segment == {"device": "mobile"}
    assert anomaly.period == T0 + pd.Timedelta(days=2)
    assert anomaly.freq == "D"
    assert (anomaly.actual, anomaly.expected, anomaly.lower, anomaly.upper) == pytest.approx((70, 100, 90, 110))
    assert (anomaly.model, anomaly.unit, anomaly.level) == ("prophet", "%", 0.95)
    assert anomaly.score == judgements[-1].score
    assert anomaly.deviation == pytest.approx(-0.3)
    assert CRITICAL_EXCESS == 2.0 and anomaly.severity is Severity.CRITICAL


def test_no_judgements_no_anomaly() -> None:
    assert anomaly_at(_series([100]), [], Rules(), "ets") is None


def test_judge_series_judges_every_forecast_period() -> None:
    series = _series([100, 150, nan])
    forecast = _forecast(pd.date_range(T0, periods=4, freq="D"))  # one period beyond the data
    judgements = judge_series(series, forecast, Rules())
    assert [j.period for j in judgements] == list(forecast.mean.index)
    assert [j.is_anomaly for j in judgements] == [False, True, False, False]
    assert [j.reason for j in judgements] == ["", "", "no data", "no data"]


def test_judge_series_event_periods_widen_only_those() -> None:
    series = _series([120, 120])
    forecast = _forecast(series.values.index)
    judgements = judge_series(series, forecast, Rules(event_margin=0.15), frozenset({T0}))
    assert [j.is_anomaly for j in judgements] == [False, True]


@pytest.mark.parametrize(("last_sessions", "is_anomaly"), [(12.0, False), (50_000.0, True)])
def test_judge_series_conversion_rate_on_few_sessions(last_sessions: float, is_anomaly: bool) -> None:
    # 35 ordinary days at 2% of 5,000 sessions, then a day at 8.3%.
    rates = [0.02] * 35 + [1 / 12]
    sessions = [5000.0] * 35 + [last_sessions]
    series = _series(rates, name="conversion_rate", denominator=sessions)
    last = series.values.index[-1:]
    forecast = _forecast(last, mean=0.02, half=0.001)
    [judgement] = judge_series(series, forecast, Rules())
    assert judgement.is_anomaly is is_anomaly


def test_rules_from_kpi() -> None:
    kpi = KPIConfig(metric="ad_cost", good="down", level=0.95, min_volume=20, min_abs_change=2.0,
                    for_periods=2, good_news=True, event_margin=0.3)
    assert Rules.from_kpi(kpi) == Rules(DOWN, 0.95, 20.0, 2.0, 2, True, 0.3)


# --------------------------------------------------------------------------- end to end


@pytest.mark.parametrize(("pct", "flagged"), [(0.0, 0), (0.4, 7)])
def test_a_drop_is_caught_end_to_end(
    make_series: Callable[..., pd.Series], with_drop: Callable[..., pd.Series], pct: float, flagged: int
) -> None:
    # 113 ordinary days, then a week at (1 - pct) of normal; the model sees only the 113 days.
    values = with_drop(make_series(periods=120, seed=7), 113, pct)
    forecast = fit_forecast(values.iloc[:113], "seasonal_naive", 7, 0.99)
    series = KPISeries("sessions", values, "D")
    judgements = judge_series(series, forecast, Rules())
    anomaly = anomaly_at(series, judgements, Rules(), forecast.model)
    assert sum(j.is_anomaly for j in judgements) == flagged
    if flagged:
        assert anomaly is not None
        assert (anomaly.direction, anomaly.is_bad, anomaly.severity, anomaly.run_length) == (
            DOWN, True, Severity.CRITICAL, 7)
        assert anomaly.deviation == pytest.approx(-pct, abs=0.1)
    else:
        assert anomaly is None


@pytest.mark.parametrize(
    ("actual", "volume", "is_anomaly"),
    [(0.0, 10.0, False), (0.0, 50_000.0, True), (0.05, 50_000.0, True)],
)
def test_a_share_band_is_never_narrower_than_its_sampling_noise(actual: float, volume: float, is_anomaly: bool) -> None:
    # A model calibrated on a mostly-zero history (seasonal naive repeating 1 order of 5 sessions)
    # says 20% +- 10 points; 0 orders out of 10 sessions happens 11% of the time at 20%.
    judgement = _judge(actual, expected=0.2, lower=0.1, upper=0.3, volume=volume, typical_volume=volume,
                       proportion=True)
    assert judgement.is_anomaly is is_anomaly
