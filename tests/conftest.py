"""Seeded synthetic series shared by the tests.

The helpers are plain functions (import them: `from conftest import make_series`) and are also
offered as fixtures `make_series` and `with_drop` that return the functions themselves.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

START = "2024-01-01"


def make_series(
    freq: str = "D",
    periods: int = 400,
    season: int = 7,
    level: float = 100.0,
    amplitude: float = 10.0,
    noise: float = 2.0,
    seed: int = 0,
    start: str = START,
) -> pd.Series:
    """`level + amplitude * sin(2 pi t / season) + N(0, noise)`, on a tz-aware UTC index with freq.

    season: periods per cycle (1 or less = no seasonality). seed: the same seed gives the same
    series, byte for byte.
    """
    index = pd.date_range(start, periods=periods, freq=freq, tz="UTC")
    t = np.arange(periods, dtype="float64")
    seasonal = amplitude * np.sin(2 * np.pi * t / season) if season > 1 else np.zeros(periods)
    rng = np.random.default_rng(seed)
    values = level + seasonal + rng.normal(0.0, noise, periods)
    return pd.Series(values.astype("float64"), index=index, name="value")


def with_drop(s: pd.Series, at: int | str | pd.Timestamp, pct: float) -> pd.Series:
    """A copy of `s` whose values from `at` on (a position, or a timestamp) are multiplied by 1 - pct."""
    out = s.copy()
    if isinstance(at, int | np.integer):
        out.iloc[int(at) :] = out.iloc[int(at) :] * (1.0 - pct)
    else:
        stamp = pd.Timestamp(at)
        if stamp.tzinfo is None and s.index.tz is not None:
            stamp = stamp.tz_localize(s.index.tz)
        mask = s.index >= stamp
        out.loc[mask] = out.loc[mask] * (1.0 - pct)
    return out


def assert_one_line_error(result, *fragments: str) -> None:
    """A CLI result (click's CliRunner) that failed as bad input should: exit code 2, one line on
    stderr starting `kpiwatch: error: ` and holding every fragment, no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kpiwatch: error: "), lines[0]
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(name="make_series")
def make_series_fixture() -> Callable[..., pd.Series]:
    return make_series


@pytest.fixture(name="with_drop")
def with_drop_fixture() -> Callable[..., pd.Series]:
    return with_drop
