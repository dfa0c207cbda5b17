"""Keep past anomalies out of a fit: gross outliers in the history become missing values.

A past incident (a tracking outage, a one-day spike) would drag the forecast towards itself and
widen the band for weeks. Before each fit, a value is masked (set to NaN, which every model
treats as a gap) when it lies more than `OUTLIER_Z` robust standard deviations from the median of
the same phase (same weekday for daily data, same hour for hourly) over the surrounding
`PHASE_WINDOW` cycles. The median is centred, so a lasting level shift pulls it along: after
about half the window (3 cycles) the new level is the norm and is no longer masked. Calendar event
days are never masked: a Black Friday peak is exactly what the model must learn.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from forecaster.models.base import season_length

OUTLIER_Z = 6.0  # robust z beyond which a past value is an outlier (gross only: normal noise is ~1)
PHASE_WINDOW = 7  # cycles in the centred median (7 weeks of a weekday)
MIN_CYCLES = 4  # fewer cycles of history than this: nothing to compare with, nothing masked


def mask_outliers(history: pd.Series, freq: str, keep: Iterable[pd.Timestamp] = ()) -> pd.Series:
    """`history` with gross outliers set to NaN (see module docstring); `keep`: never masked."""
    season = season_length(freq)
    if season < 2 or history.notna().sum() < MIN_CYCLES * season:
        return history
    phase = np.arange(len(history)) % season
    values = history.to_numpy(dtype="float64")
    typical = (
        pd.Series(values)
        .groupby(phase)
        .transform(lambda same: same.rolling(PHASE_WINDOW, center=True, min_periods=3).median())
        .to_numpy()
    )
    residual = values - typical
    spread = 1.4826 * np.nanmedian(np.abs(residual - np.nanmedian(residual)))
    if not np.isfinite(spread) or spread <= 0:
        return history
    outlier = np.abs(residual) > OUTLIER_Z * spread
    outlier &= ~history.index.isin(list(keep))
    return history.mask(pd.Series(outlier, index=history.index))
