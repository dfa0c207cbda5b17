"""The one time grid: periods per day, season lengths, a file's usual spacing, the last closed period.

Every face (check, the daemon, replay, backtest) asks these questions here, so a KPI's days,
its season and its step are read the same way everywhere.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecaster.types import BadInputError

DAYS_PER_MONTH = 365.2425 / 12  # the mean Gregorian month, for rates of monthly data
# Season length of the calendar frequencies that have no fixed duration.
_SEASON_BY_FREQ = {"w": 52, "ms": 12, "me": 12, "qs": 4}

Step = pd.Timedelta | pd.DateOffset  # a fixed spacing, or whole calendar months (MonthBegin/MonthEnd)


def season_length(freq: str) -> int:
    """Periods in one seasonal cycle for a pandas alias: "h" -> 24, "D" -> 7, "5min" -> 288,
    "7D"/"W" -> 52, "MS" -> 12, "3MS"/"QS" -> 4.

    Sub-daily data cycle daily, daily data weekly, weekly and monthly data yearly; 1 (no
    season) for anything else.
    """
    months = months_per_period(freq)
    if months > 1:
        return 12 // months if 12 % months == 0 and months < 12 else 1
    offset = pd.tseries.frequencies.to_offset(freq)
    try:
        step = pd.Timedelta(offset)
    except ValueError:  # calendar offsets (week-anchored, month) have no fixed length
        step = None
    if step is not None:
        if step < pd.Timedelta(days=1):
            return max(1, int(pd.Timedelta(days=1) / step))
        if step == pd.Timedelta(days=1):
            return 7
        if step == pd.Timedelta(days=7):
            return 52
        return 1
    base = "".join(ch for ch in freq.lower().split("-")[0] if ch.isalpha())
    return _SEASON_BY_FREQ.get(base, 1)


def months_per_period(freq: str) -> int:
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


def periods_per_day(freq: str) -> float:
    """Periods in a day for a pandas alias: "5min" -> 288, "D" -> 1, "7D" -> 1/7, "MS" -> 1/30.44."""
    months = months_per_period(freq)
    if months:
        return 1.0 / (months * DAYS_PER_MONTH)
    try:
        step = pd.Timedelta(pd.tseries.frequencies.to_offset(freq))
    except ValueError:  # weeks and other calendar steps: less than one period a day
        return 1.0 / 7.0 if freq.upper().startswith("W") else 1.0 / 30.0
    return pd.Timedelta(days=1) / step


def periods_in(hours: float, freq: str) -> int:
    """Whole periods of `freq` in `hours` (at least 1): 24 h of daily data -> 1, of 5-minute data -> 288."""
    return max(1, int(round(hours / 24.0 * periods_per_day(freq))))


def calendar_days(stamps: pd.DatetimeIndex, freq: str) -> float:
    """Days in the calendar periods of `freq` (whole months) that the rows at `stamps` fall in:
    the months from a month start at `stamps`, or up to a month end for an end-anchored alias."""
    months = months_per_period(freq)
    month = stamps.tz_localize(None).to_period("M") if stamps.tz is not None else stamps.to_period("M")
    offset = pd.tseries.frequencies.to_offset(freq)
    if isinstance(offset, (pd.offsets.MonthEnd, pd.offsets.QuarterEnd)):
        month = month - (months - 1)
    first = month.to_timestamp()
    return float(np.sum(((month + months).to_timestamp() - first).days))


def last_closed_period(now: pd.Timestamp, freq: str, timezone: str) -> pd.Timestamp:
    """The start of the latest period that has fully ended at `now`.

    Days are cut in `timezone` and labelled by their calendar date (midnight UTC of that date);
    hours are UTC. An incomplete period is never judged (it would read as a drop).
    """
    now = pd.Timestamp(now)
    now = now.tz_localize("UTC") if now.tzinfo is None else now.tz_convert("UTC")
    if freq == "D":
        today = now.tz_convert(timezone).date()
        return pd.Timestamp(today, tz="UTC") - pd.Timedelta(days=1)
    return now.floor("h") - pd.Timedelta(hours=1)


# -- a file's rows on a grid -------------------------------------------------------------------


def usual_spacing(sorted_stamps: pd.DatetimeIndex) -> Step:
    """The most common positive spacing between rows (the smallest on a tie), or calendar months
    (`month_step`) when that spacing is about a month or longer and the rows sit on month
    starts or ends: months differ in length, so no fixed step keeps to them."""
    diffs = pd.Series(sorted_stamps[1:] - sorted_stamps[:-1])
    diffs = diffs[diffs > pd.Timedelta(0)]
    if diffs.empty:
        raise BadInputError("all rows have the same timestamp; give one row per period, each with its own timestamp")
    counts = diffs.value_counts()
    step = min(counts[counts == counts.max()].index)
    if step >= pd.Timedelta(days=28) - pd.Timedelta(hours=1):  # the shortest month, less a DST hour
        return month_step(sorted_stamps) or step
    return step


def month_step(sorted_stamps: pd.DatetimeIndex) -> pd.DateOffset | None:
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


def month_periods(sorted_stamps: pd.DatetimeIndex, step: pd.DateOffset) -> tuple[np.ndarray, pd.DatetimeIndex]:
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


def alias(step: Step) -> str:
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


def describe_step(step: Step) -> str:
    """A spacing for notes: its alias for a fixed step ("5min"), "calendar-month" or "3-month"."""
    if isinstance(step, pd.Timedelta):
        return alias(step)
    return "calendar-month" if step.n == 1 else f"{step.n}-month"
