"""False alarms of `replay` on clean synthetic data, where every alert is a false one.

    python benchmarks/replay_clean.py [--seeds 6]

Per frequency (daily: two years with a weekly cycle; hourly: 120 days; 5-minute: 28 days; each a
daily or weekly sine plus normal noise, nothing else) and seed: the alerts sent and the share of
judged periods outside the alert band. At the default level (0.99 per day) about 1% of days may
hold a false alarm: ~6.4 over the 640 judged days of the daily series.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from forecaster.replay import default_detectors, replay
from forecaster.sources.base import to_kpi_series

SHAPES = {"D": (730, 1), "h": (120 * 24, 24), "5min": (28 * 288, 288)}  # periods, periods per day


def clean_series(freq: str, seed: int) -> pd.Series:
    """A clean series: a daily cycle (sub-daily data) or a weekly one (daily data) plus N(0, 2) noise."""
    n, per_day = SHAPES[freq]
    t = np.arange(n)
    cycle = per_day if per_day > 1 else 7
    values = 100 + 10 * np.sin(2 * np.pi * t / cycle) + np.random.default_rng(seed).normal(0, 2, n)
    return pd.Series(values, index=pd.date_range("2024-01-01", periods=n, freq=freq, tz="UTC"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=6)
    args = parser.parse_args()
    for freq in SHAPES:
        cells = []
        for seed in range(args.seeds):
            frame = replay(to_kpi_series("clean", clean_series(freq, seed), freq=freq, origin="clean"),
                           default_detectors()(freq))
            judged = frame[frame["score"].notna()]
            outside = ((judged["value"] < judged["lower"]) | (judged["value"] > judged["upper"])).mean()
            cells.append(f"{int(frame['anomaly'].sum())} ({outside:.2%})")
        print(f"{freq:>5}: alerts (share outside the band) per seed: {', '.join(cells)}")


if __name__ == "__main__":
    main()
