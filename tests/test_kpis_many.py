"""`kpi_series` builds a dimension's segments together (one grouping, one grid); the result must
be exactly what one `to_kpi_series` per segment gives (the path it replaced, kept here as the
reference): same series in the same order, same NaN gaps, same denominators, the same segments
left out, the same error for a frame that cannot be read."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecaster.kpis import kpi_series
from forecaster.settings import KPIConfig, RatioConfig
from forecaster.sources.base import to_kpi_series
from forecaster.types import BadInputError, KPISeries


def reference(name: str, kpi: KPIConfig, frame: pd.DataFrame) -> list[KPISeries]:
    """The old path: one `to_kpi_series` per segment value."""
    for dimension, values in kpi.filter.items():
        frame = frame[frame[dimension].astype(str).isin(values)]
    series = [_one(name, kpi, frame.groupby("timestamp", sort=True)[kpi.metrics].sum(min_count=1), {})]
    for dimension in kpi.segments:
        sums = frame.groupby([dimension, "timestamp"], sort=True)[kpi.metrics].sum(min_count=1)
        for value, part in sums.groupby(level=0, sort=True):
            try:
                series.append(_one(name, kpi, part.droplevel(0), {dimension: str(value)}))
            except BadInputError:
                continue
    return series


def _one(name: str, kpi: KPIConfig, sums: pd.DataFrame, segment: dict[str, str]) -> KPISeries:
    index = pd.DatetimeIndex(sums.index)
    if kpi.ratio is None:
        return to_kpi_series(name, pd.Series(sums[kpi.metrics[0]].to_numpy(), index=index), kpi.freq, segment,
                             origin=name)
    numerator = sums[kpi.ratio.numerator].to_numpy(dtype="float64")
    denominator = sums[kpi.ratio.denominator].to_numpy(dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(denominator > 0, numerator / denominator, np.nan)
    return to_kpi_series(name, pd.Series(ratio, index=index), kpi.freq, segment,
                         denominator=pd.Series(denominator, index=index), origin=name)


def assert_same(got: list[KPISeries], want: list[KPISeries]) -> None:
    assert [s.label for s in got] == [s.label for s in want]
    for new, old in zip(got, want):
        assert (new.name, new.freq, dict(new.segment)) == (old.name, old.freq, dict(old.segment))
        pd.testing.assert_series_equal(new.values, old.values, check_freq=True, check_exact=True)
        assert new.values.index.freq == old.values.index.freq
        assert new.values.index.name == old.values.index.name
        if old.denominator is None:
            assert new.denominator is None
        else:
            assert new.denominator is not None
            pd.testing.assert_series_equal(new.denominator, old.denominator, check_freq=True, check_exact=True)


def random_frame(seed: int, freq: str = "D") -> pd.DataFrame:
    """A source's frame: campaigns x devices, with gaps, late starts, early ends, short
    segments, zero and missing denominators, empty metric cells."""
    rng = np.random.default_rng(seed)
    periods = int(rng.integers(5, 60))
    stamps = pd.date_range("2025-03-01", periods=periods, freq=freq, tz="UTC").as_unit("us")
    rows = []
    for c in range(int(rng.integers(1, 12))):
        first = int(rng.integers(0, periods)) if rng.random() < 0.4 else 0
        last = periods - int(rng.integers(0, periods - first)) if rng.random() < 0.2 else periods
        for i in range(first, last):
            if rng.random() < 0.15:
                continue  # a gap: no row at all
            for device in ("desktop", "mobile"):
                if rng.random() < 0.3:
                    continue
                sessions = float(rng.integers(0, 4)) if rng.random() < 0.3 else float(rng.integers(0, 500))
                orders = float(rng.binomial(int(sessions), 0.05)) if sessions else float(rng.integers(0, 2))
                rows.append({"timestamp": stamps[i], "campaign": f"c{c:02d}", "device": device,
                             "sessions": np.nan if rng.random() < 0.05 else sessions,
                             "orders": np.nan if rng.random() < 0.05 else orders})
    frame = pd.DataFrame(rows, columns=["timestamp", "campaign", "device", "sessions", "orders"])
    return frame.sort_values(["timestamp", "campaign", "device"], kind="stable").reset_index(drop=True)


COUNT = KPIConfig(metric="sessions", segments=["campaign", "device"])
RATE = KPIConfig(ratio=RatioConfig(numerator="orders", denominator="sessions"), segments=["campaign", "device"])


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("kpi", [COUNT, RATE], ids=["count", "ratio"])
def test_same_series_as_one_by_one(seed: int, kpi: KPIConfig) -> None:
    frame = random_frame(seed)
    try:
        want = reference("k", kpi, frame)
    except BadInputError as err:  # too few values in the total: the same error, word for word
        with pytest.raises(BadInputError) as got:
            kpi_series("k", kpi, frame)
        assert str(got.value) == str(err)
        return
    assert_same(kpi_series("k", kpi, frame), want)


@pytest.mark.parametrize("seed", range(10))
def test_same_series_hourly_and_filtered(seed: int) -> None:
    frame = random_frame(100 + seed, freq="h")
    kpi = KPIConfig(ratio=RatioConfig(numerator="orders", denominator="sessions"), freq="h",
                    segments=["campaign"], filter={"device": ["mobile"]})
    try:
        want = reference("k", kpi, frame)
    except BadInputError as refused:  # too few values in the total for this seed: the same refusal
        with pytest.raises(BadInputError) as also:
            kpi_series("k", kpi, frame)
        assert str(also.value) == str(refused)
        return
    assert_same(kpi_series("k", kpi, frame), want)


def test_a_case_by_hand() -> None:
    """Two campaigns: `a` with a gap and a zero denominator, `b` too short to be judged."""
    days = pd.date_range("2025-01-01", periods=10, freq="D", tz="UTC")
    rows = [(d, "a", 2.0, 0.0 if i == 3 else 10.0) for i, d in enumerate(days) if i != 5]
    rows += [(d, "b", 1.0, 4.0) for d in days[:3]]
    frame = pd.DataFrame(rows, columns=["timestamp", "campaign", "orders", "sessions"])
    out = kpi_series("cr", KPIConfig(ratio=RatioConfig(numerator="orders", denominator="sessions"),
                                     segments=["campaign"]), frame)
    assert [s.label for s in out] == ["cr", "cr[campaign=a]"]
    a = out[1]
    assert a.values.index.equals(days) and a.values.index.freq == "D"
    expected = [0.2] * 10
    expected[3] = expected[5] = np.nan
    np.testing.assert_array_equal(a.values.to_numpy(), expected)
    np.testing.assert_array_equal(a.denominator.to_numpy(), [10, 10, 10, 0, 10, np.nan, 10, 10, 10, 10])


def test_a_segment_off_the_grid_is_built_on_its_own() -> None:
    """A segment whose days start at 06:00 is off the others' grid but on its own: kept, as
    one `to_kpi_series` would keep it; the total (mixed times) cannot be read and says so."""
    days = pd.date_range("2025-01-01", periods=12, freq="D", tz="UTC")
    frame = pd.DataFrame({
        "timestamp": list(days) + list(days + pd.Timedelta(hours=6)),
        "campaign": ["a"] * 12 + ["b"] * 12,
        "sessions": np.arange(24, dtype=float),
    })
    kpi = KPIConfig(metric="sessions", segments=["campaign"])
    with pytest.raises(BadInputError) as got:
        kpi_series("s", kpi, frame)
    with pytest.raises(BadInputError) as want:
        reference("s", kpi, frame)
    assert str(got.value) == str(want.value)
    # Without the total's problem (b alone is off a's grid only through `a`): the same series.
    only = frame.assign(timestamp=list(days) + list(days))
    assert_same(kpi_series("s", kpi, only), reference("s", kpi, only))


def test_segments_that_start_on_another_phase_of_the_grid_match() -> None:
    """Hourly campaigns where one starts late and has gaps: cut from the shared grid, equal to
    the one-by-one path."""
    hours = pd.date_range("2025-01-01", periods=48, freq="h", tz="UTC")
    frame = pd.DataFrame({
        "timestamp": list(hours) + list(hours[20::2]),
        "campaign": ["a"] * 48 + ["late"] * len(hours[20::2]),
        "sessions": np.arange(48 + len(hours[20::2]), dtype=float),
    })
    kpi = KPIConfig(metric="sessions", freq="h", segments=["campaign"])
    assert_same(kpi_series("s", kpi, frame), reference("s", kpi, frame))


def test_text_in_a_metric_is_the_same_error() -> None:
    days = pd.date_range("2025-01-01", periods=10, freq="D", tz="UTC")
    frame = pd.DataFrame({"timestamp": days, "campaign": "a", "sessions": ["1"] * 9 + ["x"]}, dtype=object)
    frame["timestamp"] = days
    kpi = KPIConfig(metric="sessions", segments=["campaign"])
    with pytest.raises(BadInputError) as got:
        kpi_series("s", kpi, frame)
    with pytest.raises(BadInputError) as want:
        reference("s", kpi, frame)
    assert str(got.value) == str(want.value)
    assert "\n" not in str(got.value)


def test_many_segments_share_no_index_object() -> None:
    """Segments over the same days get equal but separate indexes (naming one names no other)."""
    days = pd.date_range("2025-01-01", periods=10, freq="D", tz="UTC")
    frame = pd.DataFrame({"timestamp": np.tile(days, 3), "campaign": np.repeat(["a", "b", "c"], 10),
                          "sessions": 1.0})
    out = kpi_series("s", KPIConfig(metric="sessions", segments=["campaign"]), frame)
    out[1].values.index.name = "mine"
    assert out[2].values.index.name is None
