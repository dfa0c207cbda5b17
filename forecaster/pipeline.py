"""Where the pieces meet: source -> KPI series -> detector -> explainer -> alerts.

The CLI and the daemon both call these functions and hold no logic of their own.
`evaluate_series` is a pure function of (series, detector, period, state) so it can be run in a
worker process, batched, or shipped to a cluster; I/O stays in `check`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace

import pandas as pd

from forecaster.calendar import Calendar
from forecaster.completeness import (
    completeness,
    is_complete,
    rows_per_period,
    usual_phase,
)
from forecaster.detect import Detector, State
from forecaster.detect.rules import Rules, held_back, to_anomaly
from forecaster.explain import Evaluated, add_related_hints, build_alerts
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
    segment_key,
    segment_label,
)
from forecaster.units import currency_of, format_period

Progress = Callable[[int, int], None]  # (series finished, series in all)
Job = tuple[KPISeries, KPIConfig, Detector, pd.Timestamp, "State | None"]

__all__ = ["CheckReport", "SeriesResult", "check", "evaluate_series", "last_closed_period"]


@dataclass(frozen=True)
class SeriesResult:
    """One series judged up to a period; `skipped` says why that period was not judged.

    judgements: the last `check_window` periods (the band a chart draws); forecast: the same as
    a Forecast. state: the detector's state after the period (the daemon stores it).
    held_back: why the period did not alert though it was outside its band the way the KPI
    alerts (a guardrail, with the numbers), or why a ratio could not be judged (a zero
    denominator); "" otherwise (`rules.held_back`).
    """

    series: KPISeries
    forecast: Forecast | None
    judgements: tuple[Judgement, ...]
    anomaly: Anomaly | None
    skipped: str = ""
    state: State | None = None
    held_back: str = ""


@dataclass(frozen=True)
class CheckReport:
    """The outcome of one check: alerts (best first) and every series' result."""

    period: dict[str, pd.Timestamp]
    alerts: tuple[Alert, ...]
    results: tuple[SeriesResult, ...]
    incomplete: tuple[str, ...] = ()  # per KPI whose latest period was incomplete: what was judged instead
    no_data: tuple[str, ...] = ()  # per KPI not judged because its total has no value for the period

    def result_for(self, anomaly: Anomaly) -> SeriesResult:
        """The evaluated series behind an anomaly (for its chart)."""
        for result in self.results:
            if result.series.name == anomaly.kpi and dict(result.series.segment) == dict(anomaly.segment):
                return result
        raise KeyError(f"no result for {anomaly.kpi} {dict(anomaly.segment)}")

    @property
    def notes(self) -> list[str]:
        """One line per series that could not be judged (and is not in `held_back`)."""
        return [f"{r.series.label}: {r.skipped}" for r in self.results if r.skipped and not r.held_back]

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
    def states(self) -> dict[tuple[str, str], State]:
        """The detector state of every series, by (kpi, segment key) as the store keeps them."""
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
                    state: State | None = None) -> SeriesResult:
    """Walk the detector forward up to `until` (from `state`, or from the series' first period)
    and report the last `kpi.check_window` periods; `until`'s judgement decides the anomaly.
    A state whose recent periods the source has since revised (or filled in late) is dropped and
    the series walked again: it would judge from values that are no longer the data's."""
    if state is not None and _revised(state, series):
        state = None
    state, _ = detector.advance(state, series, until)
    window = tuple(j for j in state.recent if j.period <= until)[-kpi.check_window:]
    last = window[-1] if window and window[-1].period == until else None
    if last is None or pd.isna(last.score):
        reason = last.reason if last is not None else "no judgement for this period"
        return SeriesResult(series, _as_forecast(window, kpi.level), window, None, skipped=reason, state=state)
    anomaly = to_anomaly(series, last, detector.rules, kpi.unit)
    return SeriesResult(series, _as_forecast(window, kpi.level), window, anomaly, state=state)


