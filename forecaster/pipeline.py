"""Where the pieces meet: source -> KPI series -> detector -> explainer -> alerts.

The CLI and the daemon both call these functions and hold no logic of their own.
`evaluate_series` is a pure function of (series, detector, period, state) so it can be run in a
worker process, batched, or shipped to a cluster; I/O stays in `check`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from forecaster.calendar import Calendar
from forecaster.completeness import (
    completeness,
    is_complete,
    rows_per_period,
    usual_phase,
)
from forecaster.executor import Executor, make_executor
from forecaster.detect import Detector, SeriesFeedback, State, StateFormatError, pack_state, unpack_state
from forecaster.detect.engine import RECENT, STATE_VERSION, feedback_changed
from forecaster.detect import reasons
from forecaster.detect.rules import Rules, held_back, to_anomaly
from forecaster.explain import Evaluated, add_related_hints, build_alerts
from forecaster.i18n import metric_name, t
from forecaster.kpis import kpi_series
from forecaster.models import fit_forecast
from forecaster.settings import AUTO_MODEL, KPIConfig, Settings
from forecaster.sources import Source, make_source
from forecaster.timegrid import last_closed_period
from forecaster.types import (
    Alert,
    Anomaly,
    BadInputError,
    Forecast,
    Judgement,
    KPISeries,
    PackedState,
    segment_key,
    segment_label,
)
from forecaster.units import currency_of, format_percent, format_period

Progress = Callable[[int, int], None]  # (series finished, series in all)

__all__ = ["CheckReport", "SeriesResult", "check", "evaluate_series", "last_closed_period"]


@dataclass(frozen=True)
class SeriesResult:
    """One series judged up to a period; `skipped` says why that period was not judged.

    judgements: the last `check_window` periods (the band a chart draws); `forecast` gives the
    same as a Forecast. state: the detector's state after the period, packed (the daemon stores
    it). fresh: how many of `judgements` (the latest ones) were judged by this check, the rest
    were judged before from the same values (the store writes the fresh ones).
    held_back: why the period did not alert though it was outside its band the way the KPI
    alerts (a guardrail, with the numbers), or why a ratio could not be judged (a zero
    denominator); "" otherwise (`rules.held_back`).
    needs_history: the series came as a recent window only and its state cannot step on from
    it (none stored, other settings, older than the window, or revised values): judge it again
    from its whole history.
    """

    series: KPISeries
    judgements: tuple[Judgement, ...]
    anomaly: Anomaly | None
    skipped: str = ""
    state: PackedState | None = None
    held_back: str = ""
    level: float = 0.95
    fresh: int = 0
    needs_history: bool = False

    @property
    def forecast(self) -> Forecast | None:
        """The judged periods' bands as a Forecast (for charts and hints); built when asked: a
        cycle of 10,000 series charts a handful."""
        return _as_forecast(self.judgements, self.level)


@dataclass(frozen=True)
class CheckReport:
    """The outcome of one check: alerts (best first) and every series' result."""

    period: dict[str, pd.Timestamp]
    alerts: tuple[Alert, ...]
    results: tuple[SeriesResult, ...]
    incomplete: tuple[str, ...] = ()  # per KPI whose latest period was incomplete: what was judged instead
    no_data: tuple[str, ...] = ()  # per KPI not judged because its total has no value for the period
    country: str | None = None  # the config's: its holidays' names in `notes`

    def result_for(self, anomaly: Anomaly) -> SeriesResult:
        """The evaluated series behind an anomaly (for its chart)."""
        found = self._by_series.get((anomaly.kpi, segment_key(anomaly.segment)))
        if found is None:
            raise KeyError(f"no result for {anomaly.kpi} {dict(anomaly.segment)}")
        return found

    @functools.cached_property
    def _by_series(self) -> dict[tuple[str, str], SeriesResult]:
        """The results by (kpi, segment key): an alert storm looks up hundreds among 10,000."""
        return {(r.series.name, segment_key(r.series.segment)): r for r in self.results}

    @property
    def notes(self) -> list[str]:
        """One line per series that could not be judged (and is not in `held_back`), its reason
        in the current locale."""
        return [f"{r.series.label}: {reasons.reason_text(r.skipped, self.country)}" for r in self.results
                if r.skipped and not r.held_back]

    @property
    def held_back(self) -> list[str]:
        """One line per series outside its band the alerting way but not alerted (a guardrail),
        the farthest out first, then the segments whose ratio is undefined (a zero denominator):
        "cpa[channel=paid_social] 3.1x expected ($93.00 vs $30.00) on Wed 03 Dec 2025, not
        alerted: 12 conversions < min_volume 30"."""
        held = [r for r in self.results if r.held_back]
        held.sort(key=lambda r: -_score_at(r, self.period.get(r.series.name)))
        return [r.held_back for r in held]

    @property
    def states(self) -> dict[tuple[str, str], PackedState]:
        """The detector state of every series, packed, by (kpi, segment key) as the store keeps them."""
        return {(r.series.name, segment_key(r.series.segment)): r.state for r in self.results if r.state is not None}


