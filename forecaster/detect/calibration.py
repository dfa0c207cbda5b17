"""Conformal calibration: a band sized by the model's own out-of-sample one-step errors.

The same for every model (ETS, seasonal naive, Prophet, auto's choice): a library's own interval
assumes its error model and is too narrow or too wide on real data, so none is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from forecaster.models.base import z_value

CALIBRATION_LEVEL = 0.99  # the quantile of past errors the band's scale is read from
NORMAL_Q99 = z_value(CALIBRATION_LEVEL)  # 2.576: the 99% two-sided point of a standard normal


@dataclass(frozen=True)
class ErrorTail:
    """The size of recent |one-step errors| as a normal-equivalent sigma: their empirical 99%
    quantile divided by 2.576 (conformal: read off out-of-sample errors, not a model's formula).
    The band at level L is sigma * z(L); a 5-minute series needs the 99.997% point, which no
    window of errors shows directly, so the normal curve extrapolates beyond the 99% quantile.
    (An exponential tail fitted to the 90%-99% quantiles was tried and scored lower on NAB dev:
    BENCHMARKS.md.)
    """

    sigma: float

    @classmethod
    def from_errors(cls, errors: np.ndarray, floor: float) -> ErrorTail:
        """From |errors| (any order); `floor`: the least sigma (a flat stretch gives no zero band)."""
        q99 = quantile(errors, CALIBRATION_LEVEL) if len(errors) else 0.0
        return cls(max(q99 / NORMAL_Q99, floor))

    def half_width(self, level: float) -> float:
        """The |error| exceeded with probability 1 - level."""
        return self.sigma * z_value(level)

    def score(self, error: float) -> float:
        """1 - the probability of an |error| at least this large: in [0, 1], monotone."""
        return math.erf(error / self.sigma / math.sqrt(2.0))


def quantile(values: np.ndarray, q: float) -> float:
    """np.quantile(values, q) (linear interpolation), by a partial sort of the two order
    statistics it needs: the same number at a third of the cost, once per judged period."""
    position = (len(values) - 1) * q
    low = int(math.floor(position))
    high = min(low + 1, len(values) - 1)
    part = np.partition(values, [low, high])
    return float(part[low] + (part[high] - part[low]) * (position - low))
