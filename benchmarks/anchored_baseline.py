"""A design experiment for the daily incident benchmark (not kpiwatch's detector): does an
expectation that does not follow the data it judges catch the lasting incidents the one engine
misses (3-day and 7-day drops, a 28-day shift)?

Expectation: the median of the same weekday 1-6 weeks back (ln scale for counts), so a change
does not enter it for a week and not fully for a month. Statistics: the mean error over the last
1, 3, 7 and 14 days, each against the QUANTILE of the same statistic over the past year (its own
multi-day calibration). An alert on the day the largest ratio first exceeds 1 (a run is one alert).

    python ../shared/bench/daily_bench.py --detectors "" \
        --detector anchored='.venv/bin/python benchmarks/anchored_baseline.py {csv} {out} 0.99'

Arguments: input CSV (date,value), output CSV (date,anomaly,score), quantile [0.99].
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

WINDOWS = (1, 3, 7, 14)  # days the error is averaged over
LOOKBACK_WEEKS = 6  # same-weekday values the expectation is the median of
CALIBRATION_DAYS = 365  # past values of each statistic its threshold is read from


def scores(values: pd.Series, quantile: float) -> pd.Series:
    """Per day: the largest |mean error| / its threshold over the windows (NaN while learning)."""
    daily = values.asfreq("D")
    observed = daily.dropna()
    counts = bool((observed > 0).all() and observed.median() > 50)  # ln units already otherwise
    working = np.log(daily) if counts else daily
    lags = pd.concat([working.shift(7 * k) for k in range(1, LOOKBACK_WEEKS + 1)], axis=1)
    expected = lags.median(axis=1).where(lags.notna().sum(axis=1) >= 3)
    error = working - expected
    ratios = []
    for window in WINDOWS:
        mean = error.rolling(window, min_periods=window).mean()
        threshold = mean.shift(window).abs().rolling(CALIBRATION_DAYS, min_periods=90).quantile(quantile)
        ratios.append(mean.abs() / threshold)
    return pd.concat(ratios, axis=1).max(axis=1)


def main(source: str, output: str, quantile: float) -> None:
    frame = pd.read_csv(source)
    values = pd.Series(frame["value"].to_numpy(float), index=pd.to_datetime(frame["date"]))
    score = scores(values, quantile).reindex(values.index)
    over = score > 1.0
    first = over & ~over.shift(1, fill_value=False)
    pd.DataFrame({"date": frame["date"], "anomaly": first.astype(int).to_numpy(),
                  "score": score.fillna(0).to_numpy()}).to_csv(output, index=False)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 0.99)
