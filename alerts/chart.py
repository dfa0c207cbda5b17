"""A PNG people would rather look at than read: recent history, the forecast band, the anomaly.

Drawn with matplotlib's Agg backend (no screen needed), 800 x 360 px: readable at Slack's
preview size. Pure apart from writing the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: the daemon and CI have no display

import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from forecaster.i18n import kpi_name, t  # noqa: E402
from forecaster.types import Anomaly, Forecast, Judgement, segment_label  # noqa: E402
from forecaster.units import currency_of, format_percent, format_value  # noqa: E402

HISTORY_PERIODS = 56  # eight weeks of daily data before the forecast starts
SIZE_INCHES = (8.0, 3.6)
DPI = 100


def chart_subject(anomaly: Anomaly) -> str:
    """What an alert's chart shows: "conversion_rate device=mobile", "sessions total" (in
    Dutch "conversieratio device=mobile", "sessies totaal")."""
    where = segment_label(anomaly.segment) if anomaly.segment else t("word.total")
    return t("chart.subject", kpi=kpi_name(anomaly.kpi), where=where)


def chart_title(anomaly: Anomaly) -> str:
    """An alert's chart title: its subject and model, "sessions total (auto)"."""
    return t("chart.title", subject=chart_subject(anomaly), model=anomaly.model)


def render_chart(
    path: str | Path,
    history: pd.Series,
    forecast: Forecast | None,
    judgements: Sequence[Judgement] = (),
    title: str = "",
    unit: str = "",
) -> Path:
    """Write the chart to `path` (PNG) and return the path.

    history: the observed series (it may run into the forecast window: those are the judged
    values). forecast: the band to shade (None: history only). judgements: anomalous ones are
    marked in red.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    start = forecast.mean.index[0] if forecast is not None else history.index[-1]
    shown = history[history.index >= start - HISTORY_PERIODS * _step(history)]
    # A Figure of its own, not pyplot's global state: the daemon draws charts in several job
    # threads at once, and a figure nobody registered needs no closing (memory stays flat).
    figure = Figure(figsize=SIZE_INCHES, dpi=DPI)
    axes = figure.subplots()
    axes.plot(shown.index, shown.to_numpy(), color="#2b2b2b", linewidth=1.3, label=t("chart.actual"))
    if forecast is not None:
        lower, upper = _band(forecast, judgements)
        axes.fill_between(
            forecast.mean.index,
            lower,
            upper,
            color="#7aa6d8",
            alpha=0.35,
            label=t("chart.band", level=format_percent(forecast.level)),
        )
        axes.plot(forecast.mean.index, forecast.mean.to_numpy(), color="#1f5fa8", linestyle="--", linewidth=1.1, label=t("chart.expected"))
    flagged = [j for j in judgements if j.is_anomaly]
    if flagged:
        axes.scatter([j.period for j in flagged], [j.actual for j in flagged], color="#d62728", zorder=5, s=28, label=t("chart.anomaly"))
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: _tick(value, unit)))
    axes.set_title(title, fontsize=11, loc="left")
    axes.grid(alpha=0.25)
    axes.legend(loc="upper left", fontsize=8, frameon=False)
    figure.autofmt_xdate()
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path


def _band(forecast: Forecast, judgements: Sequence[Judgement]) -> tuple[list[float], list[float]]:
    """The band the detector really used (widened for volume or events), else the model's."""
    judged = {j.period: j for j in judgements}
    lower = [judged[t].lower if t in judged else float(forecast.lower[t]) for t in forecast.mean.index]
    upper = [judged[t].upper if t in judged else float(forecast.upper[t]) for t in forecast.mean.index]
    return lower, upper


def _step(history: pd.Series) -> pd.Timedelta:
    if history.index.freq is not None:
        try:
            return pd.Timedelta(history.index.freq)
        except ValueError:  # calendar frequencies (month) have no fixed length
            pass
    return pd.Timedelta(history.index[-1] - history.index[-2]) if len(history) > 1 else pd.Timedelta(days=1)


def _tick(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value * 100:.1f}%"
    if currency_of(unit) is not None:
        return format_value(value, unit)  # money is spelled in one place, with the KPI's currency
    if unit == "s":
        return f"{value:.1f} s"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
