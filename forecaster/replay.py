"""Replay: the one engine walked over history, "how many alerts would I have had last quarter?".

Two faces, one detector (`forecaster.detect`):
- `replay_rows`: a file's rows as they are (CSV), put on the grid of their usual spacing and
  walked forward with a detector for that spacing; one output row per input row.
- `replay_kpi` (in `alerts.rehearsal`): a configured KPI straight from its source, run as
  the daemon on a simulated clock with a throw-away store, so its count of Slack messages is what
  the daemon would have sent.

`anomaly` in the output is 1 where the service would announce the period: an alert that starts
an episode, or repeats an ongoing one after `repeat_hours` (`Judgement.notice`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from forecaster.detect import Detector, Rules, SeriesFeedback, history_needed
from forecaster.detect.engine import seasonal_history
from forecaster.i18n import t
from forecaster.sources.base import to_kpi_series
from forecaster.timegrid import (
    Step,
    alias,
    calendar_days,
    describe_step,
    month_periods,
    months_per_period,
    periods_per_day,
    usual_spacing,
)
from forecaster.types import BadInputError, Judgement, KPISeries
from forecaster.units import format_number

COLUMNS = ["timestamp", "value", "expected", "lower", "upper", "score", "anomaly"]
Progress = Callable[[int, int], None]
DetectorFor = Callable[[str], Detector]  # a pandas alias -> the detector for data of that spacing


def default_detectors(rules: Rules = Rules()) -> DetectorFor:
    """The detectors `kpiwatch replay --csv` uses without a config: `rules` (default: either way
    is news, level 0.99) and the model a KPI gets by default, no calendar."""
    from forecaster.settings import DEFAULT_MODEL

    return lambda freq: Detector(rules, freq, model=DEFAULT_MODEL)


def replay(series: KPISeries, detector: Detector, progress: Progress | None = None,
           feedback: SeriesFeedback | None = None) -> pd.DataFrame:
    """Judge every period of `series` causally; returns the COLUMNS (one row per period).

    Rows before enough history exists (and unjudged ones: gaps, a first event day, a period
    marked expected) have an empty score and anomaly 0. BadInputError when no period could be
    judged. feedback: false alarms and expected periods of the series, applied as the daemon
    would (`forecaster.detect.feedback`) [None].
    """
    got = int(series.values.notna().sum())
    if got < history_needed(series.freq):  # nothing could be judged: one error, not an empty result
        raise _too_short(series.label, got, series.freq)
    judgements: list[Judgement] = []
    state = None
    index = series.values.index
    chunk = max(len(index) // 100, 1)
    for start in range(0, len(index), chunk):
        state, done = detector.advance(state, series, index[min(start + chunk, len(index)) - 1], feedback)
        judgements.extend(done)
        if progress:
            progress(len(judgements), len(index))
    return frame_of(judgements)


def frame_of(judgements: list[Judgement]) -> pd.DataFrame:
    """The COLUMNS of judged periods; band and score empty where a period was not judged."""
    judged = [not np.isnan(j.score) for j in judgements]
    return pd.DataFrame({
        "timestamp": [j.period for j in judgements],
        "value": [j.actual for j in judgements],
        "expected": [j.expected if ok else np.nan for j, ok in zip(judgements, judged, strict=True)],
        "lower": [j.lower for j in judgements],
        "upper": [j.upper for j in judgements],
        "score": [j.score for j in judgements],
        "anomaly": [int(bool(j.notice)) for j in judgements],
    })


def summary(frame: pd.DataFrame, freq: str) -> str:
    """One line: how many alerts, over how many judged periods (and days), and how often.

    `freq`: the rows' pandas alias ("5min", "D", "7D", "MS", ...). The rate is per 30 days, or per
    year for data coarser than daily. History counts the rows with a value before the first
    judged one; rows without a value (gaps) are counted apart, as they are never judged.
    """
    judged = int(frame["score"].notna().sum())
    alerts = int(frame["anomaly"].sum())
    if judged == 0:
        return t("commands.replay_file_none")
    if months_per_period(freq):
        days = calendar_days(pd.DatetimeIndex(frame["timestamp"][frame["score"].notna()]), freq)
    else:
        days = judged / periods_per_day(freq)
    if periods_per_day(freq) < 1:
        rate = t("commands.replay_per_year", rate=format_number(alerts / days * 365.2425, 1, grouping=False))
    elif days >= 1:
        rate = t("commands.replay_per_30_days", rate=format_number(alerts / days * 30, 1, grouping=False))
    else:
        rate = t("commands.replay_under_a_day", alerts=format_number(alerts, grouping=False))
    first = frame["score"].notna().to_numpy().argmax()
    history = int(frame["value"].iloc[:first].notna().sum())
    gaps = int(frame["value"].isna().sum())
    return t(
        "commands.replay_file_summary", alerts=format_number(alerts), judged=format_number(judged),
        days=format_number(days, 1), rate=rate, history=format_number(history),
        gaps=t("commands.replay_file_gaps", gaps=format_number(gaps)) if gaps else "",
    )


def replay_rows(
    raw: pd.Series, name: str, detector_for: DetectorFor, progress: Progress | None = None,
    feedback: SeriesFeedback | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """`replay_file` without the per-period frame: (one row per input row, notes)."""
    rows, _, notes = replay_file(raw, name, detector_for, progress, feedback)
    return rows, notes


def replay_file(
    raw: pd.Series, name: str, detector_for: DetectorFor, progress: Progress | None = None,
    feedback: SeriesFeedback | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Replay a file's rows as they are: (one output row per input row, one row per period of
    the grid they were judged on — what `summary` counts —, notes on what was resolved).

    Rows that repeat a timestamp or lie off the usual spacing share the period of a grid at the
    usual spacing. A long-format export (most periods hold several rows: one per channel, say)
    is judged on the sum of each period's rows, as `check` sums a KPI's parts; a stray repeated
    timestamp in a file of one row per period on their mean. Each row carries its period's
    judgement; only the period's first row can be an alert. The spacing is a fixed step (5
    minutes, an hour, a day, a week from the first row), or calendar months when most rows sit
    on month starts or month ends.
    BadInputError (one line) when no period could be judged: too few values, or one timestamp.
    feedback: the series' false alarms and expected periods (on the grid's period starts) [None].
    """
    stamps = pd.DatetimeIndex(raw.index)
    values = raw.to_numpy(dtype="float64")
    if len(stamps) < 2:
        raise _too_short(name, int(np.count_nonzero(~np.isnan(values))), None)
    if stamps.nunique() == 1:
        raise BadInputError(f"{name}: all {len(stamps)} rows have the same timestamp ({stamps[0]}); "
                            "give one row per period, each with its own timestamp")
    order = np.argsort(stamps.asi8, kind="stable")
    step = usual_spacing(stamps[order].unique())
    period = np.empty(len(stamps), dtype=np.int64)
    if isinstance(step, pd.Timedelta):
        offsets = stamps[order] - stamps[order][0]
        # Days and longer are calendar periods: local midnights move by an hour at a DST change, so
        # a row belongs to the nearest step; finer rows off the grid belong to the step they fall in.
        period[order] = np.rint(offsets / step).astype(np.int64) if step >= pd.Timedelta(days=1) else offsets // step
        grid = pd.date_range(stamps[order][0], periods=int(period.max()) + 1, freq=step)
    else:
        period[order], grid = month_periods(stamps[order], step)
    groups = pd.Series(values).groupby(period)
    long_format = float((groups.size() > 1).mean()) > 0.5
    combined = groups.sum(min_count=1) if long_format else groups.mean()
    on_grid = pd.Series(np.nan, index=grid)
    on_grid.iloc[combined.index.to_numpy()] = combined.to_numpy()
    freq = alias(step)
    if int(on_grid.notna().sum()) < history_needed(freq):
        raise _too_short(name, int(on_grid.notna().sum()), freq)
    series = to_kpi_series(name, on_grid, freq=freq, origin=name)
    judged = replay(series, detector_for(freq), progress, feedback)
    rows = judged.iloc[period].reset_index(drop=True)
    first_of_period = ~pd.Series(period).duplicated().to_numpy()
    rows["anomaly"] = rows["anomaly"].to_numpy() * first_of_period
    rows["timestamp"] = stamps
    rows["value"] = values
    detector = detector_for(freq)
    return rows[COLUMNS], judged, _notes(stamps, period, grid, step, long_format) + _warm_up_note(judged, detector)


