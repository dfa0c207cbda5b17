"""Replay: walk forward over a series causally, judging each period only from earlier ones.

This is the daemon's cadence on history: every period is judged when it closes, from a one-step
forecast; the model's parameters are re-estimated on a slower cadence (`refit_every`). Answers
"how many alerts would I have had last quarter?".

How a period is judged (defaults in brackets):
- forecast: ETS (additive error, no trend, seasonal: a day for sub-daily data, a week for daily;
  sub-daily data with three weeks of history also tries a weekly season and keeps the one with the
  smaller one-step errors over the last week, fitted without it),
  its parameters fitted at each refit on the last `train_window` cleaned periods, its state then
  updated period by period with those parameters, so a forecast never uses the value it judges;
  until two seasonal cycles exist a non-seasonal ETS judges (after 60 values, 30 for data coarser
  than daily, and 30 calibration errors), so a short file is judged from its first hours, not
  after two days; monthly data (rows on month starts or month ends) step by calendar months and
  have a yearly season of 12, weekly data step by 7 days from the first row, season 52;
- band: calibrated on the one-step errors of the last `train_window` judged periods (conformal;
  a large error counts as at most 1.5 times that quantile, `MEMORY_CAP`): their 99% quantile
  sets a normal-equivalent scale, the band is that scale at the per-period level (`_ErrorTail`);
- per-period level: the KPI level [0.99] for daily data; for finer data it is tightened so the
  expected false alarms *per day* stay the same (a 5-minute series has 288 chances a day);
- change of behaviour: beside the band, the mean size of the last 10 standardised errors is
  compared with its own long-run distribution (`_BehaviourShift`, after Numenta's anomaly
  likelihood), so denser spikes or a noisier stretch alert even when no single value leaves
  the band;
- robust to the past: an anomalous value reaches the model pulled back to the band's edge (Huber
  cleaning), so a spike barely drags the forecast while a lasting shift is followed within
  periods; after `accept_after` anomalous periods in a row [one day, at least 3] the values are
  taken as they are (the new normal);
- daily habits: on sub-daily data, a period outside the band is not alerted when one within an
  hour of this time yesterday was outside too, by at least half its error, the same way (or the
  other way when the forecast itself carries yesterday's spike): a nightly job or a
  wandering daily peak is not news;
- alerts: the first anomalous period of an episode alerts; the same episode does not alert again
  until `repeat_after` periods [half a day, at least 3] without an alert have passed;
- a KPI's alerting guardrails (`ReplayConfig.from_settings`, the rules of `forecaster.detect`):
  direction, minimum change and volume, "for N periods", a wider band on calendar event days.
  They only decide which anomalies alert; forecast, band, score and cleaning stay as above.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.tools.sm_exceptions import ConvergenceWarning
from statsmodels.tsa.exponential_smoothing.ets import ETSModel

from forecaster.detect import Rules, guardrail
from forecaster.models.base import season_length
from forecaster.sources.base import to_kpi_series
from forecaster.types import BadInputError, Direction, KPISeries

if TYPE_CHECKING:
    from forecaster.calendar import Calendar
    from forecaster.settings import Settings

COLUMNS = ["timestamp", "value", "expected", "lower", "upper", "score", "anomaly"]
CALIBRATION_LEVEL = 0.99  # the quantile of past errors the band's scale is read from
MIN_CALIBRATION = 30  # one-step errors needed before any period is judged
MIN_FIT = 60  # values needed for the first (non-seasonal) fit: rough parameters from fewer cost early judgements
# Data coarser than daily (weekly, monthly): 60 values would be 5 years of months before the first
# fit and 7.5 before the first judgement. MIN_FIT was tuned on NAB's 5-minute data, where 60 values
# are 5 hours and cost nothing. The first fit is a non-seasonal ETS with two parameters (smoothing
# weight, initial level), which 30 values estimate well; the band is unchanged: it still waits for
# MIN_CALIBRATION out-of-sample one-step errors, so a monthly file is judged from its 61st value.
# Fewer than 30 would leave rough early errors sizing the band for up to `train_window` periods.
MIN_FIT_COARSE = MIN_CALIBRATION
DAYS_PER_MONTH = 365.2425 / 12  # the mean Gregorian month, for rates of monthly data
NORMAL_Q99 = 2.5758293035489004  # the 99% two-sided point of a standard normal
MIN_SPREAD = 0.1  # of the band's sigma: the least spread _BehaviourShift reads its short mean against
MEAN_ABS_NORMAL = math.sqrt(2 / math.pi)  # E|z| of a standard normal: an ordinary period's standardised error
RECURRENCE_SHARE = 0.5  # of an error: one outside the band yesterday at least this large makes today's a habit
MEMORY_CAP = 1.5  # of the band's 99% error quantile: the largest |error| the band remembers as it was
MIN_RELATIVE_SCALE = 1e-3  # of the series' typical size: a flat stretch must not give a zero band

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ReplayConfig:
    """Replay settings; None = derived from the frequency as the module docstring says.

    The fields after `repeat_after` are one KPI's alerting guardrails (`forecaster.detect.Rules`,
    see `KPIConfig`; `from_settings` reads them from a config). They decide which judged anomalies
    alert (`anomaly` = 1) and never change the forecast, the band, the score or the cleaning.
    Their defaults alert on every judged anomaly, either way, as replay did before they existed.

    good: the KPI's good direction; None = neither way is good news, both alert [None].
    good_news: with `good` set, moves the good way alert too [False].
    min_abs_change: |value - expected| below this (the series' units) never alerts [0].
    min_volume: a period whose max(value, expected) is below this never alerts [0] (a count
        KPI's volume is its value; a ratio's denominator is not in the file).
    for_periods: alert only from the Nth alertable period in a row the same way [1].
    event_margin: on a calendar event day (daily data only, as in `kpiwatch check`) a value
        alerts only outside the band widened by this fraction of |expected| on each side [0].
    calendar: the event days: public holidays, retail peaks, the team's events [None = none].
    timezone: IANA name whose dates daily timestamps other than midnight UTC fall on ["UTC"].
    """

    level: float = 0.99
    refit_every: int | None = None
    train_window: int | None = None
    accept_after: int | None = None
    repeat_after: int | None = None
    good: Direction | None = None
    good_news: bool = False
    min_abs_change: float = 0.0
    min_volume: float = 0.0
    for_periods: int = 1
    event_margin: float = 0.0
    calendar: Calendar | None = None
    timezone: str = "UTC"

    @classmethod
    def from_settings(cls, settings: Settings, kpi: str) -> ReplayConfig:
        """The replay `kpiwatch check` would do for KPI `kpi` of a config: its level and guardrails,
        the config's calendar (`country` holidays, retail peaks, `events:`) and `timezone`.
        BadInputError (exit 2) for an unknown KPI, naming the configured ones."""
        rules = settings.kpi(kpi)
        return cls(
            level=rules.level,
            good=rules.good,
            good_news=rules.good_news,
            min_abs_change=rules.min_abs_change,
            # The service measures a ratio's volume by its denominator, which a replayed file
            # lacks: applying the threshold to the ratio itself would silence every period.
            min_volume=rules.min_volume if rules.ratio is None else 0.0,
            for_periods=rules.for_periods,
            event_margin=rules.event_margin,
            calendar=settings.calendar,
            timezone=settings.timezone,
        )

    def describe(self, daily: bool = True) -> str:
        """The alerting settings in one short line, e.g. "level 0.99, alerts when down
        (good: up), min_abs_change 5, for_periods 3, event_margin 0.15 (holidays of NL, ...)";
        `daily`: the data are daily, the only data event days apply to (as in `check`)."""
        if self.good is None:
            parts = [f"level {self.level:g}", "alerts either way"]
        elif self.good_news:
            parts = [f"level {self.level:g}", f"alerts either way (good news when {self.good.value})"]
        else:
            parts = [f"level {self.level:g}", f"alerts when {self.good.opposite().value} (good: {self.good.value})"]
        if self.min_abs_change:
            parts.append(f"min_abs_change {self.min_abs_change:g}")
        if self.min_volume:
            parts.append(f"min_volume {self.min_volume:g}")
        parts.append(f"for_periods {self.for_periods}")
        if self.calendar is not None and self.event_margin and not daily:
            parts.append("no event days (they apply to daily data only)")
        elif self.calendar is not None and self.event_margin:
            days = [f"holidays of {self.calendar.country}"] if self.calendar.country else []
            days += ["retail peaks"] if self.calendar.retail else []
            days += [f"{len(self.calendar.events)} own event(s)"] if self.calendar.events else []
            parts.append(f"event_margin {self.event_margin:g} ({', '.join(days) or 'no event days'}; "
                         f"days in {self.timezone})")
        return ", ".join(parts)


@dataclass(frozen=True)
class _Plan:
    season: int
    week: int  # a weekly season for sub-daily data (0 = none): tried beside the daily one
    day: int  # periods per day (0 for daily and coarser data)
    jitter: int  # periods in an hour: how far a daily habit may wander (sub-daily data)
    per_day: float
    level: float
    refit_every: int
    train_window: int
    accept_after: int
    repeat_after: int
    min_fit: int = MIN_FIT  # values before the first fit (MIN_FIT_COARSE for data coarser than daily)


def replay(series: KPISeries, config: ReplayConfig = ReplayConfig(), progress: Progress | None = None) -> pd.DataFrame:
    """Judge every period of `series` causally; returns the COLUMNS (timestamp as UTC ISO text).

    Rows before enough history exists have empty expected/lower/upper/score and anomaly 0.
    """
    plan = _plan(series, config)
    values = series.values.to_numpy(dtype="float64")
    n = len(values)
    got = int(np.count_nonzero(~np.isnan(values)))
    if got < _history_needed(plan.per_day):  # nothing could be judged: one error, not an empty result
        raise _too_short(series.label, got, plan.per_day)
    first = _first_judged(values, plan)
    expected, lower, upper, score = (np.full(n, np.nan) for _ in range(4))
    anomaly = np.zeros(n, dtype=int)
    state = _State(values.copy(), plan, _AlertRules(config, _event_rows(series.values.index, series.freq, config)))
    seasonal_from = _seasonal_ready(values, plan)
    start = first
    while start < n:
        end = min(_next_refit(start, seasonal_from, plan), n)
        state.judge_block(start, end, expected, lower, upper, score, anomaly)
        if progress:
            progress(end - first, n - first)
        start = end
    frame = pd.DataFrame(
        {
            "timestamp": series.values.index,
            "value": values,
            "expected": expected,
            "lower": lower,
            "upper": upper,
            "score": score,
            "anomaly": anomaly,
        }
    )
    return frame


def summary(frame: pd.DataFrame, freq: str) -> str:
    """One line: how many alerts, over how many judged periods (and days), and how often.

    `freq`: the rows' pandas alias ("5min", "D", "7D", "MS", ...). The rate is per 30 days, or per
    year for data coarser than daily. History counts the rows with a value before the first
    judged one; rows without a value (gaps) are counted apart, as they are never judged.
    """
    judged = int(frame["score"].notna().sum())
    alerts = int(frame["anomaly"].sum())
    if judged == 0:
        return "no period could be judged: the series is too short for one calibration window"
    if _months_per_period(freq):
        days = _calendar_days(pd.DatetimeIndex(frame["timestamp"][frame["score"].notna()]), freq)
    else:
        days = judged / _periods_per_day(freq)
    if _periods_per_day(freq) < 1:
        rate = f"{alerts / days * 365.2425:.1f} per year"
    else:
        rate = f"{alerts / days * 30:.1f} per 30 days" if days >= 1 else f"{alerts} in under a day"
    history = int((frame["value"].notna() & frame["score"].isna()).sum())
    gaps = int(frame["value"].isna().sum())
    return (
        f"{alerts:,} alert(s) over {judged:,} judged periods ({days:,.1f} days): {rate}; "
        f"first {history:,} values used as history only"
        + (f"; {gaps:,} row(s) without a value not judged" if gaps else "")
    )


class _State:
    """The cleaned history (anomalies pulled back to the band's edge) and the alert bookkeeping."""

    def __init__(self, values: np.ndarray, plan: _Plan, rules: _AlertRules | None = None) -> None:
        self.raw = values
        self.clean = values.copy()
        self.plan = plan
        self.rules = rules or _AlertRules(ReplayConfig(), np.zeros(len(values), dtype=bool))
        self.errors: list[float] = []  # one-step errors of judged periods (cleaned), oldest first
        self.run = 0  # anomalous periods in a row
        self.since_alert = math.inf
        self.seasonal: bool | None = None  # the form of the current model
        self.stale = 0  # errors[:stale] came from a model of another form
        self.behaviour = _BehaviourShift()
        self.outside = np.zeros(len(values), dtype=bool)  # judged periods outside the band
        self.signed = np.zeros(len(values))  # one-step error (actual - forecast) of every judged period

    def judge_block(self, start: int, end: int, expected: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                    score: np.ndarray, anomaly: np.ndarray) -> None:
        """Refit on the clean history before `start`, then judge periods start..end-1 one by one."""
        if self.seasonal is False and self.plan.season > 1 and start >= _seasonal_history(self.plan.season):
            # The warm-up model could not see the season, so it masked seasonal swings as
            # anomalies: the first seasonal fit reads the history as it was.
            self.clean[:start] = self.raw[:start]
        model = self._fit(start)
        if self.seasonal is not None and model.seasonal != self.seasonal:
            # The non-seasonal warm-up model's errors overstate a seasonal model's: they size
            # the band only until the new model has MIN_CALIBRATION errors of its own.
            self.stale = len(self.errors)
        self.seasonal = model.seasonal
        for i in range(start, end):
            self._judge(i, model.forecast(), expected, lower, upper, score, anomaly)
            model.update(self.clean[i])  # the clean value: an anomaly does not drag the forecast

    def _fit(self, start: int) -> _EtsFilter:
        """The model for the periods from `start`: ETS with a daily (or, for daily data, weekly)
        season on the last `train_window` clean periods. Sub-daily data with three weeks of
        history also try a weekly season (hourly traffic differs between weekdays and weekends, a
        machine metric may not): both forms are fitted on the history up to a week ago and run
        over the last week with those parameters; the one with the smaller one-step errors over
        that week, which neither fit has seen, is refitted on the history up to now."""
        plan = self.plan
        holdout = plan.week
        if not plan.week or start < _seasonal_history(plan.week) + holdout:
            return _EtsFilter(self.clean[max(0, start - plan.train_window):start], plan.season)
        window = max(plan.train_window, _seasonal_history(plan.week))
        history = self.clean[max(0, start - holdout - window):start - holdout]
        recent = self.clean[start - holdout:start]
        daily = _EtsFilter(history, plan.season)
        weekly = _EtsFilter(history, plan.week)
        if weekly.seasonal and weekly.run_over(recent) < daily.run_over(recent):
            return _EtsFilter(self.clean[max(0, start - window):start], plan.week)
        # Refitted up to now either way: parameters from a week ago miss a change since.
        return _EtsFilter(self.clean[max(0, start - plan.train_window):start], plan.season)

    def _judge(self, i: int, forecast: float, expected: np.ndarray, lower: np.ndarray, upper: np.ndarray,
               score: np.ndarray, anomaly: np.ndarray) -> None:
        self.since_alert += 1
        actual = self.raw[i]
        tail = self._tail(forecast)
        half = tail.half_width(self.plan.level)
        expected[i], lower[i], upper[i] = forecast, forecast - half, forecast + half
        if math.isnan(actual):
            self.clean[i] = forecast  # a gap: the model carries on from its forecast; no judgement
            return
        error = actual - forecast
        if len(self.errors) < MIN_CALIBRATION:  # still learning the size of normal errors
            # History only: no band is shown from the few errors seen so far (it would be
            # razor-thin and judge nothing).
            expected[i] = lower[i] = upper[i] = math.nan
            self.clean[i] = actual
            self.errors.append(error)
            return
        score[i] = tail.score(abs(error))
        outside = abs(error) > half
        self.outside[i], self.signed[i] = outside, error
        # A deviation as large as one outside the band within an hour of this time yesterday
        # (the same way, or the model expecting yesterday's spike where none comes) is a daily
        # habit, such as a nightly job or a peak whose time wanders, not news: it is not alerted and
        # counts as an ordinary period in the behaviour test, though the band still says
        # outside and the model still sees it cleaned. A seasonal model cannot learn a spike that
        # moves by minutes from day to day; these were most false alarms on NAB's machine metrics.
        habit = outside and self._seen_yesterday(i, forecast)
        shifted = self.behaviour.update(MEAN_ABS_NORMAL if habit else abs(error) / tail.sigma)
        # Outside either way counts: a forecast that swings around the data must also be let go.
        self.run = self.run + 1 if outside else 0
        if self.rules.allow(i, actual, forecast, half, outside and not habit, shifted) and self.since_alert > self.plan.repeat_after:
            anomaly[i] = 1
            self.since_alert = 0
        if outside and self.run < self.plan.accept_after:
            # Judged anomalous: the model sees the value pulled back to the band's edge (Huber
            # cleaning, as in robust Holt-Winters, Gelper, Fried & Croux 2010). A lone spike moves
            # the level by at most alpha * half a band; a lasting shift drags the forecast after
            # it within periods instead of being masked (and re-alerted) for a day.
            self.clean[i] = forecast + max(-half, min(half, error))
        else:
            self.clean[i] = actual
        # Every judged period sizes the band, large errors capped at MEMORY_CAP times the 99%
        # quantile the band reads (or its edge, if wider): rare anomalies barely move that
        # quantile, while errors that come back often (more than 1% of periods) are this
        # series' normal and widen it step by step instead of alerting every time; a run of
        # huge ones (an incident, a level shift) widens it by at most that factor. The cap must
        # lie beyond the quantile: capped at the band's edge itself (daily data, where the edge
        # is the 99% quantile), a band that had become too narrow could never widen again.
        cap = max(half, MEMORY_CAP * tail.sigma * NORMAL_Q99)
        self._remember(max(-cap, min(cap, error)))

    def _seen_yesterday(self, i: int, forecast: float) -> bool:
        """Is this period's deviation a daily habit? True when a period within an hour of this
        time yesterday was outside the band by at least RECURRENCE_SHARE of this error, either
        the same way, or the other way while the forecast itself is the odd one out (it sits
        that far from yesterday's median value there, on the side of yesterday's deviation: the
        model learned yesterday's spike and today's value is the usual one). A drop the day after
        a spike is still news. Sub-daily data only; always False for daily data."""
        day, jitter = self.plan.day, self.plan.jitter
        if day <= 1 or i < day + jitter:
            return False
        lo, hi = i - day - jitter, i - day + jitter + 1
        error = self.raw[i] - forecast
        large = self.outside[lo:hi] & (np.abs(self.signed[lo:hi]) >= RECURRENCE_SHARE * abs(error))
        if np.any(large & (np.sign(self.signed[lo:hi]) == np.sign(error))):
            return True
        if not np.any(large):
            return False
        usual = np.nanmedian(self.raw[lo:hi])
        return bool(abs(forecast - usual) >= RECURRENCE_SHARE * abs(error) and np.sign(forecast - usual) == -np.sign(error))

    def _remember(self, error: float) -> None:
        """Keep a judged period's one-step error for the band: the last `train_window` of the
        current model's form (older forms' errors only until it has MIN_CALIBRATION of its own)."""
        self.errors.append(error)
        drop = len(self.errors) - self.plan.train_window
        if self.stale and len(self.errors) - self.stale >= MIN_CALIBRATION:
            drop = max(drop, self.stale)
        if drop > 0:
            del self.errors[:drop]
            self.stale = max(self.stale - drop, 0)

    def _tail(self, forecast: float) -> _ErrorTail:
        floor = MIN_RELATIVE_SCALE * max(abs(forecast), 1e-9)
        return _ErrorTail.from_errors(np.abs(self.errors[-self.plan.train_window:]), floor)


class _AlertRules:
    """ReplayConfig's guardrails where a judged period may become an alert (`_State._judge`).

    The same order as `kpiwatch check` (`forecaster.detect.judge` then `anomaly_at`): outside the
    band (widened on event days) or a change of behaviour; then |change| and volume guardrails;
    then the direction; then "for N periods", counted over consecutive alertable periods the
    same way (a gap, an unjudged row or a quiet period ends the run).
    """

    def __init__(self, config: ReplayConfig, on_event: np.ndarray) -> None:
        self.config = config
        self.on_event = on_event  # per row: True on a calendar event day
        # The service's own guardrail check (min_abs_change, min_volume), fed these two settings.
        self.guardrails = Rules(min_volume=config.min_volume, min_abs_change=config.min_abs_change)
        # Default settings: every judged anomaly alerts, exactly as before the rules existed.
        self.plain = (config.good is None and config.min_abs_change == 0 and config.min_volume == 0
                      and config.for_periods == 1 and not on_event.any())
        self.run = 0  # alertable periods in a row, ending at row `last`
        self.run_up = False
        self.last = -2

    def allow(self, i: int, actual: float, expected: float, half: float, outside: bool, shifted: bool) -> bool:
        """Whether judged row `i` (value `actual`, band expected +- half) may alert."""
        if self.plain:
            return outside or shifted
        config, error = self.config, actual - expected
        if self.on_event[i]:
            # The service widens an event day's band by event_margin of the expected value:
            # such days were learned from one or two earlier years.
            outside = abs(error) > half + config.event_margin * abs(expected)
        up = error > 0
        way = Direction.UP if up else Direction.DOWN
        alertable = (
            (outside or shifted)
            and not guardrail(actual, expected, math.nan, self.guardrails)
            and (config.good is None or way is not config.good or config.good_news)
        )
        if not alertable:
            self.run = 0
        elif i == self.last + 1 and self.run and up == self.run_up:
            self.run += 1
        else:
            self.run, self.run_up = 1, up
        self.last = i
        return alertable and self.run >= config.for_periods


def _event_rows(index: pd.DatetimeIndex, freq: str, config: ReplayConfig) -> np.ndarray:
    """Per row, True on a calendar event day, as `kpiwatch check` decides: daily data only.

    A day's date: a midnight-UTC stamp is read as the date itself (the service labels a local
    day by midnight UTC of its date, and a file of plain dates reads that way); any other stamp
    by its date in `config.timezone` (a day exported as 2025-12-25T00:00+01:00).
    """
    if config.calendar is None or config.event_margin == 0 or freq != "D" or not len(index):
        return np.zeros(len(index), dtype=bool)
    calendar = config.calendar
    labels = index == index.normalize()
    local = index.tz_convert(config.timezone).date
    days: list[date] = [utc if label else day for utc, day, label in zip(index.date, local, labels, strict=True)]
    return np.array([bool(calendar.events_on(day)) for day in days], dtype=bool)


class _BehaviourShift:
    """Is the recent size of the errors unusual? A change-of-behaviour test beside the band.

    Like Numenta's anomaly likelihood: each judged period gives a raw score, its standardised
    |one-step error| capped at `cap` [4 sigma, about the band] so one spike counts as no more
    than a band-sized error; the mean of the last `short` raw scores [10 periods] is compared
    with the mean and spread of that short mean over the last `long` periods [8,000]. A short
    mean more than `threshold` [4] spreads above its long-run mean says the series has started
    behaving differently (denser spikes, more noise, a slow drift) even when no single period
    leaves the band. Silent until `min_history` [300] short means exist.
    """

    def __init__(self, short: int = 10, long: int = 8000, cap: float = 4.0, threshold: float = 4.0,
                 min_history: int = 300) -> None:
        self.short, self.long, self.cap, self.threshold, self.min_history = short, long, cap, threshold, min_history
        self.recent: deque[float] = deque(maxlen=short)
        self.means: deque[float] = deque()
        self.total = 0.0
        self.total_sq = 0.0

    def update(self, z: float) -> bool:
        """Take the next period's |error| / sigma; True if the recent errors are unusually large."""
        self.recent.append(min(z, self.cap))
        mean = sum(self.recent) / len(self.recent)
        shifted = False
        if len(self.means) >= self.min_history:
            centre = self.total / len(self.means)
            spread = math.sqrt(max(self.total_sq / len(self.means) - centre * centre, 0.0))
            # A spread under MIN_SPREAD sigmas is a flat stretch, not a precise estimate.
            shifted = (mean - centre) / max(spread, MIN_SPREAD) > self.threshold
        self.means.append(mean)
        self.total += mean
        self.total_sq += mean * mean
        if len(self.means) > self.long:
            old = self.means.popleft()
            self.total -= old
            self.total_sq -= old * old
        return shifted


@dataclass(frozen=True)
class _ErrorTail:
    """The size of recent |one-step errors| as a normal-equivalent sigma: their empirical 99%
    quantile divided by 2.576 (conformal: read off out-of-sample errors, not a model's formula).
    The band at level L is sigma * z(L); a 5-minute series needs the 99.997% point, which no
    window of errors shows directly, so the normal curve extrapolates beyond the 99% quantile.
    (An exponential tail fitted to the 90%-99% quantiles was tried and scored lower on NAB dev:
    BENCHMARKS.md.)
    """

    sigma: float

    @classmethod
    def from_errors(cls, errors: np.ndarray, floor: float) -> _ErrorTail:
        q99 = _quantile(errors, CALIBRATION_LEVEL) if len(errors) else 0.0
        return cls(max(q99 / NORMAL_Q99, floor))

    def half_width(self, level: float) -> float:
        """The |error| exceeded with probability 1 - level."""
        return self.sigma * _two_sided_normal_point(level)

    def score(self, error: float) -> float:
        """1 - the probability of an |error| at least this large: in [0, 1], monotone."""
        return math.erf(error / self.sigma / math.sqrt(2.0))


@functools.lru_cache(maxsize=64)
def _two_sided_normal_point(level: float) -> float:
    """z with P(|N(0, 1)| <= z) = level (cached: it is asked once per judged period)."""
    return float(stats.norm.ppf(0.5 + level / 2))


def _quantile(values: np.ndarray, q: float) -> float:
    """np.quantile(values, q) (linear interpolation), by a partial sort of the two order
    statistics it needs: the same number at a third of the cost, once per judged period."""
    position = (len(values) - 1) * q
    low = int(math.floor(position))
    high = min(low + 1, len(values) - 1)
    part = np.partition(values, [low, high])
    return float(part[low] + (part[high] - part[low]) * (position - low))


def _plan(series: KPISeries, config: ReplayConfig) -> _Plan:
    per_day = _periods_per_day(series.freq)
    season = _season(series.freq)
    # Same expected false alarms per day whatever the sampling: 1 - level per day in all.
    level = 1.0 - (1.0 - config.level) / max(per_day, 1.0)
    day = max(int(round(per_day)), 1)
    return _Plan(
        season=season,
        week=7 * season if per_day > 1 and season > 1 else 0,
        day=int(round(per_day)) if per_day > 1 else 0,
        jitter=int(round(per_day / 24)),
        per_day=per_day,
        level=level,
        refit_every=config.refit_every or min(max(7 * day, 4 * season, 100), 2016),
        train_window=config.train_window or min(max(4 * season, 7 * day, 200), 4032),
        accept_after=config.accept_after or max(day, 3),
        repeat_after=config.repeat_after or max(day // 2, 3),
        min_fit=_min_fit(per_day),
    )


def _season(freq: str) -> int:
    """Periods in a seasonal cycle: `season_length(freq)` ("MS" -> 12, "D" -> 7, "7D" -> 52), but
    a year for a step of several months ("3MS" -> 4), where season_length reads only the "MS"."""
    months = _months_per_period(freq)
    if months > 1:
        return 12 // months if 12 % months == 0 and months < 12 else 1
    return season_length(freq)


def _min_fit(per_day: float) -> int:
    """Values before the first fit: MIN_FIT, or MIN_FIT_COARSE for data coarser than daily."""
    return MIN_FIT if per_day >= 1 else MIN_FIT_COARSE


def _history_needed(per_day: float) -> int:
    """Values a file needs for one judged period: the first fit's, the band's calibration
    errors (one per value after the fit), then the value judged."""
    return _min_fit(per_day) + MIN_CALIBRATION + 1


def _too_short(name: str, got: int, per_day: float | None) -> BadInputError:
    """The one error for a file too short to judge any period; `per_day` None = unknown spacing."""
    if per_day is None:
        need = f"{_history_needed(1.0)} values ({_history_needed(0.0)} for weekly or monthly data)"
    else:
        need = f"{_history_needed(per_day)} values"
    return BadInputError(f"{name}: too little history to replay: needs at least {need}, got {got}; "
                         "give a longer file")


def _first_judged(values: np.ndarray, plan: _Plan) -> int:
    """The first row after `plan.min_fit` values, where a first, non-seasonal fit is possible; its
    first `MIN_CALIBRATION` one-step errors calibrate the band, so scores start at the 91st value
    (the 61st for data coarser than daily: `_history_needed`). (Waiting for two seasonal cycles
    instead, 576 values at 5 minutes, left short files unjudged for days; a first fit on only 30
    values scored lower on NAB dev: BENCHMARKS.md.)"""
    # `replay` has refused a series with fewer than `_history_needed` (> min_fit) values.
    observed = np.cumsum(~np.isnan(values))
    return int(np.nonzero(observed >= plan.min_fit)[0][0]) + 1


def _seasonal_ready(values: np.ndarray, plan: _Plan) -> int:
    """The first row from which a seasonal model can be fitted (len(values) if never)."""
    # _EtsFilter decides on the rows before the refit, gaps included (they are interpolated).
    return _seasonal_history(plan.season) if plan.season > 1 else len(values)


def _next_refit(start: int, seasonal_from: int, plan: _Plan) -> int:
    """The row where the block starting at `start` ends and the model is refitted.

    Every `refit_every` periods once the history is long; while it is short, whenever the history
    has doubled (parameters from 60 values are rough), and at the row where two seasonal cycles
    exist, so the seasonal model takes over as soon as it can.
    """
    end = start + plan.refit_every
    if start < plan.train_window:
        end = min(end, start + max(start, MIN_CALIBRATION))
    if start < seasonal_from:
        end = min(end, seasonal_from)
    return max(end, start + 1)


def _seasonal_history(season: int) -> int:
    """Values needed before a seasonal model is fitted: two full cycles and a few more."""
    return 2 * season + 10


class _EtsFilter:
    """ETS(A, N, A) with fixed parameters, updated one observation at a time.

    No trend on purpose: one step ahead the level tracks any trend, and a fitted trend with a
    high smoothing weight makes the filter swing on noisy data.

    statsmodels estimates the parameters and the states up to the refit point; the per-period
    update is the textbook recursion (Hyndman & Athanasopoulos, FPP3 8.3), because re-running
    statsmodels' filter over the whole window for every period would cost O(window) each time.
    """

    def __init__(self, history: np.ndarray, season: int) -> None:
        filled = pd.Series(history).interpolate(limit_direction="both").to_numpy()
        seasonal = season > 1 and len(filled) >= _seasonal_history(season)
        # Heuristic initial states (from the first cycles) leave only the smoothing weights to
        # estimate: milliseconds even for a 288-period season, where estimating 288 initial
        # seasonal states by maximum likelihood takes minutes.
        spec: dict[str, object] = {
            "error": "add", "trend": None,
            "seasonal": "add" if seasonal else None, "seasonal_periods": season if seasonal else None,
            "initialization_method": "heuristic" if seasonal else "estimated",
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            try:
                result = ETSModel(filled, **spec).fit(disp=False)
            except (ValueError, np.linalg.LinAlgError):  # a degenerate stretch: simple smoothing
                seasonal = False
                result = ETSModel(filled, error="add").fit(disp=False)
        params = dict(zip(result.param_names, np.asarray(result.params), strict=True))
        states = np.asarray(result.states)
        self.alpha = float(params.get("smoothing_level", 0.0))
        self.beta = float(params.get("smoothing_trend", 0.0))
        self.gamma = float(params.get("smoothing_seasonal", 0.0))
        self.phi = float(params.get("damping_trend", 1.0 if "smoothing_trend" in params else 0.0))
        self.level = float(states[-1, 0])
        self.trend = float(states[-1, 1]) if "smoothing_trend" in params else 0.0
        self.seasonals = list(states[-season:, -1]) if seasonal else [0.0]
        self.seasonal = seasonal

    def forecast(self) -> float:
        """The next period's expected value."""
        return self.level + self.phi * self.trend + self.seasonals[0]

    def run_over(self, values: np.ndarray) -> float:
        """Take `values` in one by one; returns the mean squared one-step error over them (gaps
        are skipped: the state carries on from its forecast)."""
        total, count = 0.0, 0
        for value in values:
            forecast = self.forecast()
            if math.isnan(value):
                self.update(forecast)
                continue
            total += (value - forecast) ** 2
            count += 1
            self.update(value)
        return total / count if count else math.inf

    def update(self, value: float) -> None:
        """Take the next period's (clean) value into the states."""
        error = value - self.forecast()
        self.level = self.level + self.phi * self.trend + self.alpha * error
        self.trend = self.phi * self.trend + self.beta * error
        season = self.seasonals.pop(0) + self.gamma * error
        self.seasonals.append(season)


def _periods_per_day(freq: str) -> float:
    """Periods in a day for a pandas alias: "5min" -> 288, "D" -> 1, "7D" -> 1/7, "MS" -> 1/30.44."""
    months = _months_per_period(freq)
    if months:
        return 1.0 / (months * DAYS_PER_MONTH)
    try:
        step = pd.Timedelta(pd.tseries.frequencies.to_offset(freq))
    except ValueError:  # weeks and other calendar steps: less than one period a day
        return 1.0 / 7.0 if freq.upper().startswith("W") else 1.0 / 30.0
    return pd.Timedelta(days=1) / step


def _months_per_period(freq: str) -> int:
    """Calendar months in one period of `freq`: "MS"/"ME" -> 1, "3MS" -> 3, "QS" -> 3, else 0."""
    try:
        offset = pd.tseries.frequencies.to_offset(freq)
    except ValueError:
        return 0
    if isinstance(offset, (pd.offsets.MonthBegin, pd.offsets.MonthEnd)):
        return offset.n
    if isinstance(offset, (pd.offsets.QuarterBegin, pd.offsets.QuarterEnd)):
        return 3 * offset.n
    return 0


def _calendar_days(stamps: pd.DatetimeIndex, freq: str) -> float:
    """Days in the calendar periods of `freq` (whole months) that the rows at `stamps` fall in:
    the months from a month start at `stamps`, or up to a month end for an end-anchored alias."""
    months = _months_per_period(freq)
    month = stamps.tz_localize(None).to_period("M") if stamps.tz is not None else stamps.to_period("M")
    offset = pd.tseries.frequencies.to_offset(freq)
    if isinstance(offset, (pd.offsets.MonthEnd, pd.offsets.QuarterEnd)):
        month = month - (months - 1)
    first = month.to_timestamp()
    return float(np.sum(((month + months).to_timestamp() - first).days))


Step = pd.Timedelta | pd.DateOffset  # a fixed spacing, or whole calendar months (MonthBegin/MonthEnd)


def replay_rows(
    raw: pd.Series, name: str, config: ReplayConfig = ReplayConfig(), progress: Progress | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """Replay a file's rows as they are, one output row per input row, plus notes on what was resolved.

    Regular rows are judged directly. Rows that repeat a timestamp or lie off the usual spacing
    (real exports have both) share the period of a grid at the usual spacing: the period's
    value is their mean, each row carries its period's judgement, and only the period's first
    row can be an alert. The spacing is a fixed step (5 minutes, an hour, a day, a week from the
    first row), or calendar months when most rows sit on month starts or month ends.
    BadInputError (one line) when no period could be judged: too few values, or one timestamp.
    """
    stamps = pd.DatetimeIndex(raw.index)
    values = raw.to_numpy(dtype="float64")
    if len(stamps) < 2:
        raise _too_short(name, int(np.count_nonzero(~np.isnan(values))), None)
    if stamps.nunique() == 1:
        raise BadInputError(f"{name}: all {len(stamps)} rows have the same timestamp ({stamps[0]}); "
                            "give one row per period, each with its own timestamp")
    order = np.argsort(stamps.asi8, kind="stable")
    step = _usual_spacing(stamps[order])
    period = np.empty(len(stamps), dtype=np.int64)
    if isinstance(step, pd.Timedelta):
        offsets = stamps[order] - stamps[order][0]
        # Days and longer are calendar periods: local midnights move by an hour at a DST change, so
        # a row belongs to the nearest step; finer rows off the grid belong to the step they fall in.
        period[order] = np.rint(offsets / step).astype(np.int64) if step >= pd.Timedelta(days=1) else offsets // step
        grid = pd.date_range(stamps[order][0], periods=int(period.max()) + 1, freq=step)
    else:
        period[order], grid = _month_periods(stamps[order], step)
    means = pd.Series(values).groupby(period).mean()
    on_grid = pd.Series(np.nan, index=grid)
    on_grid.iloc[means.index.to_numpy()] = means.to_numpy()
    per_day = _periods_per_day(_alias(step))
    if int(on_grid.notna().sum()) < _history_needed(per_day):
        raise _too_short(name, int(on_grid.notna().sum()), per_day)
    series = to_kpi_series(name, on_grid, freq=_alias(step), origin=name)
    judged = replay(series, config, progress)
    rows = judged.iloc[period].reset_index(drop=True)
    first_of_period = ~pd.Series(period).duplicated().to_numpy()
    rows["anomaly"] = rows["anomaly"].to_numpy() * first_of_period
    rows["timestamp"] = stamps
    rows["value"] = values
    return rows[COLUMNS], _notes(stamps, period, grid, step) + _warm_up_note(judged, _plan(series, config))


def _usual_spacing(sorted_stamps: pd.DatetimeIndex) -> Step:
    """The most common positive spacing between rows (the smallest on a tie), or calendar months
    (`_month_step`) when that spacing is about a month or longer and the rows sit on month
    starts or ends: months differ in length, so no fixed step keeps to them."""
    diffs = pd.Series(sorted_stamps[1:] - sorted_stamps[:-1])
    diffs = diffs[diffs > pd.Timedelta(0)]
    if diffs.empty:
        raise BadInputError("all rows have the same timestamp; give one row per period, each with its own timestamp")
    counts = diffs.value_counts()
    step = min(counts[counts == counts.max()].index)
    if step >= pd.Timedelta(days=28) - pd.Timedelta(hours=1):  # the shortest month, less a DST hour
        return _month_step(sorted_stamps) or step
    return step


def _month_step(sorted_stamps: pd.DatetimeIndex) -> pd.DateOffset | None:
    """MonthBegin(k) ("MS", "3MS" for quarters) when more than half of the rows are on the 1st of
    a month, MonthEnd(k) ("ME") when more than half are on its last day, else None; k is the
    most common number of months between rows (the smallest on a tie)."""
    starts = float(np.mean(sorted_stamps.day == 1))
    ends = float(np.mean(sorted_stamps.is_month_end))
    if max(starts, ends) <= 0.5:
        return None
    months = pd.Series(np.diff(sorted_stamps.year * 12 + sorted_stamps.month))
    counts = months[months > 0].value_counts()
    k = int(min(counts[counts == counts.max()].index)) if len(counts) else 1
    return pd.offsets.MonthBegin(k) if starts > ends else pd.offsets.MonthEnd(k)


def _month_periods(sorted_stamps: pd.DatetimeIndex, step: pd.DateOffset) -> tuple[np.ndarray, pd.DatetimeIndex]:
    """Each row's period on a grid of `step` (MonthBegin(k) / MonthEnd(k)), and that grid.

    The grid runs through the first row on a month start (end), at its time of day. A row
    belongs to the period of the calendar month it falls in: for month starts the period that
    began on or before it, for month ends the one that ends on or after it.
    """
    k = step.n
    anchor = sorted_stamps[int(np.flatnonzero([step.is_on_offset(t) for t in sorted_stamps])[0])]
    month = (sorted_stamps.year * 12 + sorted_stamps.month).to_numpy()
    offset = month - (anchor.year * 12 + anchor.month)
    relative = offset // k if isinstance(step, pd.offsets.MonthBegin) else -(-offset // k)
    first = int(relative.min())
    start = anchor + type(step)(k * first) if first else anchor
    grid = pd.date_range(start, periods=int(relative.max()) - first + 1, freq=step)
    return (relative - first).astype(np.int64), grid


def _alias(step: Step) -> str:
    """The pandas alias of a spacing: "5min", "h", "D", "7D", "MS", "3MS", "ME"."""
    if not isinstance(step, pd.Timedelta):
        return step.freqstr
    minutes = step / pd.Timedelta(minutes=1)
    if step % pd.Timedelta(days=1) == pd.Timedelta(0):
        days = int(step / pd.Timedelta(days=1))
        return "D" if days == 1 else f"{days}D"
    if step % pd.Timedelta(hours=1) == pd.Timedelta(0):
        hours = int(step / pd.Timedelta(hours=1))
        return "h" if hours == 1 else f"{hours}h"
    if minutes == int(minutes):
        return f"{int(minutes)}min"
    return f"{int(step / pd.Timedelta(seconds=1))}s"


def _describe(step: Step) -> str:
    """A spacing for notes: its alias for a fixed step ("5min"), "calendar-month" or "3-month"."""
    if isinstance(step, pd.Timedelta):
        return _alias(step)
    return "calendar-month" if step.n == 1 else f"{step.n}-month"


def _warm_up_note(judged: pd.DataFrame, plan: _Plan) -> list[str]:
    """A note when sub-daily data alerted before two daily cycles were seen: the warm-up model
    has no daily season, so the first mornings' rise can alert (`_first_judged`)."""
    if not plan.day or plan.season <= 1:
        return []
    warm = min(_seasonal_history(plan.season), len(judged))
    early = int(judged["anomaly"].iloc[:warm].sum())
    if not early:
        return []
    return [f"{early} alert(s) in the first {warm / plan.per_day:.1f} days, judged before two daily cycles "
            "were seen (by a model without the daily season): they may be the daily cycle itself"]


def _notes(stamps: pd.DatetimeIndex, period: np.ndarray, grid: pd.DatetimeIndex, step: Step) -> list[str]:
    notes = []
    repeated = int(pd.Series(period).duplicated().sum())
    if repeated:
        notes.append(f"{repeated} row(s) shared a {_describe(step)} period with another row (duplicate or "
                     "irregular timestamps): judged on their mean, alerting once")
    # A daily (or longer) row an hour off the grid is a local midnight after a DST change: on time.
    daily = not isinstance(step, pd.Timedelta) or step >= pd.Timedelta(days=1)
    tolerance = pd.Timedelta(hours=1) if daily else pd.Timedelta(0)
    off_grid = int((abs(stamps - grid[period]) > tolerance).sum())
    if off_grid:
        notes.append(f"{off_grid} row(s) lie between the {_describe(step)} steps and were judged with their period")
    missing = len(grid) - len(np.unique(period))
    if missing:
        notes.append(f"{missing:,} period(s) of the {_describe(step)} grid have no row in the file: kept as gaps (not judged; "
                     "the model carries on from its forecast)")
    return notes