COMPLETE_LOOKBACK = 7
"""How many periods back `check` looks for a complete one when the latest is still incomplete."""


def model_params(model: str, params: dict[str, object], calendar: Calendar) -> dict[str, object]:
    """The configured `model_params`, plus the calendar for the models that learn it (Prophet, auto)."""
    chosen = dict(params)
    if model in ("prophet", AUTO_MODEL):
        chosen.setdefault("calendar", calendar)
    return chosen


def detector_of(settings: Settings, kpi: KPIConfig) -> Detector:
    """The one detector of a configured KPI (its rules, model, the config's calendar and timezone)."""
    return Detector.for_kpi(kpi, kpi.freq, settings.calendar, settings.timezone, settings.alerting.repeat_hours)


def evaluate_series(series: KPISeries, kpi: KPIConfig, detector: Detector, until: pd.Timestamp,
                    state: State | PackedState | None = None, window: bool = False,
                    feedback: SeriesFeedback | None = None) -> SeriesResult:
    """Walk the detector forward up to `until` (from `state`, or from the series' first period)
    and report the last `kpi.check_window` periods; `until`'s judgement decides the anomaly.

    A state whose recent periods the source has since revised (or filled in late) is dropped and
    the series walked again: it would judge from values that are no longer the data's. So is a
    state of other settings, or one already past `until`.
    window: `series` holds only the recent periods (`history_window`), not its whole history;
    a series whose state cannot step on from them comes back with `needs_history` set, unjudged.
    feedback: what was said about this series' alerts (`forecaster.detect.feedback`) [None]; a
    state that judged a recent period otherwise than it now marks it is dropped too.
    """
    current = _unpacked(state, detector, until)
    if current is not None and (_revised(current, series) or feedback_changed(current, feedback)):
        current = None
    if window and (current is None or current.next_period < series.values.index[0]):
        return SeriesResult(series, (), None, skipped=reasons.NEEDS_HISTORY, level=kpi.level, needs_history=True)
    current, new = detector.advance(current, series, until, feedback)
    judged = tuple(j for j in current.recent if j.period <= until)[-kpi.check_window:]
    fresh = min(len(new), len(judged))
    packed = PackedState(pack_state(current), current.next_period.to_pydatetime())
    last = judged[-1] if judged and judged[-1].period == until else None
    if last is None or pd.isna(last.score):
        reason = last.reason if last is not None else reasons.NO_JUDGEMENT
        return SeriesResult(series, judged, None, skipped=reason, state=packed, level=kpi.level, fresh=fresh)
    anomaly = to_anomaly(series, last, detector.rules, kpi.unit)
    return SeriesResult(series, judged, anomaly, state=packed, level=kpi.level, fresh=fresh)


def evaluate_chunk(chunk: Sequence[tuple[KPISeries, PackedState | None]], kpi: KPIConfig, detector: Detector,
                   until: pd.Timestamp, window: bool,
                   feedback: Mapping[str, SeriesFeedback] | None = None) -> list[SeriesResult]:
    """`evaluate_series` over a chunk of one KPI's series: the unit of work shipped to a worker
    (a process of this machine, or a Dask worker). The results come back without their series
    (the caller has them): only judgements, the anomaly and the packed state cross the wire.
    feedback: by segment key, for the chunk's series that have any (none for the rest)."""
    # The series is left out of the result (None until the caller puts it back): it would cross
    # the wire twice, and a series read in full is most of a chunk's bytes.
    feedback = feedback or {}
    return [replace(evaluate_series(series, kpi, detector, until, state, window,  # type: ignore[arg-type]
                                    feedback.get(segment_key(series.segment)) if feedback else None), series=None)
            for series, state in chunk]


