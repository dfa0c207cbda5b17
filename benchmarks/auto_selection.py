"""How `auto`'s choice per origin compares with each candidate's, on one daily CSV (ds,y).

For each of 30 rolling origins (28 days each, the last ending at the file's end, training on
the `TRAIN_DAYS` before it) this replays auto's selection backtest (its six windows before the
origin) and prints the model chosen by the pooled mean window error (auto's rule) and by the
median window error (an alternative), then every candidate's MASE on the 28 days after the
origin. The last line: mean test MASE of each rule and of Prophet alone. The holiday calendar
and the event rule are left out, so the mean rule's figure differs a little from auto's in
`benchmarks/forecast.py`.

    .venv/bin/python benchmarks/auto_selection.py ../shared/data/forecast-examples/example_wp_log_peyton_manning.csv
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from forecaster.backtest import naive_scale, rolling_origins  # noqa: E402
from forecaster.calendar import Calendar  # noqa: E402
from forecaster.models import auto as auto_module  # noqa: E402
from forecaster.models.base import make_model  # noqa: E402
from forecaster.sources.csv import read_series_csv  # noqa: E402

ORIGINS = 30
HORIZON = 28  # days per test window
TRAIN_DAYS = 1095


def window_errors(model: auto_module.AutoModel, train, name: str) -> list[float]:
    """MAE of candidate `name` on each of auto's selection windows inside `train`."""
    horizon = auto_module._backtest_horizon(train)
    errors = []
    for cut in auto_module._cuts(len(train), horizon, model.origins):
        forecast = model._make(name).fit(train.iloc[:cut]).predict(horizon, 0.8).mean.to_numpy()
        errors.append(float(np.nanmean(np.abs(train.iloc[cut : cut + horizon].to_numpy() - forecast))))
    return errors


def main(path: str) -> None:
    y = read_series_csv(path, "ds", "y").values
    chosen: dict[str, list[float]] = {"mean": [], "median": [], "prophet": []}
    for cut in rolling_origins(len(y), HORIZON, ORIGINS, min_train=HORIZON):
        train = y.iloc[max(0, cut - TRAIN_DAYS) : cut]
        actual = y.to_numpy()[cut : cut + HORIZON]
        scale = naive_scale(train.to_numpy(), 7)
        model = make_model("auto", calendar=Calendar(None))
        names = model._candidates(train)
        per_window = {name: window_errors(model, train, name) for name in names}
        test = {}
        for name in names:
            forecast = model._make(name).fit(train).predict(HORIZON, 0.95).mean.to_numpy()
            test[name] = float(np.nanmean(np.abs(actual - forecast)) / scale)
        by_mean = min(names, key=lambda n: (round(float(np.mean(per_window[n])), 6), names.index(n)))
        by_median = min(names, key=lambda n: (round(float(np.median(per_window[n])), 6), names.index(n)))
        chosen["mean"].append(test[by_mean])
        chosen["median"].append(test[by_median])
        chosen["prophet"].append(test.get("prophet", np.nan))
        scores = " ".join(f"{name} {value:.3f}" for name, value in test.items())
        print(f"{y.index[cut].date()}  mean rule: {by_mean:<15} median rule: {by_median:<15} test MASE: {scores}", flush=True)
    print("mean test MASE:", {rule: round(float(np.nanmean(values)), 3) for rule, values in chosen.items()})


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
