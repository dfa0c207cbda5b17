"""From a source's summed metrics to KPI series: the total and one series per segment value.

Ratios are always sums of parts divided per period and segment (sum of conversions / sum of
sessions), never averages of ratios; a zero denominator is a missing value, not zero.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from forecaster.settings import KPIConfig
from forecaster.sources.base import to_kpi_series
from forecaster.types import BadInputError, KPISeries


def kpi_series(name: str, kpi: KPIConfig, frame: pd.DataFrame) -> list[KPISeries]:
    """The KPI's total first, then one series per value of each segment dimension.

    frame: the source's rows at the KPI's frequency: `timestamp`, the KPI's dimensions, its
    metrics. `kpi.filter` keeps only the listed dimension values (e.g. paid channels for CPA).
    A segment whose series cannot be built (too few values) is left out, not an error, as long
    as the total can be built.
    """
    frame = _filtered(frame, kpi.filter, name)
    series = [_one_series(name, kpi, frame.groupby("timestamp", sort=True)[kpi.metrics].sum(min_count=1), {})]
    for dimension in kpi.segments:
        # One grouping per dimension, not one per value: a cycle builds every segment anew.
        sums = frame.groupby([dimension, "timestamp"], sort=True)[kpi.metrics].sum(min_count=1)
        for value, part in sums.groupby(level=0, sort=True):
            try:
                series.append(_one_series(name, kpi, part.droplevel(0), {dimension: str(value)}))
            except BadInputError:
                continue  # e.g. a channel with a handful of days: judged when it has history
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
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(denominator > 0, numerator / denominator, np.nan)
    return to_kpi_series(
        name,
        pd.Series(ratio, index=index),
        kpi.freq,
        segment,
        denominator=pd.Series(denominator, index=index),
        origin=name,
    )