def _unpacked(state: State | PackedState | None, detector: Detector, until: pd.Timestamp) -> State | None:
    """A usable state: unpacked, of this detector's settings, not past `until` (else None)."""
    if isinstance(state, PackedState):
        if state.next_period > until:
            return None
        try:
            state = unpack_state(state.blob)
        except StateFormatError:
            return None  # another version's state: the series walks forward again
    if state is None or state.next_period > until:
        return None
    if state.fingerprint != detector.fingerprint or state.version != STATE_VERSION:
        return None
    return state


def _revised(state: State, series: KPISeries) -> bool:
    """Whether a value the state judged recently differs from the series' value now (periods
    before the series' first one are not compared: a recent window does not hold them).
    On nanosecond stamps, not Timestamps: it runs for every series of every cycle."""
    stamps = series.values.index.as_unit("ns").asi8  # a source may give microseconds
    if not len(stamps) or not state.recent:
        return False
    recent = [j for j in state.recent if j.period.value >= stamps[0]]
    if not recent:
        return False
    seen = np.fromiter((j.actual for j in recent), dtype="float64", count=len(recent))
    wanted = np.fromiter((j.period.value for j in recent), dtype="int64", count=len(recent))
    at = np.minimum(np.searchsorted(stamps, wanted), len(stamps) - 1)
    values = series.values.to_numpy(dtype="float64")
    now = np.where(stamps[at] == wanted, values[at], np.nan)
    same = (seen == now) | (np.isnan(seen) & np.isnan(now))
    return not bool(same.all())


def _as_forecast(window: Sequence[Judgement], level: float) -> Forecast | None:
    """The judged periods' bands as a Forecast (for charts and hints)."""
    if not window:
        return None
    index = pd.DatetimeIndex([j.period for j in window])
    return Forecast(
        mean=pd.Series([j.expected for j in window], index=index, dtype="float64"),
        lower=pd.Series([j.lower for j in window], index=index, dtype="float64"),
        upper=pd.Series([j.upper for j in window], index=index, dtype="float64"),
        level=level,
        model=window[-1].model,
    )


