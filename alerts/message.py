"""Alerts as data and as text (pure functions). Slack Block Kit joins these with delivery."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from forecaster.types import Alert, Hint, segment_label

SEVERITY_MARK = {"critical": "[CRITICAL]", "warning": "[WARNING]", "good_news": "[GOOD NEWS]"}


def alert_to_dict(alert: Alert) -> dict[str, Any]:
    """The JSON shape of one alert (DESIGN.md: `check`/`demo --format json`); hints best first."""
    anomaly = alert.anomaly
    return {
        "kpi": anomaly.kpi,
        "segment": dict(anomaly.segment),
        "period": _iso(anomaly.period),
        "actual": _number(anomaly.actual),
        "expected": _number(anomaly.expected),
        "lower": _number(anomaly.lower),
        "upper": _number(anomaly.upper),
        "direction": anomaly.direction.value,
        "severity": anomaly.severity.value,
        "score": round(anomaly.score, 6),
        "text": alert.text,
        "hints": [hint_to_dict(hint) for hint in alert.hints],
        "good_news": not anomaly.is_bad,
        "deviation": _number(anomaly.deviation),
        "level": anomaly.level,
        "unit": anomaly.unit,
        "model": anomaly.model,
        "run_length": anomaly.run_length,
    }


def hint_to_dict(hint: Hint) -> dict[str, Any]:
    """One hint: kind, kpi, segment, text, plus its evidence and data."""
    return {
        "kind": hint.kind,
        "kpi": hint.kpi,
        "segment": dict(hint.segment),
        "text": hint.text,
        "evidence": round(hint.evidence, 6),
        **{key: _plain(value) for key, value in hint.data.items()},
    }


def plain_text(alert: Alert, max_hints: int = 4) -> str:
    """The alert as a few lines of text: severity and headline, then the top hints."""
    lines = [f"{SEVERITY_MARK[alert.anomaly.severity.value]} {alert.text}"]
    lines.extend(f"  - {hint.text}" for hint in alert.hints[:max_hints])
    return "\n".join(lines)


def alert_slug(alert: Alert) -> str:
    """A file-name-safe name for the alert's chart: `conversion_rate__device-mobile__2025-12-10`."""
    anomaly = alert.anomaly
    where = segment_label(anomaly.segment).replace("=", "-").replace(", ", "_")
    return f"{anomaly.kpi}__{where}__{anomaly.period.strftime('%Y-%m-%dT%H%M')}".replace("T0000", "")


def _iso(value: pd.Timestamp) -> str:
    return value.isoformat()


def _number(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value
