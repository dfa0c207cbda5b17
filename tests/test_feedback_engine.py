"""Feedback on alerts changes what the one engine does next (issue 19, the engine's part).

A false alarm widens the series' band (x1.25 per fresh one, a 30-day half-life, at most x1.95);
a period marked expected is normal: not alerted, the model carries on from its forecast over it
(as over a calendar event day), its error does not size the band. Applied the same whether a state is stepped or rebuilt by walking forward.
"""

from __future__ import annotations

import copy
import math
import pickle
from functools import cache
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_series

from forecaster.demo import DEMO_END, INCIDENTS
from forecaster.detect import Detector, SeriesFeedback, pack_state, unpack_state, walk_forward
from forecaster.detect.engine import feedback_changed
from forecaster.detect.feedback import BAND_STEP, MAX_STEPS
from forecaster.detect.reasons import EXPECTED as EXPECTED_REASON
from forecaster.kpis import kpi_series
from forecaster.pipeline import check, detector_of, evaluate_chunk
from forecaster.settings import Settings, load_config
from forecaster.sources import make_source
from forecaster.types import KPISeries, segment_key

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "config" / "kpiwatch.yaml"
LAST = pd.Timestamp(DEMO_END, tz="UTC")
END = pd.Timestamp("2025-12-10", tz="UTC")  # the end of the period judged in the table
DAY = pd.Timedelta(days=1)


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


# -- the rule, by hand ---------------------------------------------------------------------------

SCALES = [  # (false alarms given, the band's factor for the period ending at END)
    ((), 1.0),
    ((END - pd.Timedelta(seconds=1),), 1.25),  # one fresh
    ((END - pd.Timedelta(seconds=1),) * 5, 1.25 ** 3),  # five fresh: the bound, not 1.25 ** 5
    ((END - 30 * DAY,), 1.25 ** 0.5),  # a month old: weighs a half
    ((END - 30 * DAY,) * 2, 1.25),  # two a month old: one step
    ((END - 60 * DAY,), 1.25 ** 0.25),
    ((END,), 1.0),  # given as the period ends: it applies from the next period
    ((END + DAY,), 1.0),  # given after the period: never applied to it
    ((END + DAY, END - 30 * DAY), 1.25 ** 0.5),
]


@pytest.mark.parametrize(("given", "scale"), SCALES)
def test_band_scale_by_hand(given: tuple[pd.Timestamp, ...], scale: float) -> None:
    assert SeriesFeedback(given).band_scale(END) == pytest.approx(scale, rel=1e-6)


def test_the_bound_is_three_steps() -> None:
    assert BAND_STEP ** MAX_STEPS == pytest.approx(1.953125)
    many = SeriesFeedback((END - DAY,) * 50)
    assert many.band_scale(END) == pytest.approx(1.953125)


@pytest.mark.parametrize(("given", "at", "text"), [
    ((), END, ""),
    ((END + DAY,), END, ""),
    ((utc("2025-12-03 09:00"),), utc("2025-12-03 09:00:01"), "sensitivity lowered: band ×1.25 after 1 false alarm (last 2025-12-03)"),
    ((utc("2025-11-03"), utc("2025-12-03")), utc("2025-12-03 00:00:01"),
     "sensitivity lowered: band ×1.40 after 2 false alarms (last 2025-12-03)"),
])
def test_describe(given: tuple[pd.Timestamp, ...], at: pd.Timestamp, text: str) -> None:
    assert SeriesFeedback(given).describe(at) == text


@pytest.mark.parametrize(("period", "expected"), [
    ("2025-09-15", False), ("2025-09-16", True), ("2025-09-17", True), ("2025-09-18", False), ("2025-10-01", True),
])
def test_is_expected_inclusive_ranges(period: str, expected: bool) -> None:
    feedback = SeriesFeedback(expected=((utc("2025-09-16"), utc("2025-09-17")), (utc("2025-10-01"), utc("2025-10-01"))))
    assert feedback.is_expected(utc(period)) is expected


def test_feedback_is_checked_small_and_picklable() -> None:
    with pytest.raises(ValueError, match="tz-aware"):
        SeriesFeedback((pd.Timestamp("2025-12-03"),))
    with pytest.raises(ValueError, match="start before it ends"):
        SeriesFeedback(expected=((utc("2025-12-03"), utc("2025-12-01")),))
    feedback = SeriesFeedback.of(["2025-12-03T08:00:00+01:00"], [("2025-09-16T00:00Z", "2025-09-17T00:00Z")])
    assert feedback.false_alarms == (utc("2025-12-03 07:00"),)
    blob = pickle.dumps(feedback)
    assert pickle.loads(blob) == feedback and len(blob) < 1000


# -- the engine ------------------------------------------------------------------------------------


