"""Numbers as people read them: 2.41%, €1,204, 3.20 s, 12,345."""

from __future__ import annotations

import math

import pandas as pd

CURRENCIES = {"€", "$", "£"}


def format_value(value: float, unit: str = "") -> str:
    """A KPI value in its unit: "%" shows a share (0.0241) as 2.41%, currencies lead."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "no data"
    if unit == "%":
        return f"{value * 100:.2f}%"
    if unit in CURRENCIES:
        sign = "-" if value < 0 else ""
        amount = f"{abs(value):,.2f}" if abs(value) < 100 else f"{abs(value):,.0f}"
        return f"{sign}{unit}{amount}"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "x":
        return f"{value:.2f}x"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}"
    return f"{text} {unit}".rstrip()


def format_change(actual: float, expected: float, unit: str = "") -> str:
    """The change against expected in percent, plus points for shares: "-45.2% (-0.87 points)"."""
    points = f" ({(actual - expected) * 100:+.2f} points)" if unit == "%" else ""
    if expected == 0:
        return f"{'+' if actual >= 0 else '-'}{format_value(abs(actual - expected), unit)}{points}"
    return f"{(actual - expected) / abs(expected) * 100:+.1f}%{points}"


def format_period(period: pd.Timestamp, freq: str) -> str:
    """A period as a person names it: "Wed 10 Dec 2025" for days and weeks, "Dec 2025" for months,
    "Q4 2025" for quarters, "10 Dec 2025 14:00 UTC" for hours and finer."""
    code = freq.upper()
    if code in {"MS", "M", "ME", "BMS", "BME"}:
        return period.strftime("%b %Y")
    if code.startswith("Q"):
        return f"Q{period.quarter} {period.year}"
    if freq.lower() in {"d", "w"} or code.startswith("W"):
        return period.strftime("%a %d %b %Y")
    return period.strftime("%d %b %Y %H:%M UTC")
