"""The shared vocabulary of kpiwatch: series in, forecasts, anomalies and alerts out.

Every other module speaks in these frozen dataclasses. They hold data only; the rules that
produce them live in `sources/`, `models/`, `detect.py` and `explain.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

import numpy as np
import pandas as pd


class KPIWatchError(Exception):
    """Base of every error kpiwatch reports to a user as one clear line (never a traceback)."""

    exit_code: int = 2


class BadInputError(KPIWatchError):
    """The user's input (config, CSV, arguments) is wrong; the message says what and the fix. Exit 2."""

    exit_code = 2


class SourceError(KPIWatchError):
    """A data source could not be read (down, refused, timed out). Exit 3."""

    exit_code = 3


class Direction(str, Enum):
    """Which way a value moved, or which way is good for a KPI."""

    UP = "up"
    DOWN = "down"

    def opposite(self) -> Direction:
        return Direction.DOWN if self is Direction.UP else Direction.UP


class Severity(str, Enum):
    """How urgent an anomaly is. `good_news` is an anomaly in the KPI's good direction."""

    GOOD_NEWS = "good_news"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True)
class KPISeries:
    """One KPI time series for one segment, validated where it enters (in `sources/`).

    values: tz-aware UTC DatetimeIndex at a regular frequency, float values, NaN = missing
    (never zero). Each timestamp is the *start* of its period.
    freq: pandas offset alias in lowercase: "h", "D", "W", "MS", "5min".
    segment: dimension -> value, e.g. {"device": "mobile"}; empty for the KPI's total.
    denominator: for a ratio KPI, the summed denominator per period (sessions for a conversion
    rate), aligned with `values`; used to widen intervals where volume is small.
    """

    name: str
    values: pd.Series
    freq: str
    segment: Mapping[str, str] = field(default_factory=dict)
    denominator: pd.Series | None = None

    @property
    def label(self) -> str:
        """`name` plus its segment, e.g. `conversion_rate[device=mobile]`."""
        return self.name + segment_label(self.segment, brackets=True)


@dataclass(frozen=True)
class Forecast:
    """A model's forecast over `horizon` future periods, all three series on the same index.

    level: the central probability the [lower, upper] band is meant to hold (0.95 = 95%).
    model: the name of the model that really produced it (after any fallback).
    note: why a fallback happened, or "" when none did.
    """

    mean: pd.Series
    lower: pd.Series
    upper: pd.Series
    level: float
    model: str
    note: str = ""

    @classmethod
    def symmetric(cls, mean: np.ndarray, half: np.ndarray | float, index: pd.DatetimeIndex, level: float,
                  model: str) -> Forecast:
        """A band `mean +- half` (same units as the series) on `index`."""
        return cls(
            mean=pd.Series(mean, index=index),
            lower=pd.Series(mean - half, index=index),
            upper=pd.Series(mean + half, index=index),
            level=level,
            model=model,
        )

    def to_frame(self) -> pd.DataFrame:
        """Columns `forecast, lower, upper`, index the period starts."""
        return pd.DataFrame({"forecast": self.mean, "lower": self.lower, "upper": self.upper})


@dataclass(frozen=True)
class Judgement:
    """The detector's verdict on one period of one series (anomalous or not).

    score: in [0, 1], monotone in how far `actual` lies from `expected` in units of the band;
    it equals the band's level exactly at the band's edge (NaN: not judged, `reason` says why).
    is_anomaly: outside the band (or a change of behaviour) and past the guardrails, either way.
    alert: the KPI's rules make it an alert (its bad way or good news, "for N periods").
    direction: "up" | "down" (the way it moved), "" when not judged.
    run_length: alerting periods in a row ending here (0 when not an alert).
    model: the model that forecast it (after any fallback).
    notice: "new" when the alert starts an episode, "repeat" when an ongoing one is announced
        again (`Rules.repeat_hours`), else "".
    episode: an alert episode of this series is still going on after this period (its incident
        stays open); it ends after a calm spell (`forecaster.detect.engine`).
    """

    period: pd.Timestamp
    actual: float
    expected: float
    lower: float
    upper: float
    score: float
    is_anomaly: bool
    reason: str = ""
    alert: bool = False
    direction: str = ""
    run_length: int = 0
    model: str = ""
    notice: str = ""
    episode: bool = False


@dataclass(frozen=True)
class Anomaly:
    """A period judged outside its calibrated interval, after the KPI's guardrails.

    direction: the way the value moved; `is_bad` says whether that is the KPI's bad way.
    run_length: how many consecutive periods, ending at `period`, were anomalous the same way.
    level: the probability of the band [lower, upper] (0.99 = 99%).
    """

    kpi: str
    segment: Mapping[str, str]
    period: pd.Timestamp
    freq: str
    actual: float
    expected: float
    lower: float
    upper: float
    direction: Direction
    is_bad: bool
    severity: Severity
    score: float
    model: str
    unit: str = ""
    run_length: int = 1
    level: float = 0.99

    @property
    def deviation(self) -> float:
        """(actual - expected) / |expected|, a fraction (-0.38 = 38% below); NaN if expected is 0."""
        if self.expected == 0:
            return float("nan")
        return (self.actual - self.expected) / abs(self.expected)


@dataclass(frozen=True)
class Hint:
    """One drill-down hint, one short sentence with numbers: where to look next.

    kind: "related" | "component" | "segment" | "context" | "impact".
    evidence: the ranking key (higher = stronger); hints are shown best first.
    """

    kind: str
    text: str
    kpi: str = ""
    segment: Mapping[str, str] = field(default_factory=dict)
    evidence: float = 0.0
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Alert:
    """What a person receives: the anomaly, a one-line headline and the hints, best first."""

    anomaly: Anomaly
    text: str
    hints: tuple[Hint, ...] = ()


def segment_label(segment: Mapping[str, str], brackets: bool = False) -> str:
    """`device=mobile, channel=email` (sorted by dimension); "" (or "total" without brackets)."""
    if not segment:
        return "" if brackets else "total"
    inner = ", ".join(f"{k}={v}" for k, v in sorted(segment.items()))
    return f"[{inner}]" if brackets else inner


def segment_key(segment: Mapping[str, str]) -> str:
    """The stored form of a segment: `channel=email,device=mobile` (sorted); "" for the total."""
    return ",".join(f"{k}={v}" for k, v in sorted(segment.items()))


@dataclass(frozen=True)
class PackedState:
    """A series' detector state as the store keeps it: packed bytes (`pack_state`) and the
    period it judges next, tz-aware UTC (the store's column, read without unpacking)."""

    blob: bytes
    next_period: datetime