def _revised(state: State, series: KPISeries) -> bool:
    """Whether a value the state judged recently differs from the series' value now."""
    for judgement in state.recent:
        now = series.values.get(judgement.period, float("nan"))
        if pd.isna(now) != pd.isna(judgement.actual) or (not pd.isna(now) and now != judgement.actual):
            return True
    return False


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
    states: Mapping[tuple[str, str], State] | None = None,
) -> CheckReport:
    """Judge the latest closed period of each KPI (all, or those named) and build the alerts.

    at: judge the period closed at this time (default: now by the source's clock, minus the
        KPI's `data_delay_hours` or the source's own delay, whichever is longer).
    progress: called with (series finished, series in all) as they finish.
    workers: processes for the model fits (default: the CPU count; 1 = in this process).
    require_complete: a KPI whose latest period has fewer raw rows than its `completeness`
        share (an export still being written) is judged on the latest complete period of the
        `COMPLETE_LOOKBACK` before it instead, and not at all when none is; `incomplete` says so.
        Off by default: the daemon checks completeness itself before it asks for a period.
    states: detector states by (kpi, segment key) (the daemon's store): a series steps on from its
        state instead of walking forward from its first period (same verdicts either way; a
        state from other settings, or ahead of the period, is rebuilt). Default: none.
    """
    names = list(kpis) if kpis else list(settings.kpis)
    states = states or {}
    jobs: list[Job] = []
    periods: dict[str, pd.Timestamp] = {}
    incomplete: list[str] = []
    no_data: list[str] = []
    for name in names:
        kpi = settings.kpi(name)
        source = make_source(settings.sources[kpi.source], settings.timezone, kpi.source)
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
        frame = source.fetch(kpi.metrics, kpi.dimensions, kpi.freq, end=until)
        if frame.empty:
            no_data.append(f"{name}: the source has no rows up to {format_period(until, kpi.freq)}: not judged; "
                           "check the source, or judge an earlier time with --at")
            continue
        found = kpi_series(name, kpi, frame)
        gap = _no_value_note(found, kpi, until)
        if gap:  # a source that stopped is not a KPI inside its band: not judged, and said so
            no_data.append(f"{name}: {gap}")
            continue
        periods[name] = until
        detector = detector_of(settings, kpi)
        jobs.extend((series, kpi, detector, until, _usable(states.get((name, segment_key(series.segment))), until)) for series in found)
    results = [_with_held_back(result, periods[result.series.name], settings, result.series.name)
               for result in _run_all(jobs, progress, workers)]
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

    totals = {r.series.name: r.series for r in results if not r.series.segment}
    kpis = {name: settings.kpi(name) for name in names}
    alerts = add_target_hints(alerts, kpis, totals, periods, settings.country)
    return CheckReport(periods, tuple(alerts), tuple(results), tuple(incomplete), tuple(no_data))


def _no_value_note(found: Sequence[KPISeries], kpi: KPIConfig, period: pd.Timestamp) -> str:
    """Why the KPI's total cannot be judged for `period` ("" when it has a value there): the
    period has no value, with the latest period that has one, and what to do."""
    total = next((series for series in found if not series.segment), None)
    values = total.values.dropna() if total is not None else pd.Series(dtype="float64")
    if period in values.index:
        return ""
    if kpi.ratio is not None and total is not None and total.denominator is not None and total.denominator.get(period) == 0:
        return (f"no {kpi.ratio.denominator.replace('_', ' ')} on {format_period(period, kpi.freq)}, ratio undefined: "
                "not judged")
    latest = (f"its latest value is for {format_period(values.index[-1], kpi.freq)}" if len(values)
              else "the source has no value for it at all")
    return (f"no value for {format_period(period, kpi.freq)} ({latest}): not judged (a gap is not a drop); "
            "check the source, or judge an earlier time with --at")


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
    found = (f"{format_period(latest, kpi.freq)} has {share:.0%} of its usual rows "
             f"(completeness {kpi.completeness:g} needed)")
    for period in reversed(candidates[:-1]):
        if is_complete(shares.get(period), kpi.completeness):
            return period, (f"{found}: judged {format_period(period, kpi.freq)}, the latest complete {unit}; "
                            "run again once the export is complete")
    return None, (f"{found}, and none of the {COMPLETE_LOOKBACK} {unit}s before it is: not judged (a "
                  "half-written export is not a drop); check the export, or lower the KPI's `completeness`")


def _usable(state: State | None, until: pd.Timestamp) -> State | None:
    """A stored state that can step on to `until` (None: walk forward from the first period)."""
    if state is None or state.next_period > until:
        return None
    return state


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
        note = f"{series.label}: no {kpi.ratio.denominator.replace('_', ' ')} on {format_period(period, kpi.freq)}, ratio undefined"
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


def _run_all(jobs: list[Job], progress: Progress | None, workers: int | None) -> list[SeriesResult]:
    """Evaluate every job, in worker processes when there are several CPUs and jobs."""
    workers = workers if workers is not None else (os.cpu_count() or 1)
    results: list[SeriesResult] = []
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            results.append(evaluate_series(*job))
            if progress:
                progress(len(results), len(jobs))
        return results
    # ProcessPoolExecutor, not multiprocessing.Pool: a worker killed mid-fit (out of memory)
    # breaks the executor with an error, where a Pool replaces the worker and waits forever.
    pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)))
    try:
        futures = [pool.submit(evaluate_series, *job) for job in jobs]
        for future in futures:
            results.append(future.result())
            if progress:
                progress(len(results), len(jobs))
    except BaseException:
        _stop_now(pool)  # Ctrl-C or a failed series: the remaining fits are not wanted
        raise
    pool.shutdown()
    return results


def _stop_now(pool: ProcessPoolExecutor) -> None:
    """Cancel the queued fits and end the running ones. (Leaving the pool's `with` block would
    wait for every queued fit: minutes after a Ctrl-C, the workers running on.) `_processes`
    is private (Python 3.14's `terminate_workers()` is the public form of the same); read with
    a default, so a Python without it only loses the early end, not the cancel."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    results = getattr(pool, "_result_queue", None)  # shutdown() forgets it
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(5)
    # A worker ended while writing its result leaves the pool's manager thread waiting for the
    # rest of that message, and the interpreter joins that thread at exit: a Ctrl-C'd check
    # would hang there. With the workers gone, closing our own end of the result pipe's writer
    # turns that wait into an end-of-file, which the manager treats as a broken pool and stops.
    writer = getattr(results, "_writer", None)
    if writer is not None:
        writer.close()


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
