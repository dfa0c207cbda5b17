"""The report's charts as inline SVG, drawn by matplotlib (no JavaScript, no fonts or files to
fetch: a page opens offline and a screen reader reads each chart's `<title>` and `<desc>`).

Text stays text in the SVG (`svg.fonttype: none`), so it is small, sharp and selectable; element
ids get a per-chart prefix so several charts live in one page without clashing.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from html import escape

import matplotlib

matplotlib.use("Agg")  # before pyplot is ever imported: the daemon has no display

import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from forecaster.types import Judgement  # noqa: E402
from forecaster.units import currency_of, format_value  # noqa: E402

# Colours chosen for contrast on white (WCAG AA for text, 3:1 at least for lines and marks).
INK = "#1a1a1a"
BAND = "#9cc3e6"
EXPECTED = "#1d4f91"
ANOMALY = "#b3261e"
GRID = "#d0d0d0"
HISTORY_PERIODS = 90  # periods of history a KPI chart shows (the band covers the judged ones)

_STYLE = {"svg.fonttype": "none", "svg.hashsalt": "kpiwatch", "font.size": 9, "text.color": INK,
          "axes.labelcolor": INK, "xtick.color": INK, "ytick.color": INK, "axes.edgecolor": "#595959"}
_ID = re.compile(r'\bid="([^"]+)"')


def kpi_chart(chart_id: str, history: pd.Series, judgements: Sequence[Judgement], unit: str, title: str,
              description: str, labels: dict[str, str]) -> str:
    """An SVG line chart: the last `HISTORY_PERIODS` of `history`, the judged periods' band and
    expected value, the anomalous periods marked. labels: the legend's texts, by "actual",
    "expected", "band", "anomaly". Returns `<svg ...>` markup with `role="img"`, `<title>` and
    `<desc>`, ids prefixed with `chart_id`."""
    shown = history.iloc[-HISTORY_PERIODS:]
    with matplotlib.rc_context(_STYLE):
        figure = Figure(figsize=(8.0, 3.4))
        axes = figure.subplots()
        axes.plot(shown.index, shown.to_numpy(dtype="float64"), color=INK, linewidth=1.4, label=labels["actual"])
        judged = [j for j in judgements if j.period >= shown.index[0]] if len(shown) else list(judgements)
        if judged:
            when = [j.period for j in judged]
            axes.fill_between(when, [j.lower for j in judged], [j.upper for j in judged], color=BAND, alpha=0.6,
                              linewidth=0, label=labels["band"])
            axes.plot(when, [j.expected for j in judged], color=EXPECTED, linestyle="--", linewidth=1.2,
                      label=labels["expected"])
            flagged = [j for j in judged if j.is_anomaly]
            if flagged:
                axes.scatter([j.period for j in flagged], [j.actual for j in flagged], color=ANOMALY, marker="D",
                             s=26, zorder=5, label=labels["anomaly"])
        _axes_style(axes, unit)
        axes.legend(loc="upper left", fontsize=8, frameon=False, ncol=4)
        figure.autofmt_xdate()
        figure.tight_layout()
        return _svg(figure, chart_id, title, description, "chart")


def sparkline(chart_id: str, values: pd.Series, title: str, description: str) -> str:
    """A tiny SVG line (no axes) of `values`, the last point marked; `<title>`/`<desc>` as above."""
    with matplotlib.rc_context(_STYLE):
        figure = Figure(figsize=(1.6, 0.4))
        axes = figure.add_axes((0.02, 0.1, 0.96, 0.8))
        clean = values.dropna()
        if len(clean):
            axes.plot(clean.index, clean.to_numpy(dtype="float64"), color=EXPECTED, linewidth=1.1)
            axes.scatter([clean.index[-1]], [clean.iloc[-1]], color=INK, s=8, zorder=3)
        axes.set_axis_off()
        return _svg(figure, chart_id, title, description, "spark")


def _axes_style(axes: object, unit: str) -> None:
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: _tick(value, unit)))  # type: ignore[attr-defined]
    axes.grid(color=GRID, linewidth=0.6)  # type: ignore[attr-defined]
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)  # type: ignore[attr-defined]


def _tick(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value * 100:.1f}%"
    if currency_of(unit) is not None or unit in ("s", "x"):
        return format_value(value, unit)
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _svg(figure: Figure, chart_id: str, title: str, description: str, css_class: str) -> str:
    """The figure as inline `<svg>` markup: no XML prolog, no fixed size (CSS scales it), ids
    prefixed, labelled by its `<title>` and `<desc>` for screen readers."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    text = text[text.index("<svg"):]
    ids = set(_ID.findall(text))
    for old in sorted(ids, key=len, reverse=True):
        new = f"{chart_id}-{old}"
        text = text.replace(f'id="{old}"', f'id="{new}"').replace(f"#{old})", f"#{new})")
        text = text.replace(f'href="#{old}"', f'href="#{new}"')
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    head_end = text.index(">") + 1
    head = re.sub(r'\s(width|height)="[^"]*"', "", text[:head_end])
    head = head.replace("<svg", f'<svg class="{css_class}" role="img" aria-labelledby="{chart_id}-title '
                                f'{chart_id}-desc" focusable="false"', 1)
    label = (f'<title id="{chart_id}-title">{escape(title)}</title>'
             f'<desc id="{chart_id}-desc">{escape(description)}</desc>')
    return head + label + text[head_end:].rstrip() + "\n"
