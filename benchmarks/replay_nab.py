"""Replay every NAB dev file with kpiwatch's default detector and write the judged rows.

    python benchmarks/replay_nab.py [--data DIR] [--out DIR] [--workers 2]

Writes OUT/<category>/<file>.csv (the `kpiwatch replay` columns) and prints the wall time of the
whole run; score the folder with `python benchmarks/nab.py score OUT`. One default
configuration for every file: no per-file or per-category settings.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from forecaster.replay import ReplayConfig, replay_rows  # noqa: E402
from forecaster.sources.csv import read_csv_columns  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "nab-dev"


def replay_file(source: Path, target: Path) -> tuple[str, int, int, float]:
    """Replay one file; returns (name, rows, alerts, seconds)."""
    started = time.perf_counter()
    frame, _ = replay_rows(read_csv_columns(source, "timestamp", "value"), source.name, ReplayConfig())
    target.parent.mkdir(parents=True, exist_ok=True)
    frame.assign(timestamp=frame["timestamp"].map(lambda t: t.isoformat())).to_csv(target, index=False)
    return source.name, len(frame), int(frame["anomaly"].sum()), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/nab-replay"))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    files = sorted((args.data / "data").glob("*/*.csv"))
    if not files:
        sys.exit(f"no NAB files under {args.data / 'data'}; pass --data DIR")
    print(f"# replay of {len(files)} NAB dev files, {args.workers} worker(s); {date.today()}, "
          f"{os.cpu_count()} cores, {platform.platform()}")
    started = time.perf_counter()
    jobs = [(f, args.out / f.parent.name / f.name) for f in files]
    rows = alerts = 0
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for name, n, flagged, seconds in pool.map(replay_file, *zip(*jobs, strict=True)):
            rows, alerts = rows + n, alerts + flagged
            print(f"{name:55s} {n:7d} rows {flagged:4d} alerts {seconds:6.1f} s")
    total = time.perf_counter() - started
    print(f"total: {rows} rows, {alerts} alerts, {total:.1f} s wall ({rows / total:,.0f} rows/s)")


if __name__ == "__main__":
    main()
