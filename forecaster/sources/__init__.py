"""Where KPI metrics come from. Every source answers one question the same way:

`fetch(metrics, dimensions, freq, start, end)` -> rows `timestamp, *dimensions, *metrics`, the
metrics summed per period and dimension value (the database or file does the summing), and
`now()` -> the current time as the source sees it (the demo's fixed clock, else the wall clock).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import pandas as pd

from forecaster.settings import SourceConfig


class Source(Protocol):
    """The contract every source keeps (see the module docstring)."""

    name: str

    def fetch(
        self,
        metrics: Sequence[str],
        dimensions: Sequence[str],
        freq: str,
        start: pd.Timestamp | None = None,
        end: pd.Timestamp | None = None,
    ) -> pd.DataFrame: ...

    def now(self) -> pd.Timestamp: ...


def make_source(config: SourceConfig) -> Source:
    """The source a config entry describes."""
    from forecaster.sources.demo import DemoSource  # the only kind so far; SQL, GA4, files follow

    return DemoSource()
