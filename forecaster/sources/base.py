"""Validate a raw time series once, where it enters kpiwatch, and turn it into a `KPISeries`.

Every source (CSV, SQL, API) ends in `to_kpi_series`, so the rest of the code can rely on:
a tz-aware UTC index, sorted, unique, on a regular grid at `freq`; float values with NaN for
missing periods (never zero, never filled); at least `MIN_POINTS` real values.

Frequencies are lowercase pandas aliases (see `infer_freq`): "5min", "h", "D", "W-MON", "MS", ...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from forecaster.types import BadInputError, KPISeries

MIN_POINTS = 8  # fewer judged points than this cannot be forecast

# The most common spacing must cover at least this share of the gaps between timestamps;
# below it the series is irregular rather than "regular with some missing periods".
_MIN_MODE_SHARE = 0.5

_WEEKDAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
_DAY = pd.Timedelta(days=1)
_HOUR = pd.Timedelta(hours=1)
_MINUTE = pd.Timedelta(minutes=1)
_SECOND = pd.Timedelta(seconds=1)


class WallClock:
    """`now()` for the real sources (files, SQL, GA4): the wall clock, tz-aware UTC. (The demo
    keeps its own fixed clock.)"""

    def now(self) -> pd.Timestamp:
        """The wall clock, tz-aware UTC."""
        return pd.Timestamp.now(tz="UTC")


# --------------------------------------------------------------------------- frequency


def infer_freq(index: pd.DatetimeIndex) -> str:
    """The regular spacing of `index` as a pandas alias, tolerating missing periods (gaps).

    Works on the sorted unique timestamps (NaT ignored), naive or tz-aware alike. Returns:
    - "MS" / "ME" when every timestamp is the 1st / the last day of its month at one time of
      day and they are mostly one month apart ("3MS" etc. when mostly k months apart);
    - "W-<DAY>" (e.g. "W-MON") when the usual spacing is 7 days, anchored at the first
      timestamp's weekday, so a weekly grid never drifts off the data;
    - otherwise the usual spacing as a fixed step: "D" / "2D", "h" / "6h", "5min", "30s".

    The usual spacing is the most common difference between consecutive timestamps (the
    smallest one on a tie). Raises `BadInputError` when there are fewer than two timestamps,
    when the usual spacing covers less than half of the differences, or when some difference
    is not a whole multiple of it (then the data are irregular, not merely gappy).
    """
    stamps = index.dropna().unique().sort_values()
    if len(stamps) < 2:
        raise BadInputError(
            f"cannot infer a frequency from {len(stamps)} timestamp(s); give a regular series "
            "with at least two periods"
        )
    monthly = _monthly_alias(stamps)
    if monthly is not None:
        return monthly
    step = _usual_step(stamps)
    return _tick_alias(step, stamps[0])


def _monthly_alias(stamps: pd.DatetimeIndex) -> str | None:
    """"MS"/"ME" (or "kMS"/"kME") when all stamps sit on month starts/ends, else None."""
    # One time of day for all: month starts at 00:00 and 06:00 mixed are not a monthly grid.
    if (stamps - stamps.normalize()).nunique() != 1:
        return None
    if bool((stamps.day == 1).all()):
        anchor = "MS"
    elif bool(stamps.is_month_end.all()):
        anchor = "ME"
    else:
        return None
    months = pd.Index(stamps.year * 12 + stamps.month)
    steps = pd.Series(np.diff(months.to_numpy()))
    step = _mode_of(steps, what="gaps", describe=lambda k: f"{k} month(s)")
    bad = steps[steps % step != 0]
    if len(bad):
        i = int(bad.index[0])
        raise BadInputError(
            f"timestamps are not evenly spaced ({stamps[i]} to {stamps[i + 1]} is not a "
            f"multiple of the usual {step} month(s)); give a regular series"
        )
    return anchor if step == 1 else f"{step}{anchor}"


def _usual_step(stamps: pd.DatetimeIndex) -> pd.Timedelta:
    """The most common spacing of `stamps`, checked to divide every other spacing."""
    diffs = pd.Series(stamps[1:] - stamps[:-1])
    step = _mode_of(diffs, what="gaps", describe=_describe_span)
    off = diffs[diffs % step != pd.Timedelta(0)]
    if len(off):
        i = int(off.index[0])
        raise BadInputError(
            f"timestamps are not evenly spaced ({_describe_span(off.iloc[0])} between "
            f"{stamps[i]} and {stamps[i + 1]} is not a multiple of the usual "
            f"{_describe_span(step)}); give a regular series"
        )
    return step


def _mode_of(diffs: pd.Series, what: str, describe: Callable[[Any], str]) -> Any:
    """The most common value of `diffs` (smallest on a tie); raises if it covers < half."""
    counts = diffs.value_counts()
    top = counts.max()
    step = min(counts[counts == top].index)  # on a tie the finer spacing is the period
    if top < _MIN_MODE_SHARE * len(diffs):
        raise BadInputError(
            f"timestamps are not evenly spaced (the most common spacing, "
            f"{describe(step)}, covers only {top} of {len(diffs)} {what}); "
            "give a regular series"
        )
    return step


def _tick_alias(step: pd.Timedelta, first: pd.Timestamp) -> str:
    """A fixed spacing as a lowercase pandas alias; 7 days becomes "W-<weekday of first>"."""
    if step == 7 * _DAY:
        return f"W-{_WEEKDAYS[first.weekday()]}"
    for unit, alias in ((_DAY, "D"), (_HOUR, "h"), (_MINUTE, "min"), (_SECOND, "s")):
        if step % unit == pd.Timedelta(0):
            count = step // unit
            return alias if count == 1 else f"{count}{alias}"
    raise BadInputError(
        f"timestamps are {step} apart, not a whole number of seconds; give a series at "
        "whole-second steps"
    )


def _describe_span(span: pd.Timedelta) -> str:
    """A spacing in words for messages: "1 day", "2 h", "5 min", "30 s"."""
    if span % _DAY == pd.Timedelta(0):
        days = span // _DAY
        return f"{days} day" if days == 1 else f"{days} days"
    for unit, word in ((_HOUR, "h"), (_MINUTE, "min"), (_SECOND, "s")):
        if span % unit == pd.Timedelta(0):
            return f"{span // unit} {word}"
    return str(span)


def _normalise_freq(freq: str, prefix: str) -> str:
    """A caller's alias in pandas' canonical spelling ("W" -> "W-SUN"); rejects unknown ones."""
    try:
        return to_offset(freq).freqstr
    except ValueError:
        raise BadInputError(
            f"{prefix}unknown frequency {freq!r}; use a pandas alias such as "
            "'5min', 'h', 'D', 'W-MON' or 'MS'"
        ) from None


# --------------------------------------------------------------------------- cleaning


def _utc_index(index: pd.Index, prefix: str) -> pd.DatetimeIndex:
    """`index` as a UTC DatetimeIndex; naive timestamps are taken to be UTC already."""
    if not isinstance(index, pd.DatetimeIndex):
        raise BadInputError(
            f"{prefix}timestamps are not datetimes (the index is a {type(index).__name__}); "
            "index the series by time"
        )
    if index.hasnans:
        raise BadInputError(
            f"{prefix}{int(index.isna().sum())} missing timestamp(s) (NaT); fill them in or "
            "drop those rows"
        )
    return index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")


def _as_floats(values: pd.Series, index: pd.DatetimeIndex, prefix: str) -> np.ndarray:
    """`values` as float64 with NaN for missing and for ±inf; text or objects are rejected.

    None, NaN and pd.NA are missing. A non-numeric entry is an error rather than a silent
    NaN, because a typo must not look like a missing period.
    """
    try:
        numeric = pd.to_numeric(values, errors="coerce")
        # A copy: pandas 3 may hand out a read-only view, and inf is overwritten below.
        floats = np.array(
            pd.Series(numeric).to_numpy(dtype="float64", na_value=np.nan), dtype="float64"
        )
    except (TypeError, ValueError) as err:
        raise BadInputError(f"{prefix}values are not numbers ({err}); give numbers") from None
    bad = np.isnan(floats) & values.notna().to_numpy()
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise BadInputError(
            f"{prefix}{int(bad.sum())} value(s) are not numbers (first: "
            f"{values.iloc[first]!r} at {index[first]}); give numbers, NaN for missing"
        )
    floats[~np.isfinite(floats)] = np.nan  # inf is a broken ratio, not a measurement
    return floats


def _clean(series: pd.Series, prefix: str) -> pd.Series:
    """UTC-indexed, time-sorted float copy of `series`; duplicate timestamps are an error."""
    index = _utc_index(series.index, prefix)
    floats = _as_floats(series, index, prefix)
    clean = pd.Series(floats, index=index).sort_index(kind="stable")
    dup = clean.index.duplicated()
    if dup.any():
        count = int(dup.sum())
        noun = "timestamp" if count == 1 else "timestamps"
        raise BadInputError(
            f"{prefix}{count} duplicate {noun} (first: {clean.index[dup][0]}); "
            f"{duplicate_fix(clean.index[dup], clean.index)}"
        )
    return clean


# --------------------------------------------------------------------------- duplicates

DUPLICATE_FIX = "keep one row per period or aggregate them first"


def duplicate_fix(repeated: pd.DatetimeIndex, stamps: pd.DatetimeIndex) -> str:
    """The fix to print for duplicate timestamps `repeated` among `stamps`: a clock-change hint
    when they look like local times repeated by the end of daylight saving time (aggregating
    those rows would merge two different hours), else `DUPLICATE_FIX`."""
    if not repeated_by_clock_change(repeated, stamps):
        return DUPLICATE_FIX
    # The example is the repeat itself, in standard time: Central Europe's in October, the US
    # East's in November (the first occurrence was summer time, an hour earlier in UTC).
    offset = "+01:00" if repeated[0].month == 10 else "-05:00"
    return (
        "these look like local times repeated by a clock change: write UTC times or add the UTC "
        f"offset (e.g. {repeated[0]:%Y-%m-%dT%H:%M:%S}{offset})"
    )


def repeated_by_clock_change(repeated: pd.DatetimeIndex, stamps: pd.DatetimeIndex) -> bool:
    """Whether duplicate timestamps look like naive local times written across the end of DST.

    True when `stamps` (all the timestamps) are finer than daily and every one of `repeated` is
    between 00:00 and 03:59 on a Sunday from 25 October to 7 November: Europe turns 03:00 back to
    02:00 on the last Sunday of October, North America 02:00 back to 01:00 on the first Sunday of
    November, so an hour of wall-clock times happens twice. (The southern hemisphere's April
    change is not recognised.) Daily data are excluded: their midnights are not repeated hours.
    """
    if len(repeated) == 0 or not _finer_than_daily(stamps):
        return False
    late_october = (repeated.month == 10) & (repeated.day >= 25)
    early_november = (repeated.month == 11) & (repeated.day <= 7)
    sunday_night = (repeated.day_of_week == 6) & (repeated.hour < 4)
    return bool(((late_october | early_november) & sunday_night).all())


def _finer_than_daily(stamps: pd.DatetimeIndex) -> bool:
    """Whether the most common spacing of the distinct `stamps` is under a day."""
    unique = stamps.unique().sort_values()
    if len(unique) < 2:
        return False
    spacings = pd.Series(unique[1:] - unique[:-1])
    return bool(spacings.mode().min() < _DAY)


def _grid(index: pd.DatetimeIndex, freq: str, prefix: str) -> pd.DatetimeIndex:
    """The regular grid at `freq` from the first to the last timestamp; all must lie on it."""
    grid = pd.date_range(start=index[0], end=index[-1], freq=freq)
    off = index[~index.isin(grid)]
    if len(off):
        # Typical cause: local midnights converted to UTC shift by an hour at a DST change.
        raise BadInputError(
            f"{prefix}{len(off)} timestamp(s) are off the regular {freq!r} grid starting "
            f"{index[0]} (first: {off[0]}); give timestamps at regular steps, in UTC or as "
            "plain dates"
        )
    return grid


def _prefix(origin: str, name: str) -> str:
    """"<origin>: " for messages; falls back to the series name so a message is never bare."""
    where = origin or name
    return f"{where}: " if where else ""


# --------------------------------------------------------------------------- entry point


def to_kpi_series(
    name: str,
    values: pd.Series,
    freq: str | None = None,
    segment: Mapping[str, str] | None = None,
    denominator: pd.Series | None = None,
    *,
    origin: str = "",
) -> KPISeries:
    """Validate a raw series and return it as a `KPISeries` on a regular UTC grid.

    values: indexed by a DatetimeIndex (naive = UTC, or any tz); numbers, NaN/None = missing.
    freq: pandas alias of the period; default None = inferred with `infer_freq`. An explicit
    one is normalised by pandas ("W" -> "W-SUN") and every timestamp must lie on its grid.
    segment: dimension -> value; default None = the KPI's total ({}).
    denominator: optional per-period denominator (same rules), aligned onto the same grid.
    origin: where the data came from (e.g. "data.csv, column 'y'"), prefixed to every error
    message; default "" = the series name is used instead.

    Missing periods inside the span become NaN (never zero, never filled); ±inf becomes NaN.
    Constant series are accepted (the model layer decides what to do with them).
    Raises `BadInputError` (one line: problem, value, fix) on non-datetime or NaT timestamps,
    non-numeric values, duplicate timestamps, fewer than `MIN_POINTS` real values, irregular
    spacing, or timestamps off the grid.
    """
    prefix = _prefix(origin, name)
    clean = _clean(values, prefix)
    real = int(clean.notna().sum())
    if real < MIN_POINTS:
        raise BadInputError(
            f"{prefix}needs at least {MIN_POINTS} values, got {real}; give more history"
        )
    if freq is None:
        try:
            freq = infer_freq(clean.index)
        except BadInputError as err:
            raise BadInputError(f"{prefix}{err}") from None
    else:
        freq = _normalise_freq(freq, prefix)
    grid = _grid(clean.index, freq, prefix)
    regular = clean.reindex(grid).rename(name)
    return KPISeries(
        name=name,
        values=regular,
        freq=freq,
        segment=dict(segment) if segment else {},
        denominator=_align_denominator(denominator, grid, freq, prefix),
    )


def _align_denominator(
    denominator: pd.Series | None, grid: pd.DatetimeIndex, freq: str, prefix: str
) -> pd.Series | None:
    """The denominator cleaned like the values and reindexed onto `grid` (gaps -> NaN).

    Rows outside the values' span are dropped (they match no value); rows inside the span but
    between grid points are an error, since they cannot be matched to a period.
    """
    if denominator is None:
        return None
    where = f"{prefix}denominator: "
    clean = _clean(denominator, where)
    inside = clean.index[(clean.index >= grid[0]) & (clean.index <= grid[-1])]
    off = inside[~inside.isin(grid)]
    if len(off):
        raise BadInputError(
            f"{where}{len(off)} timestamp(s) are off the values' {freq!r} grid (first: "
            f"{off[0]}); give the denominator for the same periods as the values"
        )
    return clean.reindex(grid).rename("denominator")
