"""Replay every NAB dev file with kpiwatch's default detector and write the judged rows.

    python benchmarks/replay_nab.py [--data DIR] [--out DIR] [--workers 2]

Writes OUT/<category>/<file>.csv (the `kpiwatch replay` columns) and prints the wall time of the
whole run; score the folder with `python benchmarks/nab.py score OUT`. One default
configuration for every file: no per-file or per-category settings, and the labels are read only
after the replay, to report how often the band held the normal rows (coverage).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from forecaster.detect import Rules  # noqa: E402
from forecaster.replay import default_detectors, replay_rows  # noqa: E402
from forecaster.timegrid import alias, periods_per_day, usual_spacing  # noqa: E402
from forecaster.sources.csv import read_csv_columns  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "nab-dev"


@dataclass(frozen=True)
class Coverage:
    """Judged rows outside every labelled window, and how many of them each band held."""

    normal: int = 0
    in_band: int = 0  # inside the replay's own band (its per-period level)
    in_95: int = 0  # inside the 95% band of the same calibrated scale

    def __add__(self, other: Coverage) -> Coverage:
        return Coverage(self.normal + other.normal, self.in_band + other.in_band, self.in_95 + other.in_95)


def coverage(frame: pd.DataFrame, windows: list[list[str]], level: float) -> Coverage:
    """Coverage on normal rows: judged (score present), outside every labelled window.

    The replay's band is sigma * z(per-period level); the 95% band is sigma * 1.96 from the same
    sigma, so it checks the calibration at a level where 5% misses are expected and countable.
    """
    stamps = pd.DatetimeIndex(frame["timestamp"])
    normal = frame["score"].notna().to_numpy().copy()
    for start, end in windows:
        inside = (stamps >= pd.Timestamp(start, tz="UTC")) & (stamps <= pd.Timestamp(end, tz="UTC"))
        normal &= ~np.asarray(inside)
    rows = frame[normal]
    per_day = periods_per_day(alias(usual_spacing(stamps.sort_values())))
    per_period = 1.0 - (1.0 - level) / max(per_day, 1.0)
    half = rows["upper"] - rows["expected"]
    sigma = half / stats.norm.ppf(0.5 + per_period / 2)
    miss = (rows["value"] - rows["expected"]).abs()
    return Coverage(len(rows), int((miss <= half).sum()), int((miss <= sigma * stats.norm.ppf(0.975)).sum()))


def replay_file(source: Path, target: Path, windows: list[list[str]]) -> tuple[str, int, int, float, Coverage]:
    """Replay one file; returns (name, rows, alerts, seconds, coverage on normal rows)."""
    started = time.perf_counter()
    rules = Rules()  # the defaults `kpiwatch replay --csv` uses
    frame, _ = replay_rows(read_csv_columns(source, "timestamp", "value"), source.name, default_detectors(rules))
    seconds = time.perf_counter() - started
    target.parent.mkdir(parents=True, exist_ok=True)
    frame.assign(timestamp=frame["timestamp"].map(lambda t: t.isoformat())).to_csv(target, index=False)
    return source.name, len(frame), int(frame["anomaly"].sum()), seconds, coverage(frame, windows, rules.level)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/nab-replay"))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    files = sorted((args.data / "data").glob("*/*.csv"))
    if not files:
        sys.exit(f"no NAB files under {args.data / 'data'}; pass --data DIR")
    labels = json.loads((args.data / "labels" / "combined_windows.json").read_text())
    print(f"# replay of {len(files)} NAB dev files, {args.workers} worker(s); {date.today()}, "
          f"{os.cpu_count()} cores, {platform.platform()}")
    started = time.perf_counter()
    keys = [f"{f.parent.name}/{f.name}" for f in files]
    jobs = [(f, args.out / k, labels.get(k, [])) for f, k in zip(files, keys, strict=True)]
    rows = alerts = 0
    total_coverage = Coverage()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for name, n, flagged, seconds, cover in pool.map(replay_file, *zip(*jobs, strict=True)):
            rows, alerts, total_coverage = rows + n, alerts + flagged, total_coverage + cover
            print(f"{name:55s} {n:7d} rows {flagged:4d} alerts {seconds:6.1f} s  "
                  f"95% coverage {cover.in_95 / max(cover.normal, 1):.3f}")
    total = time.perf_counter() - started
    print(f"total: {rows} rows, {alerts} alerts, {total:.1f} s wall ({rows / total:,.0f} rows/s)")
    c = total_coverage
    print(f"coverage on {c.normal} judged rows outside the labelled windows: the alert band (0.99 per day) "
          f"{c.in_band / c.normal:.4f}, the 95% band {c.in_95 / c.normal:.4f}")


if __name__ == "__main__":
    main()
