"""What marketers said about a series' alerts, as the engine applies it (issue 19).

Two answers to an incident reach the detector (`Detector.step(..., feedback=...)`):

- *False alarm*: this series was too sensitive. Each false alarm weighs
  ``0.5 ** (age / FALSE_ALARM_HALF_LIFE)``, its age measured from the moment it was given to the
  end of the period judged; it applies only to periods that end after it was given (feedback is
  never applied to the past, so a stored state stepped before it and a walk over the history
  with it give the same verdicts). With n the sum of the weights, the band's half-width is
  multiplied by ``BAND_STEP ** min(MAX_STEPS, n)``: x1.25 after one fresh false alarm, at most
  x1.953 (three or more), back to x1.118 a month after a single one.
  In the normal terms the band is sized in, a 0.99 band becomes ~0.9987 after one step, ~0.99994
  after two and ~0.9999995 at the bound (a 0.95 band: ~0.9857, ~0.9978, ~0.99987): the
  z of 2.576 becomes 3.22, 4.02 and 5.03.
- *Expected*: a known campaign or event; the periods of the marked range are normal for the
  model: not judged and not alerted ("marked expected"), they do not continue an alert run or
  episode, the model carries on from its forecast over them as over a calendar event day, and
  their errors do not size the band (an explained movement is neither noise nor a new level). This applies to
  the periods the range covers whenever it was given; a stored state that judged one of them
  otherwise is rebuilt (`forecaster.detect.engine.feedback_changed`).

Feedback is not part of the detector's fingerprint: it is data about the series, not settings.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

FALSE_ALARM_HALF_LIFE = pd.Timedelta(days=30)
"""A false alarm's weight halves every 30 days after it was given: sensitivity comes back by itself."""

BAND_STEP = 1.25
"""The band's half-width is multiplied by this per (weighted) false alarm: 0.99 -> ~0.9987."""

MAX_STEPS = 3.0
"""At most this many steps count: the band is at most BAND_STEP ** 3 = 1.953 times as wide, so a
series answered with many false alarms still alerts on an incident (0.99 -> ~0.9999995)."""

_HALF_LIFE_NS = FALSE_ALARM_HALF_LIFE.value


@dataclass(frozen=True)
class SeriesFeedback:
    """The feedback given on one series' alerts.

    false_alarms: the UTC times a false alarm was given on this series.
    expected: inclusive ranges (first, last) of UTC period starts marked expected.
    Times are tz-aware; naive ones are a ValueError (which zone would they be in?). Small and
    picklable: it travels to the worker processes with each chunk of series.
    """

    false_alarms: tuple[pd.Timestamp, ...] = ()
    expected: tuple[tuple[pd.Timestamp, pd.Timestamp], ...] = ()

    def __post_init__(self) -> None:
        alarms = tuple(sorted(_utc(t, "false_alarms") for t in self.false_alarms))
        ranges = []
        for pair in self.expected:
            first, last = (_utc(t, "expected") for t in pair)
            if first > last:
                raise ValueError(f"SeriesFeedback: an `expected` range must start before it ends, got {first} .. {last}")
            ranges.append((first, last))
        object.__setattr__(self, "false_alarms", alarms)
        object.__setattr__(self, "expected", tuple(ranges))

    def weight(self, period_end: pd.Timestamp) -> float:
        """n: the false alarms given before `period_end`, each weighing 0.5 ** (age / half-life)."""
        end = period_end.value
        return sum(0.5 ** ((end - t.value) / _HALF_LIFE_NS) for t in self.false_alarms if t.value < end)

    def band_scale(self, period_end: pd.Timestamp) -> float:
        """The factor on the band's half-width for the period ending at `period_end`:
        BAND_STEP ** min(MAX_STEPS, n), 1.0 without false alarms before it."""
        if not self.false_alarms or self.false_alarms[0].value >= period_end.value:
            return 1.0
        return BAND_STEP ** min(MAX_STEPS, self.weight(period_end))

    def describe(self, at: pd.Timestamp) -> str:
        """One line on what the false alarms do at `at`: "sensitivity lowered: band x1.25 after
        1 false alarm (last 2025-12-03)"; "" when the band is as it was."""
        scale = self.band_scale(at)
        given = [t for t in self.false_alarms if t.value < at.value]
        if scale == 1.0 or not given:
            return ""
        from forecaster.i18n import tn
        from forecaster.units import format_number

        return tn("feedback.sensitivity", len(given), scale=format_number(scale, 2), last=f"{given[-1]:%Y-%m-%d}")

    def is_expected(self, period: pd.Timestamp) -> bool:
        """Whether the period starting at `period` lies in a range marked expected."""
        return any(first <= period <= last for first, last in self.expected)

    @classmethod
    def of(cls, false_alarms: Iterable[pd.Timestamp | str] = (),
           expected: Iterable[tuple[pd.Timestamp | str, pd.Timestamp | str]] = ()) -> SeriesFeedback:
        """From any iterables of stamps (ISO strings with an offset are read as pandas does)."""
        return cls(tuple(pd.Timestamp(t) for t in false_alarms),
                   tuple((pd.Timestamp(a), pd.Timestamp(b)) for a, b in expected))


def _utc(value: object, name: str) -> pd.Timestamp:
    stamp = pd.Timestamp(value)  # type: ignore[arg-type]
    if stamp.tzinfo is None:
        raise ValueError(f"SeriesFeedback: `{name}` times must be tz-aware (UTC), got {stamp}")
    return stamp.tz_convert("UTC")
