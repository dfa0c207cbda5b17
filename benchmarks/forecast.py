"""Forecast accuracy and speed of kpiwatch's models against peers, on real series.

Runs `forecaster.backtest.backtest` (rolling origins, 95% bands) for every registered kpiwatch
model plus two peers that exist only in this script: plain statsmodels ETS (AAA) and plain
Prophet (its own defaults, 95% width). Prints Markdown tables to paste into BENCHMARKS.md;
progress goes to stderr. Timings are meant as ratios to Prophet within one run, not as
absolute seconds.

    .venv/bin/python benchmarks/forecast.py            # full run, a few minutes on 2 cores
    .venv/bin/python benchmarks/forecast.py --quick    # fewer origins, for a smoke check
    .venv/bin/python benchmarks/forecast.py --data /path/to/shared/data
    .venv/bin/python benchmarks/forecast.py --dataset peyton   # only datasets whose title has "peyton"

Datasets: the data README's protocol on Peyton Manning (10 origins x 28 days, 1,095 training
days); the other daily Prophet examples (5 origins x 28, 1,095 days or all available); a few NAB
series (horizon one day of periods, 5 origins, 14 days of periods for training, or all there is).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd

from forecaster.backtest import ModelScore, backtest, rolling_origins
from forecaster.models import model_names, season_length
from forecaster.models.base import (
    check_horizon,
    check_level,
    future_index,
    interpolate_gaps,
    register,
    require_fitted,
)
from forecaster.models.auto import AutoModel
from forecaster.models.prophet import _private_cmdstan_folder, quiet_prophet
from forecaster.settings import Settings
from forecaster.sources.base import to_kpi_series
from forecaster.sources.csv import read_series_csv
from forecaster.types import BadInputError, Forecast, KPISeries

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LEVEL = 0.95
REFERENCE = "prophet"  # ratios are to kpiwatch's Prophet, which is also the README's peer setup
RESELECT_DAYS = Settings.model_fields["reselect_days"].default  # how often the service re-selects
PROPHET_FIT_LIMIT = 2.0  # seconds; above this on NAB the Prophet window would have to be capped
# ETSModel estimates one initial state per season phase; at 288 (5-minute data) that optimisation
# takes minutes, so beyond this the peer starts from statsmodels' heuristic initial states.
ETS_ESTIMATED_MAX_SEASON = 168

# The data README's figures for Peyton Manning (2 cores, 10 origins x 28 days, 1,095 training days).
PEYTON_PEERS = (
    "Published peers (data README, same protocol): Prophet MASE 0.92, coverage 0.95, ~200 ms/fit; "
    "SARIMAX 1.00; ETS variants and a seasonal-naive band 1.09-1.14."
)


# --------------------------------------------------------------------------- peer models


class StatsmodelsETS:
    """Plain statsmodels ETSModel(A, A, A), not damped, season from the frequency (peer).

    Gaps are filled by linear interpolation (ETSModel cannot skip NaN); the initial states are
    estimated (statsmodels' default) up to a season of ETS_ESTIMATED_MAX_SEASON periods and
    heuristic beyond. The band is ETSModel's analytical one.
    """

    name = "statsmodels_ets"

    def __init__(self) -> None:
        self.result_: Any = None
        self.y_: pd.Series | None = None

    def fit(self, y: pd.Series) -> Self:
        from statsmodels.tsa.exponential_smoothing.ets import ETSModel

        m = season_length(y.index.freqstr or "D")
        init = "estimated" if m <= ETS_ESTIMATED_MAX_SEASON else "heuristic"
        endog = pd.Series(interpolate_gaps(y).to_numpy(dtype="float64"))
        model = ETSModel(
            endog, error="add", trend="add", seasonal="add", seasonal_periods=m, initialization_method=init
        )
        with warnings.catch_warnings():
            # A peer is run as people run it: statsmodels' convergence chatter is not a result.
            warnings.simplefilter("ignore")
            self.result_ = model.fit(disp=False)
        self.y_ = y
        return self

    def predict(self, horizon: int, level: float = 0.95) -> Forecast:
        require_fitted(self, "result_")
        assert self.y_ is not None
        horizon, level = check_horizon(horizon), check_level(level)
        n = len(self.y_)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frame = self.result_.get_prediction(start=n, end=n + horizon - 1).summary_frame(alpha=1 - level)
        index = future_index(self.y_, horizon)
        return Forecast(
            mean=pd.Series(frame["mean"].to_numpy(dtype="float64"), index=index),
            lower=pd.Series(frame["pi_lower"].to_numpy(dtype="float64"), index=index),
            upper=pd.Series(frame["pi_upper"].to_numpy(dtype="float64"), index=index),
            level=level,
            model=self.name,
        )


class PlainProphet:
    """Prophet with its own defaults except `interval_width` = the level (peer).

    Unlike kpiwatch's wrapper: additive seasonality, no holidays or retail events, and Prophet's
    "auto" seasonalities (yearly only from two years of data). Same temp-file handling and the
    same seeded predict, so the timing difference is the model, not the plumbing.
    """

    name = "prophet_plain"

    def __init__(self) -> None:
        self.prophet_: Any = None
        self.y_: pd.Series | None = None

    def fit(self, y: pd.Series) -> Self:
        quiet_prophet()
        from prophet import Prophet

        quiet_prophet()
        ds = y.index.tz_convert("UTC").tz_localize(None)
        frame = pd.DataFrame({"ds": ds, "y": y.to_numpy(dtype="float64")}).dropna()
        model = Prophet(interval_width=LEVEL)
        with _private_cmdstan_folder(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            model.fit(frame)
        self.prophet_, self.y_ = model, y
        return self

    def predict(self, horizon: int, level: float = 0.95) -> Forecast:
        require_fitted(self, "prophet_")
        assert self.y_ is not None
        horizon, level = check_horizon(horizon), check_level(level)
        index = future_index(self.y_, horizon)
        self.prophet_.interval_width = level
        state = np.random.get_state()
        np.random.seed(0)  # the band is sampled; seeded like kpiwatch's so runs repeat
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                out = self.prophet_.predict(pd.DataFrame({"ds": index.tz_convert("UTC").tz_localize(None)}))
        finally:
            np.random.set_state(state)
        return Forecast(
            mean=pd.Series(out["yhat"].to_numpy(), index=index),
            lower=pd.Series(out["yhat_lower"].to_numpy(), index=index),
            upper=pd.Series(out["yhat_upper"].to_numpy(), index=index),
            level=level,
            model=self.name,
        )


PEERS = (StatsmodelsETS, PlainProphet)


def register_peers() -> list[str]:
    """Register the peers in this process only (never in the package), return their names."""
    for peer in PEERS:
        register(peer.name)(peer)
    return [peer.name for peer in PEERS]


# --------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class Dataset:
    """One benchmark series and its protocol.

    horizon_days / train_days: in days, turned into periods by the series' frequency
    (28 and 1,095 for daily data; one day and 14 days of 5-minute data = 288 and 4,032);
    train_days None = all the history before each origin.
    """

    title: str
    path: str  # relative to the data folder
    origins: int
    horizon_days: float
    train_days: float | None
    timestamp_col: str = "timestamp"
    value_col: str = "value"


DATASETS = (
    Dataset("Peyton Manning (README protocol)", "forecast-examples/example_wp_log_peyton_manning.csv", 10, 28, 1095, "ds", "y"),
    Dataset("Wikipedia R", "forecast-examples/example_wp_log_R.csv", 5, 28, 1095, "ds", "y"),
    # outliers1's bad block is all of 2010, years before any 1,095-day window: only a model fitted
    # on the whole history can be hurt by it, so it is compared with R on the whole history too.
    Dataset("Wikipedia R, all history", "forecast-examples/example_wp_log_R.csv", 5, 28, None, "ds", "y"),
    Dataset("Wikipedia R, outliers 1, all history", "forecast-examples/example_wp_log_R_outliers1.csv", 5, 28, None, "ds", "y"),
    # outliers2's block (June 2015) lies inside every origin's 1,095-day window.
    Dataset("Wikipedia R, outliers 2", "forecast-examples/example_wp_log_R_outliers2.csv", 5, 28, 1095, "ds", "y"),
    Dataset("Pedestrians (COVID)", "forecast-examples/example_pedestrians_covid.csv", 5, 28, 1095, "ds", "y"),
    Dataset("NAB nyc_taxi (30 min)", "nab-dev/data/realKnownCause/nyc_taxi.csv", 5, 1, 14),
    Dataset("NAB speed_6005 (5 min, gappy)", "nab-dev/data/realTraffic/speed_6005.csv", 5, 1, 14),
    Dataset("NAB ec2_cpu_utilization_825cc2 (5 min)", "nab-dev/data/realAWSCloudwatch/ec2_cpu_utilization_825cc2.csv", 5, 1, 14),
    Dataset("NAB art_daily_small_noise (5 min)", "nab-dev/data/artificialNoAnomaly/art_daily_small_noise.csv", 5, 1, 14),
)


def load(dataset: Dataset, data_dir: Path) -> tuple[KPISeries, str]:
    """The series through `read_series_csv`, and a note ("" when the file read cleanly).

    NAB's traffic files have irregular timestamps (a reading every ~5 min, sometimes 3 or 8
    apart), which `read_series_csv` rightly rejects; for those the benchmark snaps each reading
    to the 5-minute grid (mean of readings that share a slot) and says so in the note.
    """
    path = data_dir / dataset.path
    try:
        return read_series_csv(path, dataset.timestamp_col, dataset.value_col, name=path.stem), ""
    except BadInputError as err:
        if "not evenly spaced" not in str(err):
            raise
        raw = pd.read_csv(path, parse_dates=[dataset.timestamp_col])
        slots = raw[dataset.timestamp_col].dt.floor("5min")
        snapped = raw.set_index(slots)[dataset.value_col].astype("float64").groupby(level=0).mean()
        note = f"read_series_csv rejects it ({str(err).split(': ', 1)[-1]}); snapped to a 5-min grid, mean per slot"
        return to_kpi_series(path.stem, snapped, freq="5min", origin=str(path)), note


def periods_per_day(freq: str) -> float:
    """How many periods of `freq` make one day: 1 for "D", 288 for "5min"."""
    return pd.Timedelta(days=1) / pd.Timedelta(pd.tseries.frequencies.to_offset(freq))


# --------------------------------------------------------------------------- running and printing


@dataclass
class SelectionTimer:
    """Wall-clock time `auto` spends in its selection backtest (`AutoModel._select`).

    The backtest fits `auto` afresh at every origin, so its ms/fit holds a selection each time;
    the service remembers a selection for `reselect_days` (default 30) and a daily check pays
    only the chosen model's fit. The timer lets the report split the two.
    """

    calls: int = 0
    seconds: float = 0.0

    @contextmanager
    def watching(self) -> Iterator[None]:
        original = AutoModel._select

        def timed(model: AutoModel, y: pd.Series) -> Any:
            began = time.perf_counter()
            try:
                return original(model, y)
            finally:
                self.calls += 1
                self.seconds += time.perf_counter() - began

        AutoModel._select = timed  # type: ignore[method-assign]
        try:
            yield
        finally:
            AutoModel._select = original  # type: ignore[method-assign]


@dataclass(frozen=True)
class Result:
    dataset: Dataset
    series: KPISeries
    note: str
    horizon: int
    origins: int
    train_window: int
    train_sizes: tuple[int, int]
    scores: list[ModelScore]
    seconds: float
    selection: SelectionTimer


def run(dataset: Dataset, data_dir: Path, models: Sequence[str], quick: bool, origins: int | None = None) -> Result:
    """Backtest every model on one dataset, with progress on stderr; `origins` replaces the
    dataset's own number of origins (None = keep it)."""
    series, note = load(dataset, data_dir)
    per_day = periods_per_day(series.freq)
    horizon = int(round(dataset.horizon_days * per_day))
    train_window = len(series.values) if dataset.train_days is None else int(round(dataset.train_days * per_day))
    origins = origins or dataset.origins
    origins = min(origins, 3) if quick else origins
    cuts = rolling_origins(len(series.values), horizon, origins, min_train=horizon)
    sizes = [min(cut, train_window) for cut in cuts]

    live = sys.stderr.isatty()  # a redirected log gets one line per dataset, not every \r update

    def progress(done: int, total: int) -> None:
        if live or done == total:
            print(f"\r  {dataset.title}: {done}/{total} fits", end="", file=sys.stderr, flush=True)

    began = time.perf_counter()
    selection = SelectionTimer()
    with selection.watching():
        scores = backtest(
            series.values, models, horizon=horizon, origins=origins, level=LEVEL,
            train_window=train_window, progress=progress,
        )
    seconds = time.perf_counter() - began
    print(f"  ({seconds:.1f} s)", file=sys.stderr)
    return Result(dataset, series, note, horizon, origins, train_window, (min(sizes), max(sizes)), scores, seconds,
                  selection)


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def _ratio(value: float, reference: float) -> str:
    if math.isnan(value) or math.isnan(reference) or reference == 0:
        return "n/a"
    ratio = value / reference
    return f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:.3f}"  # seasonal naive is ~0.005x Prophet


