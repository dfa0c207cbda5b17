"""The demo shop as a data source: the same interface as the real sources, served from memory
(the data and its ground truth are generated in `forecaster.demo`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from forecaster.demo.shop import DEMO_NOW, DIMENSIONS, METRICS, cached_frame, check_freq
from forecaster.types import BadInputError


class DemoSource:
    """A data source serving the in-memory demo shop (same interface as the real sources).

    seed: seed of the generated data (default 7, the one the docs and tests describe).
    """

    name: str = "demo"
    data_delay: pd.Timedelta = pd.Timedelta(0)  # the demo's periods are complete when they end

    def __init__(self, seed: int = 7) -> None:
        self.seed = int(seed)

    def __repr__(self) -> str:
        return f"DemoSource(seed={self.seed})"

    def now(self) -> pd.Timestamp:
        """The demo's fixed clock, DEMO_NOW (tz-aware UTC), so runs are reproducible."""
        return DEMO_NOW

    def fetch(
        self,
        metrics: Sequence[str],
        dimensions: Sequence[str],
        freq: str,
        start: pd.Timestamp | None = None,
        end: pd.Timestamp | None = None,
        *,
        rows: bool = False,
    ) -> pd.DataFrame:
        """Metrics summed over every dimension not requested, for start <= timestamp <= end.

        metrics: names from METRICS, returned in the order given.
        dimensions: names from DIMENSIONS to keep (empty: totals only).
        freq: "D" or "h" (see `demo_frame`).
        start, end: inclusive bounds on the row label (UTC; tz-naive values are read as UTC);
            None = unbounded. Daily labels are midnight UTC of the local date.
        rows: accepted for the contract; the demo has no raw rows to count, so no `_rows`
            column is returned (its periods are always complete).

        Returns columns `timestamp, *dimensions, *metrics` sorted by timestamp then dimension
        values, with a fresh RangeIndex. Raises BadInputError for an unknown metric, dimension
        or freq, or when no metric is requested.
        """
        metric_list = _check_names("metric", metrics, METRICS)
        dim_list = _check_names("dimension", dimensions, DIMENSIONS)
        if not metric_list:
            raise BadInputError(
                f"demo source: no metric requested; choose from {', '.join(METRICS)}"
            )
        lo, hi = _as_utc(start, "start"), _as_utc(end, "end")

        check_freq(freq)
        # The cached frame itself (no copy): it is only read, filtered and aggregated below.
        frame = cached_frame(freq, self.seed)
        keep = np.ones(len(frame), dtype=bool)
        if lo is not None:
            keep &= (frame["timestamp"] >= lo).to_numpy()
        if hi is not None:
            keep &= (frame["timestamp"] <= hi).to_numpy()
        # Filter first (cheap), then aggregate only the columns that are returned.
        sub = frame.loc[keep, ["timestamp", *dim_list, *metric_list]]
        out = sub.groupby(["timestamp", *dim_list], sort=True, observed=True)[metric_list].sum()
        return out.reset_index()


def _check_names(kind: str, requested: Sequence[str], allowed: Sequence[str]) -> list[str]:
    """Validate requested names (order kept, duplicates dropped) or raise BadInputError."""
    if isinstance(requested, str):
        # A bare string would silently iterate per character; treat it as a single name.
        requested = [requested]
    unknown = [n for n in requested if n not in allowed]
    if unknown:
        raise BadInputError(
            f"demo source: unknown {kind} {', '.join(map(repr, unknown))}; "
            f"the demo has {', '.join(allowed)}"
        )
    return list(dict.fromkeys(requested))


def _as_utc(ts: pd.Timestamp | str | None, label: str) -> pd.Timestamp | None:
    """A bound as a UTC Timestamp; naive timestamps are taken to be UTC already."""
    if ts is None:
        return None
    try:
        out = pd.Timestamp(ts)
    except (TypeError, ValueError) as exc:
        raise BadInputError(f"demo source: {label} {ts!r} is not a timestamp") from exc
    return out.tz_localize("UTC") if out.tzinfo is None else out.tz_convert("UTC")