def check(
    settings: Settings,
    at: pd.Timestamp | None = None,
    kpis: Sequence[str] | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
    require_complete: bool = False,
    states: Mapping[tuple[str, str], State | PackedState] | None = None,
    executor: Executor | None = None,
    timeout: float | None = None,
    sources: Mapping[str, Source] | None = None,
    feedback: Mapping[tuple[str, str], SeriesFeedback] | None = None,
) -> CheckReport:
    """Judge the latest closed period of each KPI (all, or those named) and build the alerts.

    at: judge the period closed at this time (default: now by the source's clock, minus the
        KPI's `data_delay_hours` or the source's own delay, whichever is longer).
    progress: called with (series finished, series in all) as they finish.
    workers: processes for the model fits when no `executor` is given (default: the CPU count;
        1 = in this process).
    require_complete: a KPI whose latest period has fewer raw rows than its `completeness`
        share (an export still being written) is judged on the latest complete period of the
        `COMPLETE_LOOKBACK` before it instead, and not at all when none is; `incomplete` says so.
        Off by default: the daemon checks completeness itself before it asks for a period.
    states: detector states by (kpi, segment key) (the daemon's store): a series steps on from its
        state instead of walking forward from its first period (same verdicts either way; a
        state from other settings, or ahead of the period, is rebuilt). A KPI with stored states
        is read for its recent periods only (`history_window`); a series that needs more (a
        new segment, a revised value) is read again in full. Default: none.
    executor: where the series are judged (the daemon's; `forecaster.executor`); default: the
        config's `executor` (worker processes, `workers` of them, or Dask), closed at the end.
    timeout: seconds the judging may take (TimeoutError after); default None: no limit.
    sources: a KPI's source object by KPI name, to use instead of a new one (the daemon's, whose
        file cache already holds this cycle's read from its completeness check); default none.
    feedback: what marketers said about a series' alerts (false alarms, periods marked expected;
        `forecaster.detect.feedback`) by (kpi, segment key); it travels with the series to
        whichever worker judges it. Default: none.
    """
    names = list(kpis) if kpis else list(settings.kpis)
    states = states or {}
    reads: list[_KPIRead] = []
    incomplete: list[str] = []
    no_data: list[str] = []
    for name in names:
        kpi = settings.kpi(name)
        source = (sources or {}).get(name) or make_source(settings.sources[kpi.source], settings.timezone, kpi.source)
        if at is not None:  # "as if it were then": the period closed at `at` (the daemon's catch-up uses this)
            until = last_closed_period(at, kpi.freq, settings.timezone)
        else:  # now: only a period whose data is complete (the KPI's or the source's data delay)
            delay = max(pd.Timedelta(hours=kpi.data_delay_hours), getattr(source, "data_delay", pd.Timedelta(0)))
            until = last_closed_period(source.now() - delay, kpi.freq, settings.timezone)
        if require_complete:
            complete, note = latest_complete_period(source, kpi, until)
            if note:
                incomplete.append(f"{name}: {note}")
            if complete is None:
                continue
            until = complete
        stored = {segment: state for (of, segment), state in states.items() if of == name}
        said = {segment: given for (of, segment), given in (feedback or {}).items() if of == name}
        read = _read(name, kpi, source, until, window=bool(stored))
        if isinstance(read, str):  # a source that stopped is not a KPI inside its band: not judged, and said so
            no_data.append(f"{name}: {read}")
            continue
        found, windowed = read
        reads.append(_KPIRead(name, kpi, source, until, detector_of(settings, kpi), found, stored, windowed, said))
    periods = {read.name: read.until for read in reads}
    own = executor is None
    executor = executor or make_executor(settings.executor, workers=workers)
    try:
        judged = _judge_reads(reads, executor, progress, timeout)
    finally:
        if own:
            executor.close()
    results = [_with_held_back(result, periods[result.series.name], settings, result.series.name) for result in judged]
    evaluated = {r.series.label: _evaluated(r, periods[r.series.name], settings.kpi(r.series.name), settings.currency)
                 for r in results}
    alerts = []
    for name in names:
        mine = [evaluated[r.series.label] for r in results if r.series.name == name]
        alerts.extend(build_alerts(mine, settings.calendar))
    lookup = {(e.series.name, segment_label(e.series.segment)): e for e in evaluated.values()}
    related = {name: settings.kpi(name).related for name in names}
    alerts = add_related_hints(alerts, lookup, related)
    # goals.py builds on this module (it forecasts to each deadline), hence the import here.
    from forecaster.goals import add_target_hints

    totals = _totals_for_targets(reads, results, alerts)
    kpis = {name: settings.kpi(name) for name in names}
    alerts = add_target_hints(alerts, kpis, totals, periods, settings.country)
    return CheckReport(periods, tuple(alerts), tuple(results), tuple(incomplete), tuple(no_data), settings.country)


HISTORY_WINDOW = RECENT + 10
"""Periods a KPI with stored states is read for (before the judged one): the states' recent
judgements (`RECENT`, compared for revisions), the chart's history, and a few periods of
catch-up after downtime; a series whose state is older than that is read again in full."""


@dataclass(frozen=True)
class _KPIRead:
    """One KPI's part of a check: its series as read, and how to judge them."""

    name: str
    kpi: KPIConfig
    source: Source
    until: pd.Timestamp
    detector: Detector
    series: list[KPISeries]
    stored: Mapping[str, State | PackedState]  # by segment key
    window: bool  # read for the recent periods only (it has stored states and the window had a value)
    feedback: Mapping[str, SeriesFeedback] = dataclasses.field(default_factory=dict)  # by segment key


def history_start(until: pd.Timestamp, freq: str) -> pd.Timestamp:
    """The first period a windowed read asks for: `HISTORY_WINDOW` periods before `until`."""
    return until - HISTORY_WINDOW * _step(freq)


def _step(freq: str) -> pd.DateOffset:
    return pd.tseries.frequencies.to_offset(freq)


def _read(name: str, kpi: KPIConfig, source: Source, until: pd.Timestamp,
          window: bool) -> tuple[list[KPISeries], bool] | str:
    """The KPI's series up to `until` (the total first) and whether they are a recent window
    only (asked by `window`) or the whole history; instead, why it cannot be judged (no rows, no
    value for `until`). A windowed read without a value for `until` is read again in full, so
    the note can name the latest value there is."""
    start = history_start(until, kpi.freq) if window else None
    frame = source.fetch(kpi.metrics, kpi.dimensions, kpi.freq, start=start, end=until)
    if frame.empty:
        if window:
            return _read(name, kpi, source, until, window=False)
        return (f"the source has no rows up to {format_period(until, kpi.freq)}: not judged; "
                "check the source, or judge an earlier time with --at")
    found = kpi_series(name, kpi, frame)
    gap = _no_value_note(found, kpi, until)
    if gap and window:
        return _read(name, kpi, source, until, window=False)
    return gap or (found, window)


