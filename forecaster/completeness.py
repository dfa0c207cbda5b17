"""Is a period's data all there? Raw rows per period against the periods before it (pure).

An export that is still being written (or a load that failed halfway) has fewer rows than
usual for its latest period; judged as it is, its sums read as a drop. The daemon asks the
source how many raw rows went into each period (`fetch(..., rows=True)` -> column `_rows`) and
judges a period only when its rows reach a share of the usual count: the median of the rows of
the same phase before it (`usual_phase`: the same weekday of the 4 weeks before a day, the same
hour of the 7 days before an hour), so a table of events (one row per order) is not "incomplete"
every Sunday or every night; the median, so one earlier partial or doubled period does not move
the bar.
"""

from __future__ import annotations

import math

import pandas as pd

ROWS_COLUMN = "_rows"
"""The column a source adds to `fetch`'s frame when asked for `rows=True`."""

BASELINE_PERIODS = 28
"""How many periods before the judged one make its usual row count (4 weeks of days)."""


def usual_phase(freq: str) -> tuple[pd.Timedelta, int]:
    """(step, how many) of the earlier periods a period's rows are compared with: for days the
    same weekday of the 4 weeks before, for hours the same hour of the 7 days before."""
    if freq == "D":
        return pd.Timedelta(days=7), 4
    return pd.Timedelta(hours=24), 7


def rows_per_period(frame: pd.DataFrame) -> pd.Series | None:
    """Total raw rows per period label (summed over dimension values) from a `rows=True`
    fetch; None when the source cannot count rows (no `_rows` column)."""
    if ROWS_COLUMN not in frame.columns:
        return None
    totals = frame.groupby("timestamp")[ROWS_COLUMN].sum()
    return totals.astype("float64")


def completeness(rows: pd.Series, period: pd.Timestamp, step: pd.Timedelta,
                 baseline: int = BASELINE_PERIODS) -> float | None:
    """The share of its usual rows that `period` has: its rows / the median rows of the
    `baseline` periods before it (default 28), each `step` apart (1 day or 1 hour).

    rows: raw rows per period label (`rows_per_period`); a label that is absent has 0 rows.
    Earlier periods with no rows are left out of the median (a gap says nothing about the
    usual count). Returns None when no earlier period has rows (nothing to compare with:
    the caller treats the period as complete). Can exceed 1 (more rows than usual).
    """
    before = [period - step * k for k in range(1, baseline + 1)]
    usual = rows.reindex(before).dropna()
    usual = usual[usual > 0]
    if usual.empty:
        return None
    have = float(rows.get(period, 0.0))
    have = 0.0 if math.isnan(have) else have
    return have / float(usual.median())


def is_complete(fraction: float | None, required: float) -> bool:
    """True when a period may be judged: the check is off (`required` 0), the source cannot
    count rows (`fraction` None), or the share reaches `required` (e.g. 0.9)."""
    return required <= 0 or fraction is None or fraction >= required
