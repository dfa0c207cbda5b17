"""Hand-made alerts and check reports for the alerting tests (no model fits)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from forecaster.pipeline import CheckReport, SeriesResult
from forecaster.types import Alert, Anomaly, Direction, Hint, Judgement, KPISeries, Severity

DAY = pd.Timestamp("2025-12-10", tz="UTC")


def series_result(kpi: str, segment: Mapping[str, str], anomalous_last: bool, days: int = 40,
                  last: pd.Timestamp = DAY) -> SeriesResult:
    """A daily series around 100 whose last 7 days (up to `last`) are judged; the last one
    anomalous or not."""
    index = pd.date_range(end=last, periods=days, freq="D", tz="UTC")
    values = pd.Series(100.0 + np.sin(np.arange(days)), index=index)
    if anomalous_last:
        values.iloc[-1] = 60.0
    window = index[-7:]
    judgements = tuple(
        Judgement(t, float(values[t]), 100.0, 95.0, 105.0, 1.0 if (anomalous_last and t == last) else 0.3,
                  bool(anomalous_last and t == last))
        for t in window
    )
    return SeriesResult(KPISeries(kpi, values, "D", dict(segment)), judgements, None, level=0.99, fresh=len(judgements))


def alert(kpi: str = "conversion_rate", segment: Mapping[str, str] | None = None, period: pd.Timestamp = DAY,
          severity: Severity = Severity.CRITICAL, is_bad: bool = True, hints: int = 2) -> Alert:
    """An alert with `hints` hints (an impact hint first when hints >= 3)."""
    segment = {"device": "mobile"} if segment is None else dict(segment)
    anomaly = Anomaly(kpi, segment, period, "D", 60.0, 100.0, 95.0, 105.0, Direction.DOWN, is_bad, severity, 1.0,
                      "ets", unit="", run_length=1)
    kinds = ["related", "segment", "impact", "context", "component"]
    made = tuple(Hint(kinds[i % len(kinds)], f"hint {i} for {kpi}", kpi, segment, 1.0 - i / 10) for i in range(hints))
    return Alert(anomaly, f"{kpi} fell 40% on Wed 10 Dec 2025", made)


def report(alerts: Sequence[Alert], normal: Sequence[tuple[str, Mapping[str, str]]] = ()) -> CheckReport:
    """A check report with a result per alert (anomalous on DAY) and per `normal` series (normal
    up to the day after: back to normal after the alerts' day)."""
    results = [series_result(a.anomaly.kpi, a.anomaly.segment, True) for a in alerts]
    results += [series_result(kpi, segment, False, last=DAY + pd.Timedelta(days=1)) for kpi, segment in normal]
    periods = {a.anomaly.kpi: DAY for a in alerts} | {kpi: DAY + pd.Timedelta(days=1) for kpi, _ in normal}
    return CheckReport(periods, tuple(alerts), tuple(results))