def _judge_reads(reads: Sequence[_KPIRead], executor: Executor, progress: Progress | None,
                 timeout: float | None = None) -> list[SeriesResult]:
    """Every read series judged, in chunks on `executor`, in the reads' order. A windowed
    KPI's series that need their whole history (`needs_history`) are read again in full and
    judged once more."""
    first = [[(series, read.stored.get(segment_key(series.segment))) for series in read.series] for read in reads]
    results = _judge_tasks(reads, first, executor, progress, timeout)
    again = []
    for read, mine in zip(reads, results, strict=True):
        wanted = {segment_key(r.series.segment) for r in mine if r.needs_history}
        full = _read(read.name, read.kpi, read.source, read.until, window=False) if wanted else "nothing wanted"
        again.append([] if isinstance(full, str) else
                     [(series, read.stored.get(segment_key(series.segment))) for series in full[0]
                      if segment_key(series.segment) in wanted])
    if any(again):
        whole = [replace(read, window=False) for read in reads]  # judged from the whole history
        redone = _judge_tasks(whole, again, executor, progress, timeout)
        for mine, new in zip(results, redone, strict=True):
            by_key = {segment_key(r.series.segment): r for r in new}
            mine[:] = [by_key.get(segment_key(r.series.segment), r) if r.needs_history else r for r in mine]
            mine[:] = [r for r in mine if not r.needs_history]  # gone from the full read: not judged
    return [result for mine in results for result in mine]


