"""`kpiwatch sources test`: connect to every KPI's source and fetch its last few periods.

The first thing an operator runs after writing a config: for each KPI, did the source answer,
how many rows came back, which is the latest period it has, and how late is that. One source
failing never stops the others: its rows carry the one-line error instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from forecaster.sources import Source, make_source
from forecaster.sources.frames import period_end
from forecaster.types import KPIWatchError

if TYPE_CHECKING:
    from forecaster.settings import Settings


@dataclass(frozen=True)
class SourceProbe:
    """What one KPI's source answered.

    kpi, source, kind: the KPI, its source's name under `sources:` and the source's `type`.
    ok: the source answered (False: see `error`).
    rows: rows fetched for the probed periods (one per period and dimension values).
    asked_from, asked_until: the first and last period labels asked for (the last is the latest
        closed period at `now`); None when the source could not be created.
    last_period: the latest period label that has data (None: none found or an error).
    delay: now - the end of `last_period` (None when there is no last period); compare it with
        `data_delay` and one period length to tell "late" from "normal".
    data_delay: how long the source takes to complete a period (GA4: 48 h by default).
    seconds: wall time the fetch took.
    error: the one-line error when not ok, else "".
    exit_code: the error's exit code: 2 for a mistake in the config (an unknown column, a missing
        table), 3 for a source that did not answer; 0 when ok.
    notes: remarks such as "no rows in the probed periods" or GA4 sampling.
    """

    kpi: str
    source: str
    kind: str
    ok: bool
    rows: int
    asked_from: pd.Timestamp | None
    asked_until: pd.Timestamp | None
    last_period: pd.Timestamp | None
    delay: pd.Timedelta | None
    data_delay: pd.Timedelta
    seconds: float
    error: str = ""
    notes: tuple[str, ...] = ()
    exit_code: int = 0


def probe_sources(settings: Settings, periods: int = 3, at: pd.Timestamp | None = None) -> list[SourceProbe]:
    """Probe every configured KPI's source, in config order (see the module docstring).

    periods: how many of the latest closed periods to fetch per KPI (default 3, at least 1).
    at: "now" (default None: each source's own clock, the wall clock for real sources).
    Never raises for a source's failure (KPIWatchError); each result carries its error text.
    """
    if periods < 1:
        raise ValueError(f"periods must be at least 1, got {periods}")
    sources: dict[str, Source | KPIWatchError] = {}
    results = []
    for name, kpi in settings.kpis.items():
        config = settings.sources[kpi.source]
        if kpi.source not in sources:
            try:
                sources[kpi.source] = make_source(config, settings.timezone, kpi.source)
            except KPIWatchError as exc:
                sources[kpi.source] = exc
        source = sources[kpi.source]
        if isinstance(source, KPIWatchError):
            results.append(SourceProbe(name, kpi.source, config.type, False, 0, None, None, None, None,
                                       pd.Timedelta(0), 0.0, error=str(source), exit_code=source.exit_code))
            continue
        results.append(_probe_one(name, kpi.source, config.type, source, kpi.metrics, kpi.dimensions, kpi.freq,
                                  settings.timezone, periods, at))
    return results


def _probe_one(
    kpi: str, source_name: str, kind: str, source: Source, metrics: list[str], dimensions: list[str],
    freq: str, timezone: str, periods: int, at: pd.Timestamp | None,
) -> SourceProbe:
    """Fetch the last `periods` closed periods of one KPI and describe what came back."""
    # pipeline imports this package; importing it here keeps `forecaster.sources` light.
    from forecaster.pipeline import last_closed_period

    data_delay = getattr(source, "data_delay", pd.Timedelta(0))
    now = pd.Timestamp(at) if at is not None else source.now()
    now = now.tz_localize("UTC") if now.tzinfo is None else now.tz_convert("UTC")
    until = last_closed_period(now, freq, timezone)
    step = pd.Timedelta(days=1) if freq == "D" else pd.Timedelta(hours=1)
    start = until - (periods - 1) * step
    began = time.perf_counter()
    try:
        frame = source.fetch(metrics, dimensions, freq, start=start, end=until)
    except KPIWatchError as exc:
        return SourceProbe(kpi, source_name, kind, False, 0, start, until, None, None, data_delay,
                           time.perf_counter() - began, error=str(exc), exit_code=exc.exit_code)
    seconds = time.perf_counter() - began
    notes = list(getattr(source, "notes", ()))
    last = pd.Timestamp(frame["timestamp"].max()) if len(frame) else None
    if last is None:
        notes.insert(0, f"no rows in the {periods} period(s) {start:%Y-%m-%d %H:%M} .. {until:%Y-%m-%d %H:%M} UTC")
    delay = now - period_end(last, freq, timezone) if last is not None else None
    return SourceProbe(kpi, source_name, kind, True, len(frame), start, until, last, delay, data_delay, seconds,
                       notes=tuple(notes))
