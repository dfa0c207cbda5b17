"""What the daily incident benchmark's misses have in common: the band's width and the one-step
errors on each incident's days, read off a kept run of `../shared/bench/daily_bench.py`.

    python ../shared/bench/daily_bench.py --kpiwatch .venv/bin/kpiwatch --detectors kpiwatch --keep DIR
    python benchmarks/bench_misses.py DIR [--detector kpiwatch]

Per series: the median half-width of the band over the test year next to the median value; per
incident: the first days' error (value - expected) in band half-widths (beyond +-1 = outside the
band) and the alerts on its days.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

BENCH = Path(__file__).resolve().parents[2] / "shared" / "bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("keep", type=Path, help="the --keep folder of a daily_bench.py run")
    parser.add_argument("--detector", default="kpiwatch")
    args = parser.parse_args()
    sys.path.insert(0, str(BENCH))
    import daily_bench  # the benchmark's own schedule: the same incidents, the same days

    for series in daily_bench.load_set("dev"):
        series.incidents = daily_bench.schedule(series, daily_bench.SEEDS["dev"])
        out = pd.read_csv(args.keep / f"{series.name}.inj.{args.detector}.out.csv", parse_dates=["timestamp"])
        out["timestamp"] = out["timestamp"].dt.tz_localize(None) if out["timestamp"].dt.tz is not None else out["timestamp"]
        half = out["upper"] - out["expected"]
        year = out.tail(daily_bench.TEST_DAYS)
        print(f"{series.name}: median band half-width {half.tail(daily_bench.TEST_DAYS).median():.3f} "
              f"against a median value of {year['value'].abs().median():.2f}")
        for kind, start in series.incidents:
            days = len(daily_bench.INCIDENTS[kind])
            window = out[(out["timestamp"] >= start) & (out["timestamp"] < start + pd.Timedelta(days=days))]
            ratio = ((window["value"] - window["expected"]) / half[window.index]).to_numpy()[:8]
            print(f"   {kind:12s} error / half-width, first days: {np.round(ratio, 2)}  alerts {int(window['anomaly'].sum())}")


if __name__ == "__main__":
    main()
