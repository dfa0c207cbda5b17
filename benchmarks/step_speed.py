"""Judging one new day for the demo's 62 series: stepping stored detector states against the
check of the code before the one engine (a fit per series, with `auto`'s choices remembered).

    python benchmarks/step_speed.py --old-tree DIR [--repeat 3]

DIR is a checkout of the old code (`git worktree add DIR 39b85a2`), run with this virtualenv's
Python and PYTHONPATH=DIR. Both sides judge the demo's last day (10 Dec 2025) in one process
(workers=1) after a first check of the day before warmed them up (old: auto's model choices
saved; new: every series' detector state kept, as the daemon keeps it in its store). Printed:
CPU seconds per check (the best of --repeat) and the ratio, plus the new engine's share: the
steps themselves, without reading the source and explaining the alerts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DAY_BEFORE = "2025-12-10T08:00:00+01:00"  # the morning after 9 Dec: judges 9 Dec
MORNING = "2025-12-11T08:00:00+01:00"  # judges 10 Dec, the demo's last day

OLD_SIDE = """
import json, sys, time, pandas as pd
from forecaster.pipeline import check
from forecaster.settings import load_config
settings = load_config(sys.argv[1]).model_copy(update={"state_dir": sys.argv[2]})
check(settings, at=pd.Timestamp(sys.argv[3]), workers=1)  # warm: auto's choices remembered
best = []
for _ in range(int(sys.argv[5])):
    began = time.process_time()
    report = check(settings, at=pd.Timestamp(sys.argv[4]), workers=1)
    best.append(time.process_time() - began)
print(json.dumps({"seconds": min(best), "series": len(report.results), "alerts": len(report.alerts)}))
"""


def old_check(tree: Path, repeat: int) -> dict[str, float]:
    """The old code's warm check in its own process (PYTHONPATH = the old checkout)."""
    with tempfile.TemporaryDirectory() as state:
        done = subprocess.run(
            [sys.executable, "-c", OLD_SIDE, str(ROOT / "config" / "kpiwatch.yaml"), state, DAY_BEFORE, MORNING,
             str(repeat)],
            env={**os.environ, "PYTHONPATH": str(tree)}, cwd=tempfile.gettempdir(), capture_output=True, text=True,
            check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def new_check(repeat: int) -> dict[str, float]:
    """This code: a check that steps every series from the states of the day before."""
    import pandas as pd

    from forecaster.pipeline import check, detector_of, evaluate_series
    from forecaster.settings import load_config

    settings = load_config(ROOT / "config" / "kpiwatch.yaml")
    began = time.process_time()
    before = check(settings, at=pd.Timestamp(DAY_BEFORE), workers=1)
    cold = time.process_time() - began
    best, steps = [], []
    for _ in range(repeat):
        states = {key: _copy(state) for key, state in before.states.items()}
        began = time.process_time()
        report = check(settings, at=pd.Timestamp(MORNING), workers=1, states=states)
        best.append(time.process_time() - began)
        states = {key: _copy(state) for key, state in before.states.items()}
        began = time.process_time()
        for result in report.results:  # the steps alone, on the series the check read
            kpi = settings.kpi(result.series.name)
            key = (result.series.name, ",".join(f"{k}={v}" for k, v in sorted(result.series.segment.items())))
            evaluate_series(result.series, kpi, detector_of(settings, kpi), report.period[result.series.name],
                            states[key])
        steps.append(time.process_time() - began)
    return {"seconds": min(best), "steps": min(steps), "cold": cold, "series": len(report.results),
            "alerts": len(report.alerts)}


def _copy(state: object) -> object:
    import pickle

    return pickle.loads(pickle.dumps(state))  # as the store hands it back: stepping changes it in place


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-tree", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    old = old_check(args.old_tree, args.repeat)
    new = new_check(args.repeat)
    print(f"# judging 10 Dec 2025 for the demo's series, one process, best of {args.repeat}; "
          f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores")
    print(f"old warm check (fit per series, auto's choices remembered): {old['seconds']:7.2f} CPU-s, "
          f"{old['series']} series, {old['alerts']} alerts")
    print(f"new check stepping stored states:                          {new['seconds']:7.2f} CPU-s, "
          f"{new['series']} series, {new['alerts']} alerts  ({old['seconds'] / new['seconds']:.1f}x faster)")
    print(f"  of which the detector steps:                             {new['steps']:7.3f} CPU-s "
          f"({new['steps'] / new['series'] * 1000:.2f} ms per series; {old['seconds'] / new['steps']:.0f}x)")
    print(f"new check without states (walks every series' history):    {new['cold']:7.2f} CPU-s")


if __name__ == "__main__":
    main()