def test_a_false_alarm_widens_the_band_and_the_score_follows() -> None:
    series = KPISeries("orders", make_series("D", 301, seed=5), "D")
    detector = Detector(freq="D")
    state, _ = detector.advance(None, series, series.values.index[-2])
    period = series.values.index[-1]
    feedback = SeriesFeedback((period,))  # given as the period starts: fresh at its end
    _, plain = detector.step(copy.deepcopy(state), period, 100.0)
    _, wider = detector.step(copy.deepcopy(state), period, 100.0, feedback=feedback)
    scale = feedback.band_scale(period + DAY)
    assert 1.24 < scale < 1.25
    assert wider.expected == plain.expected
    assert (wider.upper - wider.lower) == pytest.approx(scale * (plain.upper - plain.lower), rel=1e-12)
    # The score is read against the widened band: its edge scores the band's level, as always.
    _, edge = detector.step(copy.deepcopy(state), period, wider.upper, feedback=feedback)
    assert edge.score == pytest.approx(detector.plan.level, abs=1e-9)
    assert not edge.is_anomaly


@cache
def demo() -> Settings:
    return load_config(DEMO_CONFIG)


@cache
def demo_series(name: str, segment: str) -> tuple[Detector, KPISeries]:
    """A series of the demo config as `check` and replay read it, and its KPI's detector."""
    settings = demo()
    kpi = settings.kpi(name)
    frame = make_source(settings.sources["default"], settings.timezone, "default").fetch(
        kpi.metrics, kpi.dimensions, kpi.freq, end=LAST)
    series = next(s for s in kpi_series(name, kpi, frame) if segment_key(s.segment) == segment)
    return detector_of(settings, kpi), series


def in_incident(series: KPISeries, period: pd.Timestamp) -> bool:
    return any(i.start <= period.date() <= i.end and all(series.segment.get(k) == v for k, v in i.segment.items())
               for i in INCIDENTS)


def test_a_false_alarm_reduces_a_series_alerts_over_the_next_90_days_of_the_demo() -> None:
    """The issue's must-show. Email sessions over the demo's last 90 days (2025-09-12 .. 12-10)
    alert 4 times: 09-30 (up, nothing injected: a false alarm), 10-21 (the injected tracking
    outage), 11-25 and 12-02 (up, false). A false alarm given the morning after the first one
    leaves 2 alerts after it instead of 3: the outage still fires, 12-02 does not (its band
    x1.05 two months on); the band is at most 1.25x as wide (the bound: 1.95x)."""
    detector, series = demo_series("sessions", "channel=email")
    first = LAST - 89 * DAY
    plain = walk_forward(detector, series, first)
    false = [j for j in plain if j.alert and not in_incident(series, j.period)]
    assert false, "the window has a false alarm"
    given = false[0].period + pd.Timedelta(hours=30)  # the next morning, 08:00 in Amsterdam
    feedback = SeriesFeedback((given,))
    told = walk_forward(detector, series, first, feedback=feedback)
    plain_after = [j for j in plain if j.period + DAY > given]
    told_after = [j for j in told if j.period + DAY > given]
    alerts_before = sum(j.alert for j in plain_after)
    alerts_after = sum(j.alert for j in told_after)
    print(f"\nemail sessions {first:%Y-%m-%d}..{LAST:%Y-%m-%d}, false alarm given {given}: "
          f"{alerts_before} -> {alerts_after} alerts after it")
    assert alerts_after < alerts_before
    # The injected incident (the email tracking outage of 2025-10-21) still alerts.
    outage = [j.period for j in told_after if j.alert and in_incident(series, j.period)]
    assert outage == [utc("2025-10-21")]
    ratios = [(b.upper - b.lower) / (a.upper - a.lower) for a, b in zip(plain_after, told_after, strict=True)
              if not math.isnan(a.upper) and not math.isnan(b.upper)]
    assert max(ratios) <= BAND_STEP ** MAX_STEPS
    assert max(ratios) == pytest.approx(feedback.band_scale(plain_after[0].period + DAY), rel=0.05)
    # Before the false alarm was given nothing changed.
    assert [j for j in told if j.period + DAY <= given] == [j for j in plain if j.period + DAY <= given]