def print_result(result: Result) -> None:
    """One dataset's Markdown table, its protocol above it."""
    s = result.series
    values = s.values
    missing = int(values.isna().sum())
    lo, hi = result.train_sizes
    trained = f"{lo}" if lo == hi else f"{lo}-{hi}"
    print(f"### {result.dataset.title}")
    print()
    print(f"`{result.dataset.path}`: {len(values)} periods at {s.freq} ({missing} missing), "
          f"{values.index[0]:%Y-%m-%d} to {values.index[-1]:%Y-%m-%d}. "
          f"{result.origins} origins x {result.horizon} periods, train window "
          f"{'all history' if result.dataset.train_days is None else result.train_window} "
          f"(trained on {trained} periods), level {LEVEL}, MASE season m = {season_length(s.freq)}. "
          f"{result.seconds:.0f} s.")
    if result.note:
        print(f"Note: {result.note}.")
    print()
    print("| model | MASE | sMAPE % | coverage | MSIS | ms/fit | fallbacks | MASE / prophet | time / prophet |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    ref = next((x for x in result.scores if x.model == REFERENCE), None)
    for x in result.scores:
        print(
            f"| {x.model} | {_fmt(x.mase)} | {_fmt(x.smape, 2)} | {_fmt(x.coverage)} | {_fmt(x.msis, 2)} "
            f"| {x.seconds_per_fit * 1000:.1f} | {x.fallbacks}/{x.origins} "
            f"| {_ratio(x.mase, ref.mase) if ref else 'n/a'} "
            f"| {_ratio(x.seconds_per_fit, ref.seconds_per_fit) if ref else 'n/a'} |"
        )
    print_auto_split(result)
    if ref is not None and ref.seconds_per_fit > PROPHET_FIT_LIMIT:
        print(f"\nWarning: Prophet averaged {ref.seconds_per_fit:.1f} s per fit here, over the "
              f"{PROPHET_FIT_LIMIT:.0f} s budget; cap its train window.")
    print()


def print_auto_split(result: Result) -> None:
    """auto's ms/fit split into the daily fit (choice remembered) and the selection backtest."""
    auto = next((x for x in result.scores if x.model == "auto"), None)
    timer = result.selection
    if auto is None or timer.calls == 0:
        return
    per_selection = timer.seconds / timer.calls
    daily = auto.seconds_per_fit - timer.seconds / auto.origins
    plain = next((x for x in result.scores if x.model == "prophet_plain"), None)
    versus = f" = {_ratio(daily, plain.seconds_per_fit)}x prophet_plain" if plain else ""
    amortised = daily + per_selection / RESELECT_DAYS
    print(f"\nauto's {auto.seconds_per_fit * 1000:.1f} ms/fit = daily fit with its choice remembered "
          f"{daily * 1000:.1f} ms{versus} + selection backtest {per_selection * 1000:.1f} ms "
          f"({timer.calls} selections); re-selecting every {RESELECT_DAYS} days: "
          f"{amortised * 1000:.1f} ms per daily check"
          f"{f' = {_ratio(amortised, plain.seconds_per_fit)}x prophet_plain' if plain else ''}.")


def print_summary(results: Sequence[Result], models: Sequence[str]) -> None:
    """MASE (coverage) of every model on every dataset in one table."""
    print("### Summary: MASE (coverage)")
    print()
    print("| dataset | " + " | ".join(models) + " |")
    print("|---|" + "---:|" * len(models))
    for result in results:
        by_model = {x.model: x for x in result.scores}
        cells = [f"{_fmt(by_model[m].mase, 2)} ({_fmt(by_model[m].coverage, 2)})" for m in models]
        print(f"| {result.dataset.title} | " + " | ".join(cells) + " |")
    print()


def header(argv: Sequence[str]) -> None:
    """What was run, when and where, so the tables can be pasted with their provenance."""
    import prophet
    import statsmodels

    command = " ".join([".venv/bin/python", "benchmarks/forecast.py", *argv])
    print("## Forecast accuracy (benchmarks/forecast.py)")
    print()
    print(f"- command: `{command}`")
    print(f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"- machine: {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}")
    print(f"- versions: numpy {np.__version__}, pandas {pd.__version__}, statsmodels {statsmodels.__version__}, "
          f"prophet {prophet.__version__}")
    print("- every fit goes through `fit_forecast` (fallback to seasonal_naive counted; forecasts of "
          "non-negative series clipped at 0); one process, one fit at a time")
    print("- MASE = mean over origins of (test MAE / in-sample seasonal-naive MAE of that origin's "
          "training data); MSIS scaled the same way, alpha = 0.05; coverage and sMAPE pooled over all "
          "test points; NaN actuals skipped")
    print("- peers: `statsmodels_ets` = plain statsmodels ETSModel AAA (not damped); `prophet_plain` = "
          "Prophet defaults + interval_width 0.95 (additive, no holidays). kpiwatch's `prophet` forces "
          "yearly seasonality from 1 year, multiplicative seasonality on positive series, retail events")
    print()


def _positive(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return number


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="at most 3 origins per dataset (a smoke run)")
    parser.add_argument("--dataset", action="append", default=[], metavar="TEXT",
                        help="only datasets whose title contains TEXT (case-insensitive; repeatable; default all)")
    parser.add_argument("--origins", type=_positive, default=None, metavar="N",
                        help="rolling origins for every dataset instead of its own (default 10 for Peyton, 5 "
                             "for the others); more origins span more seasons, which coverage needs: 5 windows "
                             "of 28 days lie in one season")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"the shared data folder (default {DEFAULT_DATA})")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    models = model_names() + register_peers()  # kpiwatch's own first, taken before the peers join
    header(argv)
    began = time.perf_counter()
    results = []
    chosen = [d for d in DATASETS if not args.dataset or any(t.lower() in d.title.lower() for t in args.dataset)]
    if not chosen:
        titles = "; ".join(d.title for d in DATASETS)
        print(f"--dataset {' '.join(args.dataset)!r} matches no dataset; titles: {titles}", file=sys.stderr)
        return 2
    for dataset in chosen:
        result = run(dataset, args.data, models, args.quick, args.origins)
        print_result(result)
        sys.stdout.flush()
        results.append(result)
        if dataset is DATASETS[0]:
            print(PEYTON_PEERS)
            print()
    print_summary(results, models)
    print(f"Total {time.perf_counter() - began:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
