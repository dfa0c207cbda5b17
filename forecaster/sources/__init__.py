"""Where KPI metrics come from. Every source answers one question the same way:

`fetch(metrics, dimensions, freq, start, end)` -> rows `timestamp, *dimensions, *metrics`, the
metrics summed per period and dimension value (the database or file does the summing); with
`rows=True` a source that can count them adds `_rows`, the raw rows summed into each row (files,
SQL tables; a query, GA4 and the demo cannot, and return no `_rows`: see forecaster.completeness);
`now()` -> the current time as the source sees it (the demo's fixed clock, else the wall clock).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import pandas as pd

from forecaster.sources.config import AnySourceConfig


class Source(Protocol):
    """The contract every source keeps (see the module docstring)."""

    name: str
    data_delay: pd.Timedelta  # how long after a period ends its data are complete (0 = at once)

    def fetch(
        self,
        metrics: Sequence[str],
        dimensions: Sequence[str],
        freq: str,
        start: pd.Timestamp | None = None,
        end: pd.Timestamp | None = None,
        *,
        rows: bool = False,
    ) -> pd.DataFrame: ...

    def now(self) -> pd.Timestamp: ...


def make_source(config: AnySourceConfig, timezone: str = "UTC", name: str = "") -> Source:
    """The source a `sources:` entry describes.

    timezone: IANA zone in which daily periods are cut (the config's `timezone`; default UTC).
    name: the entry's name under `sources:`, for messages (default: the type).
    Importing a kind's module is deferred to here, so a missing optional extra (pyarrow,
    google-analytics-data) only matters to configs that use it.
    """
    if config.type == "demo":
        from forecaster.sources.demo import DemoSource

        return DemoSource()
    if config.type in ("csv", "parquet"):
        from forecaster.sources.files import FileSource

        return FileSource(config, timezone, name)  # type: ignore[arg-type]
    if config.type == "sql":
        from forecaster.sources.sql import SQLSource

        return SQLSource(config, timezone, name)  # type: ignore[arg-type]
    from forecaster.sources.ga4 import GA4Source

    return GA4Source(config, timezone, name)  # type: ignore[arg-type]