def _judge_tasks(reads: Sequence[_KPIRead], tasks: Sequence[Sequence[tuple[KPISeries, PackedState | State | None]]],
                 executor: Executor, progress: Progress | None, timeout: float | None = None) -> list[list[SeriesResult]]:
    """Judge each read's tasks in chunks (`evaluate_chunk`) on `executor`; results per read, in
    task order, with their series attached again."""
    total = sum(len(mine) for mine in tasks)
    even = -(-total // (CHUNKS_PER_WORKER * max(executor.workers, 1)))  # ceil: every worker gets a few
    chunks = []
    for read, mine in zip(reads, tasks, strict=True):
        size = max(1, min(WARM_CHUNK_MAX if read.window else COLD_CHUNK_MAX, even))
        for i in range(0, len(mine), size):
            part = mine[i:i + size]
            # Only the feedback of this chunk's series travels with it (most series have none).
            said = ({key: read.feedback[key] for key in (segment_key(s.segment) for s, _ in part) if key in read.feedback}
                    if read.feedback else {})
            chunks.append((part, read.kpi, read.detector, read.until, read.window, said))
    counts = [len(chunk[0]) for chunk in chunks]

    def advanced(done_chunks: int, _: int) -> None:
        if progress:
            progress(sum(counts[:done_chunks]), total)

    out = executor.map(_evaluate_chunk_args, chunks, timeout=timeout, progress=advanced if progress else None)
    flat = iter(result for chunk in out for result in chunk)
    return [[replace(next(flat), series=series) for series, _ in mine] for mine in tasks]


def _evaluate_chunk_args(args: tuple[Any, ...]) -> list[SeriesResult]:
    """`evaluate_chunk(*args)`: a module-level function, so a worker can import it by name."""
    return evaluate_chunk(*args)


# Series per chunk at most. A warm chunk (states stepping one period, ~1 ms a series) is large:
# each chunk costs a round trip; a cold one (a walk over the whole history, ~0.1 s a series)
# small, so the work spreads evenly and the daemon can give other KPIs a turn between chunks.
WARM_CHUNK_MAX = 500
COLD_CHUNK_MAX = 20
CHUNKS_PER_WORKER = 4  # chunks per worker at least: a slow chunk does not leave the others idle


def _totals_for_targets(reads: Sequence[_KPIRead], results: Sequence[SeriesResult],
                        alerts: Sequence[Alert]) -> dict[str, KPISeries]:
    """Each KPI's total series for its target's forecast (`add_target_hints`): the one judged,
    or its whole history read again when only a recent window was read and the KPI has a
    target and a bad-news alert (a forecast to a deadline from 100 days would be poor)."""
    totals = {r.series.name: r.series for r in results if not r.series.segment}
    alerted = {alert.anomaly.kpi for alert in alerts if alert.anomaly.is_bad}
    for read in reads:
        if read.window and read.kpi.target is not None and read.name in alerted:
            full = _read(read.name, read.kpi.model_copy(update={"segments": []}), read.source, read.until, window=False)
            if not isinstance(full, str):
                totals[read.name] = full[0][0]
    return totals


def _no_value_note(found: Sequence[KPISeries], kpi: KPIConfig, period: pd.Timestamp) -> str:
    """Why the KPI's total cannot be judged for `period` ("" when it has a value there): the
    period has no value, with the latest period that has one, and what to do."""
    total = next((series for series in found if not series.segment), None)
    values = total.values.dropna() if total is not None else pd.Series(dtype="float64")
    if period in values.index:
        return ""
    if kpi.ratio is not None and total is not None and total.denominator is not None and total.denominator.get(period) == 0:
        return t("note.no_denominator", denominator=metric_name(kpi.ratio.denominator),
                 period=format_period(period, kpi.freq))
    latest = (t("note.latest_value", period=format_period(values.index[-1], kpi.freq)) if len(values)
              else t("note.no_value_at_all"))
    return t("note.no_value", period=format_period(period, kpi.freq), latest=latest)


def completeness_of(source: Source, kpi: KPIConfig, periods: Sequence[pd.Timestamp]) -> dict[pd.Timestamp, float | None]:
    """Each period's share of its usual rows (None: unknown, judged as complete), from one
    cheap fetch: the KPI's first metric, no dimensions, the periods (oldest first) and the
    same-phase ones before them (`usual_phase`).
    Empty when the check is off (`kpi.completeness` 0) or the source cannot count rows."""
    if kpi.completeness <= 0 or not periods:
        return {}
    step, baseline = usual_phase(kpi.freq)  # same weekday / same hour: row counts follow the week and day
    frame = source.fetch(kpi.metrics[:1], [], kpi.freq, start=periods[0] - baseline * step,
                         end=periods[-1], rows=True)
    rows = rows_per_period(frame)
    if rows is None:
        return {}
    return {period: completeness(rows, period, step, baseline) for period in periods}


def latest_complete_period(source: Source, kpi: KPIConfig, latest: pd.Timestamp) -> tuple[pd.Timestamp | None, str]:
    """The newest of `latest` and the `COMPLETE_LOOKBACK` periods before it whose rows reach
    `kpi.completeness` (judging a half-written period would read as a drop), and a note when
    it is not `latest` ("" when it is; the period is None when none of them is complete)."""
    candidates = list(pd.date_range(end=latest, periods=COMPLETE_LOOKBACK + 1, freq=kpi.freq))
    shares = completeness_of(source, kpi, candidates)
    share = shares.get(latest)
    if is_complete(share, kpi.completeness):
        return latest, ""
    unit = "day" if kpi.freq == "D" else "hour"
    found = t("note.incomplete", period=format_period(latest, kpi.freq), share=format_percent(share or 0.0),
              completeness=f"{kpi.completeness:g}")
    for period in reversed(candidates[:-1]):
        if is_complete(shares.get(period), kpi.completeness):
            return period, t(f"note.judged_earlier_{unit}", found=found, period=format_period(period, kpi.freq))
    return None, t(f"note.none_complete_{unit}", found=found, count=COMPLETE_LOOKBACK)


def _evaluated(result: SeriesResult, period: pd.Timestamp, kpi: KPIConfig, currency: str) -> Evaluated:
    """What the explainer needs of a result; `currency`: the config's, for a unit that names none."""
    judged = {j.period: j for j in result.judgements}
    last = judged.get(period)
    if last is None:
        return Evaluated(result.series, float("nan"), float("nan"), None, good=kpi.good, unit=kpi.unit)
    numerator = kpi.ratio.numerator if kpi.ratio else kpi.metric
    return Evaluated(
        result.series, last.actual, last.expected, result.anomaly,
        flagged=last.is_anomaly, score=last.score, good=kpi.good, unit=kpi.unit, numerator=numerator,
        denominator_name=kpi.ratio.denominator if kpi.ratio else None, currency=currency_of(kpi.unit) or currency,
    )


def _with_held_back(result: SeriesResult, period: pd.Timestamp, settings: Settings, name: str) -> SeriesResult:
    """`result` with its `held_back` note: a guardrail that kept an out-of-band period from
    alerting (`rules.held_back`), or a segment's ratio undefined by a zero denominator."""
    kpi = settings.kpi(name)
    series = result.series
    last = result.judgements[-1] if result.judgements and result.judgements[-1].period == period else None
    volume = float(series.denominator.get(period, float("nan"))) if series.denominator is not None else float("nan")
    if kpi.ratio is not None and volume == 0 and (last is None or pd.isna(last.actual)):
        # kpi_series makes a zero denominator a gap (a ratio over nothing is undefined, not 0):
        # say so instead of a bare "no data", which reads as a source that stopped.
        note = t("note.ratio_undefined", label=series.label, denominator=metric_name(kpi.ratio.denominator),
                 period=format_period(period, kpi.freq))
        return replace(result, held_back=note)
    if last is None:
        return result
    why = held_back(last, _run(result.judgements), volume, Rules.from_kpi(kpi, settings.alerting.repeat_hours),
                    kpi.unit, kpi.ratio.denominator if kpi.ratio else "", currency_of(kpi.unit) or settings.currency,
                    when=format_period(period, kpi.freq))
    return replace(result, held_back=f"{series.label} {why}") if why else result


def _run(judgements: Sequence[Judgement]) -> int:
    """Periods in a row, ending with the last, outside the band the same way (a gap ends it)."""
    run = 0
    for judgement in reversed(judgements):
        if not judgement.is_anomaly or judgement.direction != judgements[-1].direction:
            break
        run += 1
    return run


def _score_at(result: SeriesResult, period: pd.Timestamp | None) -> float:
    """The score of `result`'s judgement of `period` (-1 when not judged: listed last)."""
    last = result.judgements[-1] if result.judgements else None
    if last is None or last.period != period or pd.isna(last.score):
        return -1.0
    return float(last.score)


def forecast_series(
    series: KPISeries,
    horizon: int,
    level: float = 0.95,
    model: str = AUTO_MODEL,
    params: dict[str, object] | None = None,
    country: str | None = None,
) -> Forecast:
    """Fit on the whole series and forecast `horizon` periods ahead at `level`."""
    chosen = model_params(model, dict(params or {}), Calendar(country))
    return fit_forecast(series.values, model, horizon, level, chosen, name=series.label)


def kpi_total_series(
    settings: Settings, name: str, segment: dict[str, str] | None = None, at: pd.Timestamp | None = None
) -> KPISeries:
    """A configured KPI's series up to its last closed period: the total, or one segment."""
    kpi = settings.kpi(name)
    source = make_source(settings.sources[kpi.source], settings.timezone, kpi.source)
    until = last_closed_period(at if at is not None else source.now(), kpi.freq, settings.timezone)
    dimensions = sorted(set(kpi.dimensions) | set(segment or {}))
    frame = source.fetch(kpi.metrics, dimensions, kpi.freq, end=until)
    wanted = dict(segment or {})
    view = kpi.model_copy(update={"segments": sorted(wanted)})
    for series in kpi_series(name, view, frame):
        if dict(series.segment) == wanted or (not wanted and not series.segment):
            return series
    raise BadInputError(f"{name}: no data for segment {spelled(wanted)}; {values_seen(frame, wanted)}")


def spelled(segment: dict[str, str]) -> str:
    """A segment as the user typed it: "device=phone" (several joined by ", ")."""
    return ", ".join(f"{dim}={value}" for dim, value in segment.items()) or "the total"


def values_seen(frame: pd.DataFrame, wanted: dict[str, str]) -> str:
    """The fix for an unknown segment value: the values the source has for each dimension asked."""
    known = []
    for dim in wanted:
        if dim in frame.columns:
            values = sorted(str(value) for value in frame[dim].dropna().unique())
            known.append(f"{dim} is one of {', '.join(values[:20])}{', ...' if len(values) > 20 else ''}")
    return "; ".join(known) + " (--segment DIM=VALUE)" if known else "check --segment against the source's values"
