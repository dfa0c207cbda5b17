"""From a source's summed metrics to KPI series: the total and one series per segment value.

Ratios are always sums of parts divided per period and segment (sum of conversions / sum of
sessions), never averages of ratios; a zero denominator is a missing value, not zero.

A dimension's segments are built together: one grouping, one check of the timestamps against
one grid, then each segment is cut from the grouped columns (10,000 campaigns is 10,000 cuts of
arrays, not 10,000 validations). The result is exactly what `to_kpi_series` gives per segment;
a segment the shared checks cannot vouch for goes through `to_kpi_series` itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import pandas as pd

from forecaster.settings import KPIConfig
from forecaster.sources.base import MIN_POINTS, _as_floats, _utc_index, to_kpi_series
from forecaster.types import BadInputError, KPISeries


def kpi_series(name: str, kpi: KPIConfig, frame: pd.DataFrame) -> list[KPISeries]:
    """The KPI's total first, then one series per value of each segment dimension.

    frame: the source's rows at the KPI's frequency: `timestamp`, the KPI's dimensions, its
    metrics. `kpi.filter` keeps only the listed dimension values (e.g. paid channels for CPA).
    A segment whose series cannot be built (too few values) is left out, not an error, as long
    as the total can be built.
    """
    frame = _filtered(frame, kpi.filter, name)
    total = _one_series(name, kpi, frame.groupby("timestamp", sort=True)[kpi.metrics].sum(min_count=1), {})
    series = [total]
    for dimension in kpi.segments:
        # One grouping per dimension, not one per value: a cycle builds every segment anew.
        sums = frame.groupby([dimension, "timestamp"], sort=True)[kpi.metrics].sum(min_count=1)
        series.extend(_segments(name, kpi, sums, dimension, total.freq))
    return series


def _filtered(frame: pd.DataFrame, keep: Mapping[str, list[str]], name: str) -> pd.DataFrame:
    for dimension, values in keep.items():
        unknown = sorted(set(values) - set(frame[dimension].astype(str).unique()))
        if unknown:
            raise BadInputError(
                f"kpis.{name}.filter.{dimension}: no rows with {', '.join(unknown)}; "
                f"values present: {', '.join(sorted(frame[dimension].astype(str).unique()))}"
            )
        frame = frame[frame[dimension].astype(str).isin(values)]
    return frame


def _one_series(name: str, kpi: KPIConfig, sums: pd.DataFrame, segment: dict[str, str]) -> KPISeries:
    """The KPI from its metrics summed per period (`sums`: indexed by timestamp)."""
    index = pd.DatetimeIndex(sums.index)
    if kpi.ratio is None:
        values = sums[kpi.metrics[0]]
        return to_kpi_series(name, pd.Series(values.to_numpy(), index=index), kpi.freq, segment, origin=name)
    numerator = sums[kpi.ratio.numerator].to_numpy(dtype="float64")
    denominator = sums[kpi.ratio.denominator].to_numpy(dtype="float64")
    ratio = _ratio(numerator, denominator)
    return to_kpi_series(
        name,
        pd.Series(ratio, index=index),
        kpi.freq,
        segment,
        denominator=pd.Series(denominator, index=index),
        origin=name,
    )


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator per period; NaN where the denominator is not > 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def _segments(name: str, kpi: KPIConfig, sums: pd.DataFrame, dimension: str, freq: str) -> Iterator[KPISeries]:
    """One series per value of `dimension`, in sorted order (`sums`: indexed by (value,
    timestamp), sorted; `freq` the total's normalised frequency). A segment that
    `to_kpi_series` would refuse (fewer than MIN_POINTS values, timestamps off its grid) is
    left out."""
    if sums.empty:
        return
    try:
        # Checked once for all values: UTC timestamps, numbers (inf -> NaN), as `to_kpi_series`
        # checks each series. A frame that fails here goes the slow way, value by value, where
        # a bad cell costs only its own segment.
        stamps = _utc_index(sums.index.get_level_values(1), "")
        if kpi.ratio is None:
            values, denominator = _as_floats(sums[kpi.metrics[0]], stamps, ""), None
        else:
            numerator = sums[kpi.ratio.numerator].to_numpy(dtype="float64")
            denominator = _as_floats(sums[kpi.ratio.denominator], stamps, "")
            values = _as_floats(pd.Series(_ratio(numerator, sums[kpi.ratio.denominator].to_numpy(dtype="float64"))),
                                stamps, "")
    except (BadInputError, TypeError, ValueError):
        yield from _segments_one_by_one(name, kpi, sums, dimension)
        return
    grid = pd.date_range(start=stamps.min(), end=stamps.max(), freq=freq)
    at = grid.get_indexer(stamps)  # -1: off the grid of the first timestamp
    real = np.cumsum(np.concatenate([[0], ~np.isnan(values)]))
    codes = sums.index.codes[0]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(codes)) + 1])
    ends = np.concatenate([starts[1:], [len(codes)]])
    keys = sums.index.levels[0]
    # Most segments share one span: its index is cut once, and each series gets its own
    # Index object on the same data (an index is immutable, but its name can be set).
    spans: dict[tuple[int, int], pd.DatetimeIndex] = {}
    for start, end in zip(starts.tolist(), ends.tolist()):
        segment = {dimension: str(keys[codes[start]])}
        if real[end] - real[start] < MIN_POINTS:
            continue  # e.g. a channel with a handful of days: judged when it has history
        where = at[start:end]
        if (where < 0).any():
            # Off the shared grid but maybe on its own (it starts elsewhere): ask the slow way.
            try:
                yield _one_series(name, kpi, sums.iloc[start:end].droplevel(0), segment)
            except BadInputError:
                pass
            continue
        first, last = int(where[0]), int(where[-1])
        span = spans.get((first, last))
        if span is None:
            span = spans[first, last] = grid[first : last + 1]
        index = span.rename(None)
        yield KPISeries(
            name=name,
            values=pd.Series(_spread(values[start:end], where - first, len(index)), index=index, name=name),
            freq=freq,
            segment=segment,
            denominator=None if denominator is None else pd.Series(
                _spread(denominator[start:end], where - first, len(index)), index=index, name="denominator"),
        )


def _spread(values: np.ndarray, at: np.ndarray, size: int) -> np.ndarray:
    """`values` placed at positions `at` of a new array of `size` NaNs (the gaps stay NaN)."""
    out = np.full(size, np.nan)
    out[at] = values
    return out


def _segments_one_by_one(name: str, kpi: KPIConfig, sums: pd.DataFrame, dimension: str) -> Iterator[KPISeries]:
    for value, part in sums.groupby(level=0, sort=True):
        try:
            yield _one_series(name, kpi, part.droplevel(0), {dimension: str(value)})
        except BadInputError:
            continue  # e.g. a channel with a handful of days: judged when it has history
