"""One KPI's alerting rules, built once from its config, and the checks they make on a judged period.

The same rules and the same defaults for every face: the daemon, `check`, `check --at`,
`replay` (with or without a config) and the benchmarks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from forecaster.detect import reasons
from forecaster.types import Anomaly, Direction, Judgement, KPISeries, Severity
from forecaster.i18n import metric_name, t
from forecaster.units import (
    DEFAULT_CURRENCY,
    MONEY_METRICS,
    format_money,
    format_number,
    format_ordinal,
    format_percent,
    format_value,
)

if TYPE_CHECKING:
    from forecaster.settings import KPIConfig

# Outside by at least this many band half-widths = critical rather than warning.
CRITICAL_EXCESS = 2.0


@dataclass(frozen=True)
class Rules:
    """What makes a judged period an alert (defaults in brackets; the same as `KPIConfig`'s).

    good: the KPI's good direction; None = neither way is good news, both alert [None: a bare
        file has no direction; a configured KPI's default is up].
    good_news: with `good` set, moves the good way alert too, as good news [False].
    level: the band's probability for daily data [0.99]; finer data get a per-period level
        with the same expected false alarms per day (`forecaster.detect.engine`).
    min_volume: a period whose volume (a ratio's denominator, else max(value, expected)) is
        below this never alerts [0].
    min_abs_change: |value - expected| below this (the KPI's units) never alerts [0].
    for_periods: alert only from the Nth alertable period in a row the same way [1].
    event_margin: on a calendar event day (daily data) the band widens by this fraction of
        |expected| on each side: an event's effect is learned from one or two earlier years [0.15].
    repeat_hours: an ongoing episode is announced again after this many hours [24].
    """

    good: Direction | None = None
    good_news: bool = False
    level: float = 0.99
    min_volume: float = 0.0
    min_abs_change: float = 0.0
    for_periods: int = 1
    event_margin: float = 0.15
    repeat_hours: float = 24.0

    @classmethod
    def from_kpi(cls, kpi: KPIConfig, repeat_hours: float = 24.0) -> Rules:
        """The rules of a configured KPI; `repeat_hours` from the config's `alerting`."""
        return cls(kpi.good, kpi.good_news, kpi.level, kpi.min_volume, kpi.min_abs_change, kpi.for_periods,
                   kpi.event_margin, repeat_hours)

    def alerts_when(self, direction: Direction) -> bool:
        """Whether a move in `direction` may alert (the bad way, or good news when asked)."""
        return self.good is None or direction is not self.good or self.good_news

    def is_bad(self, direction: Direction) -> bool:
        return self.good is None or direction is not self.good

    def describe(self, events: str = "") -> str:
        """The rules in one short line, e.g. "level 0.99, alerts when down (good: up), for_periods 1";
        `events`: what the event days are, "" = none apply."""
        if self.good is None:
            parts = [f"level {self.level:g}", "alerts either way"]
        elif self.good_news:
            parts = [f"level {self.level:g}", f"alerts either way (good news when {self.good.value})"]
        else:
            parts = [f"level {self.level:g}", f"alerts when {self.good.opposite().value} (good: {self.good.value})"]
        if self.min_abs_change:
            parts.append(f"min_abs_change {self.min_abs_change:g}")
        if self.min_volume:
            parts.append(f"min_volume {self.min_volume:g}")
        parts.append(f"for_periods {self.for_periods}")
        if events and self.event_margin:
            parts.append(f"event_margin {self.event_margin:g} ({events})")
        return ", ".join(parts)


def guardrail(actual: float, expected: float, volume: float, rules: Rules) -> str:
    """Why an outside-the-band period is still not news, or "" when it is (`min_abs_change`,
    then `min_volume` against `volume`, or max(actual, expected) when `volume` is NaN)."""
    change = abs(actual - expected)
    if change < rules.min_abs_change:
        return reasons.small_change(change, rules.min_abs_change)
    size = volume if not math.isnan(volume) else max(actual, expected)
    if size < rules.min_volume:
        return reasons.small_volume(size, rules.min_volume)
    return ""


def held_back(judgement: Judgement, run: int, volume: float, rules: Rules, unit: str = "",
              volume_name: str = "", currency: str = DEFAULT_CURRENCY, when: str = "") -> str:
    """Why a judged period that would have alerted did not, with the numbers, or "" when it
    alerted or was never a candidate: "3.1x expected ($93.00 vs $30.00) on Wed 03 Dec 2025, not
    alerted: 12 conversions < min_volume 30" (`when`: the period as named, "" = left out).

    A candidate is a period outside its band the way the KPI alerts (`alerts_when`) that was
    held back by `min_abs_change`, `min_volume` or `for_periods`. A move the good way without
    `good_news` is not one: the config asked not to hear of it, and it is no incident. Neither
    is a sub-daily "daily habit" (the detector's reading that the value is usual for the hour).

    run: periods in a row ending here, outside the band the same way (for `for_periods`).
    volume: the period's denominator for a ratio (NaN for a count); volume_name: its metric
    ("conversions"; money metrics are priced in `currency`); unit: the KPI's unit.
    """
    if not judgement.direction or math.isnan(judgement.score):
        return ""  # not judged: no band to be outside of
    if not rules.alerts_when(Direction(judgement.direction)):
        return ""
    guard = guardrail(judgement.actual, judgement.expected, volume, rules)
    if judgement.reason and judgement.reason == guard:
        why = _guard_numbers(judgement, volume, rules, volume_name, currency)
    elif judgement.is_anomaly and not judgement.alert and run < rules.for_periods:
        why = t("held_back.run", ordinal=format_ordinal(run), for_periods=rules.for_periods)
    else:
        return ""
    on = t("held_back.at", period=when) if when else ""
    return t("held_back.line", how_far=_how_far(judgement, unit), on=on, why=why)


def _guard_numbers(judgement: Judgement, volume: float, rules: Rules, volume_name: str, currency: str) -> str:
    """The guardrail that held a period back, as "<value> < <setting> <limit>"."""
    change = abs(judgement.actual - judgement.expected)
    if change < rules.min_abs_change:
        return f"change {change:.3g} < min_abs_change {rules.min_abs_change:g}"
    if math.isnan(volume):
        return f"{format_number(max(judgement.actual, judgement.expected))} < min_volume {rules.min_volume:g}"
    amount = format_money(volume, currency, whole=True) if volume_name in MONEY_METRICS else format_number(volume)
    return f"{amount} {metric_name(volume_name) if volume_name else ''} < min_volume {rules.min_volume:g}".replace("  ", " ")


def _how_far(judgement: Judgement, unit: str) -> str:
    """"3.1x expected ($93.00 vs $30.00)" for a rise to twice or more, else "-45.0% against
    expected (1.20% vs 2.19%)"."""
    actual, expected = judgement.actual, judgement.expected
    values = t("held_back.values", actual=format_value(actual, unit), expected=format_value(expected, unit))
    if expected > 0 and actual >= 2 * expected:
        return t("held_back.times", times=f"{format_number(actual / expected, 1)}x", values=values)
    if expected == 0:
        return t("held_back.against_expected_value", actual=format_value(actual, unit),
                 expected=format_value(expected, unit))
    return t("held_back.against_expected", change=format_percent((actual - expected) / abs(expected), 1, sign=True),
             values=values)


def sampling_sigma(rate: float, volume: float, typical_volume: float, z: float) -> tuple[float, float]:
    """For a share (0..1) over `volume` trials: (the binomial spread it gains over a period of
    its usual size, the least sigma its own sampling noise allows), both in the share's units.

    The calibrated band already holds the sampling noise of a typical period; only the excess of
    a small period (40 sessions instead of 4,000) is added. Half a count (0.5 / volume) on each
    side is the continuity correction: one conversion out of 3 sessions is a jump of 33 points,
    not a 1-in-100 event when the rate is 1.5%.
    """
    usual = _binomial_variance(rate, typical_volume) if typical_volume > 0 else 0.0
    extra = max(0.0, _binomial_variance(rate, volume) - usual)
    least = math.sqrt(_binomial_variance(rate, volume)) + 0.5 / volume / z
    return math.sqrt(extra), least


def _binomial_variance(rate: float, volume: float) -> float:
    """Variance of a share `rate` (clipped to 0..1) observed over `volume` trials: p(1-p)/n."""
    p = min(max(rate, 0.0), 1.0)
    return p * (1 - p) / volume


def severity(actual: float, expected: float, lower: float, upper: float, is_bad: bool) -> Severity:
    """Good news, or critical when the value lies `CRITICAL_EXCESS` half-widths out, else warning."""
    if not is_bad:
        return Severity.GOOD_NEWS
    bound = upper if actual > expected else lower
    half = abs(bound - expected)
    excess = abs(actual - expected) / half if half > 0 else math.inf
    return Severity.CRITICAL if excess >= CRITICAL_EXCESS else Severity.WARNING


def to_anomaly(series: KPISeries, judgement: Judgement, rules: Rules, unit: str = "") -> Anomaly | None:
    """The Anomaly of an alerting judgement of `series` (None when it does not alert)."""
    if not judgement.alert:
        return None
    direction = Direction(judgement.direction)
    is_bad = rules.is_bad(direction)
    return Anomaly(
        kpi=series.name,
        segment=dict(series.segment),
        period=judgement.period,
        freq=series.freq,
        actual=judgement.actual,
        expected=judgement.expected,
        lower=judgement.lower,
        upper=judgement.upper,
        direction=direction,
        is_bad=is_bad,
        severity=severity(judgement.actual, judgement.expected, judgement.lower, judgement.upper, is_bad),
        score=judgement.score,
        model=judgement.model,
        unit=unit,
        run_length=judgement.run_length,
        level=rules.level,
    )