def _warm_up_note(judged: pd.DataFrame, detector: Detector) -> list[str]:
    """A note when sub-daily data alerted before two daily cycles were seen: until then a model
    without the daily season judges, so the first mornings' rise can alert."""
    plan = detector.plan
    if not plan.day or plan.season <= 1:
        return []
    warm = min(seasonal_history(plan.season), len(judged))
    early = int(judged["anomaly"].iloc[:warm].sum())
    if not early:
        return []
    return [f"{early} alert(s) in the first {warm / plan.per_day:.1f} days, judged before two daily cycles "
            "were seen (by a model without the daily season): they may be the daily cycle itself"]


def _too_short(name: str, got: int, freq: str | None) -> BadInputError:
    """The one error for a file too short to judge any period; `freq` None = unknown spacing."""
    if freq is None:
        need = f"{history_needed('D')} values ({history_needed('MS')} for weekly or monthly data)"
    else:
        need = f"{history_needed(freq)} values"
    return BadInputError(f"{name}: too little history to replay: needs at least {need}, got {got}; "
                         "give a longer file")


def _notes(stamps: pd.DatetimeIndex, period: np.ndarray, grid: pd.DatetimeIndex, step: Step,
           long_format: bool) -> list[str]:
    notes = []
    repeated = int(pd.Series(period).duplicated().sum())
    if repeated and long_format:
        notes.append(f"most {describe_step(step)} periods have several rows (a long-format export): each period "
                     f"is judged on the sum of its rows ({repeated:,} rows added to another)")
    elif repeated:
        notes.append(f"{repeated} row(s) shared a {describe_step(step)} period with another row (duplicate or "
                     "irregular timestamps): judged on their mean, alerting once")
    # A daily (or longer) row an hour off the grid is a local midnight after a DST change: on time.
    daily = not isinstance(step, pd.Timedelta) or step >= pd.Timedelta(days=1)
    tolerance = pd.Timedelta(hours=1) if daily else pd.Timedelta(0)
    off_grid = int((abs(stamps - grid[period]) > tolerance).sum())
    if off_grid:
        notes.append(f"{off_grid} row(s) lie between the {describe_step(step)} steps and were judged with their period")
    missing = len(grid) - len(np.unique(period))
    if missing:
        notes.append(f"{missing:,} period(s) of the {describe_step(step)} grid have no row in the file: kept as gaps "
                     "(not judged; the model carries on from its forecast)")
    return notes