def test_a_press_mention_marked_expected_is_normal_for_the_model() -> None:
    """The demo's press mention (referral sessions x3 on 2025-09-16 and 17) marked expected: no
    alert; the model carries on from its forecast over those days (as over a calendar event day:
    neither pulled up by the x3 nor by the values clipped to the band's edge), and their errors
    are not in the band's memory (the next day's band is the one before them: 181.6 sessions,
    not 210.0). In the 28 days after, forecast errors as without the mark (within 5%) and at most
    one more alert: with the narrower band, 1,849 sessions on 26 Sep (upper edge 1,833) is good
    news at the edge, where the band widened by the spike said nothing (the raw values trained
    instead made 10 false alerts there)."""
    detector, series = demo_series("sessions", "channel=referral")
    first, last = utc("2025-09-16"), utc("2025-09-17")
    feedback = SeriesFeedback(expected=((first, last),))
    before, _ = detector.advance(None, series, first - DAY)
    errors_before = list(before.errors)
    plain_state, _ = detector.advance(None, series, last)
    told_state, _ = detector.advance(None, series, last, feedback=feedback)
    raw = series.values.loc[first:last].tolist()
    assert told_state.clean[-2:] == [j.expected for j in walk_forward(detector, series, first, last, feedback=feedback)]
    assert max(told_state.clean[-2:]) < min(plain_state.clean[-2:]) < min(raw)  # the spike does not lift the model
    assert told_state.errors == errors_before  # their errors do not size the band
    assert plain_state.errors != errors_before
    plain = {j.period: j for j in walk_forward(detector, series, first - DAY, last + 28 * DAY)}
    told = {j.period: j for j in walk_forward(detector, series, first - DAY, last + 28 * DAY, feedback=feedback)}
    assert [plain[first].alert, plain[last].alert] == [True, True]
    for period in (first, last):
        assert not told[period].alert and not told[period].is_anomaly
        assert told[period].reason == EXPECTED_REASON and math.isnan(told[period].score)
        assert not told[period].episode
    half = {p: (j.upper - j.lower) / 2 for p, j in told.items()}
    plain_half = {p: (j.upper - j.lower) / 2 for p, j in plain.items()}
    # The day after: the band of the day before the mention (its errors were not remembered),
    # narrower than the one that remembered the spike.
    assert half[last + DAY] == pytest.approx(plain_half[first])
    assert half[last + DAY] < plain_half[last + DAY]
    following = [p for p in told if p > last]
    assert sum(told[p].alert for p in following) <= sum(plain[p].alert for p in following) + 1
    # Mean |forecast error| 63 vs 61 sessions a day (with the raw values trained: 254).
    assert (sum(abs(told[p].actual - told[p].expected) for p in following)
            <= 1.05 * sum(abs(plain[p].actual - plain[p].expected) for p in following))
    print(f"\nreferral sessions, 28 days after the mention: alerts {sum(plain[p].alert for p in following)} without, "
          f"{sum(told[p].alert for p in following)} with it marked expected; mean |forecast error| "
          f"{sum(abs(plain[p].actual - plain[p].expected) for p in following) / len(following):.0f} vs "
          f"{sum(abs(told[p].actual - told[p].expected) for p in following) / len(following):.0f} sessions")


def test_a_stepped_state_and_a_rebuilt_walk_give_the_same_verdicts_with_feedback() -> None:
    """The daemon's way: each day the state is unpacked, stepped with the feedback known by then,
    packed. A false alarm is known from the morning after its alert; a range marked expected
    from the morning after its last day (the stepped state then judged it otherwise: it is
    rebuilt). Every verdict equals a fresh walk with the whole timeline, except those of the
    expected days judged before they were marked (the alert that was answered)."""
    detector, series = demo_series("sessions", "channel=email")
    first = LAST - 89 * DAY
    alarm = utc("2025-10-01 07:00")
    marked = (utc("2025-11-25"), utc("2025-11-26"))
    marked_at = marked[1] + pd.Timedelta(hours=31)
    whole = SeriesFeedback((alarm,), (marked,))
    fresh = {j.period: j for j in walk_forward(detector, series, first, feedback=whole)}
    state, _ = detector.advance(None, series, first - DAY)
    rebuilt = 0
    stepped = {}
    for period in pd.date_range(first, LAST, freq="D"):
        judged_at = period + pd.Timedelta(hours=31)
        known = SeriesFeedback(tuple(t for t in whole.false_alarms if t <= judged_at),
                               (marked,) if marked_at <= judged_at else ())
        state = unpack_state(pack_state(state))
        rebuilt += feedback_changed(state, known)
        state, new = detector.advance(state, series, period, feedback=known)
        stepped[period] = new[-1]
    assert rebuilt == 1
    assert fresh[marked[0]].reason == EXPECTED_REASON
    differing = [p for p in stepped if stepped[p] != fresh[p]]
    answered = [p for p in stepped if marked[0] <= p <= marked[1] and p + pd.Timedelta(hours=31) < marked_at]
    assert differing == answered == [marked[0]]
    assert stepped[marked[0]].alert  # the alert the marketer answered


def test_check_takes_feedback_by_series_to_its_worker() -> None:
    """`check(feedback=...)` reaches the series' chunk (only the series that have feedback)."""
    settings = demo()
    at = utc("2025-10-02 08:00")
    key = ("sessions", "channel=email")
    feedback = SeriesFeedback((utc("2025-10-01 06:00"),))
    plain = check(settings, at=at, kpis=["sessions"], workers=1)
    told = check(settings, at=at, kpis=["sessions"], workers=1, feedback={key: feedback})
    for a, b in zip(plain.results, told.results, strict=True):
        width = (a.judgements[-1].upper - a.judgements[-1].lower, b.judgements[-1].upper - b.judgements[-1].lower)
        if (a.series.name, segment_key(a.series.segment)) == key:
            assert width[1] == pytest.approx(width[0] * feedback.band_scale(utc("2025-10-02")), rel=1e-9)
        else:
            assert width[1] == width[0]
    # The chunk as shipped to a process or a Dask worker: pickled with its feedback.
    detector, series = demo_series("sessions", "channel=email")
    kpi = settings.kpi("sessions")
    args = pickle.loads(pickle.dumps(([(series, None)], kpi, detector, utc("2025-10-01"), False,
                                      {"channel=email": feedback})))
    shipped = evaluate_chunk(*args)[0]
    assert shipped.judgements[-1] == told._by_series[key].judgements[-1]
