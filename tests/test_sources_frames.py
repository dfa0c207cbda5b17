"""`frames.summed`, the last step of every real source, numbers its keys instead of grouping text
cells; its frame must be exactly the one the plain pandas groupby (kept here as the reference)
gives: same rows, order, dtypes, sums, "(none)" for a missing dimension value, same errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecaster.sources import frames
from forecaster.types import BadInputError


def reference(labels, dimensions, metrics, start, end, where="source") -> pd.DataFrame:
    """`frames.summed` as it was: one groupby over text cells."""
    stamps = pd.DatetimeIndex(labels)
    if stamps.tz is None:
        stamps = stamps.tz_localize("UTC")
    data: dict[str, object] = {"timestamp": stamps.as_unit("us")}
    for name, values in dimensions.items():
        cells = pd.Series(values, dtype=object)
        if any(isinstance(cell, bytes | bytearray | memoryview) for cell in cells):
            raise BadInputError(f"{where}: dimension '{name}' holds binary values, not text; store that column "
                                "as text (a string column)")
        data[name] = cells.where(cells.notna(), "(none)").astype(str).to_numpy(dtype=object)
    for name, values in metrics.items():
        data[name] = np.asarray(values, dtype="float64")
    frame = pd.DataFrame(data)
    keep = np.ones(len(frame), dtype=bool)
    if start is not None:
        keep &= (frame["timestamp"] >= start).to_numpy()
    if end is not None:
        keep &= (frame["timestamp"] <= end).to_numpy()
    frame = frame.loc[keep]
    dims, names = list(dimensions), list(metrics)
    out = frame.groupby(["timestamp", *dims], sort=True, dropna=False)[names].sum(min_count=1)
    out = out.reset_index()
    for name in dims:
        out[name] = out[name].astype(str)
    return out[["timestamp", *dims, *names]]


def _same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    for name in got.columns[1:]:  # -0.0 and 0.0 compare equal: check the bits
        if got[name].dtype.kind == "f":
            np.testing.assert_array_equal(np.signbit(got[name].to_numpy()), np.signbit(want[name].to_numpy()))


def random_rows(seed: int, unique: bool):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 300))
    days = pd.date_range("2025-01-01", periods=20, freq="D", tz="UTC")
    labels = pd.DatetimeIndex(days[rng.integers(0, 20, n)])
    channel = rng.choice(np.array(["email", "paid", "Écht", "(none)", "b", None, np.nan], dtype=object), n)
    device = rng.choice(np.array(["mobile", "desktop"], dtype=object), n)
    amount = np.round(rng.gamma(2, 10, n), 2)
    amount[rng.random(n) < 0.1] = np.nan
    amount[rng.random(n) < 0.05] = -0.0
    count = rng.integers(0, 5, n).astype(float)
    if unique:  # one row per key, as a database's GROUP BY returns them
        texts = pd.Series(channel).where(pd.notna(channel), "(none)").astype(str)
        first = ~pd.DataFrame({"t": labels, "c": texts, "d": device}).duplicated().to_numpy()
        labels, channel, device, amount, count = labels[first], channel[first], device[first], amount[first], count[first]
    return labels, {"channel": channel, "device": device}, {"amount": amount, "orders": count}


@pytest.mark.parametrize("unique", [True, False], ids=["grouped", "raw"])
@pytest.mark.parametrize("seed", range(25))
def test_same_frame_as_a_groupby_over_text(seed: int, unique: bool) -> None:
    labels, dims, mets = random_rows(seed, unique)
    start = pd.Timestamp("2025-01-04", tz="UTC") if seed % 3 == 0 else None
    end = pd.Timestamp("2025-01-15", tz="UTC") if seed % 2 == 0 else None
    _same(frames.summed(labels, dims, mets, start, end), reference(labels, dims, mets, start, end))


def test_values_of_other_types_are_written_as_text_cell_by_cell() -> None:
    """1, 1.0 and True are equal to pandas but three texts: three rows, as before."""
    labels = pd.DatetimeIndex(["2025-01-01"] * 4, tz="UTC")
    dims = {"campaign": np.array([1, 1.0, True, None], dtype=object)}
    mets = {"sessions": np.array([1.0, 2.0, 4.0, 8.0])}
    got = frames.summed(labels, dims, mets, None, None)
    assert got["campaign"].tolist() == ["(none)", "1", "1.0", "True"]
    _same(got, reference(labels, dims, mets, None, None))


def test_no_rows_and_no_dimensions() -> None:
    empty = pd.DatetimeIndex([], tz="UTC")
    _same(frames.summed(empty, {"c": np.array([], dtype=object)}, {"m": np.array([])}, None, None),
          reference(empty, {"c": np.array([], dtype=object)}, {"m": np.array([])}, None, None))
    labels = pd.DatetimeIndex(["2025-01-02", "2025-01-01", "2025-01-02"], tz="UTC")
    mets = {"m": np.array([1.0, np.nan, 2.0])}
    _same(frames.summed(labels, {}, mets, None, None), reference(labels, {}, mets, None, None))


@pytest.mark.parametrize("cell", [b"x", bytearray(b"x"), memoryview(b"x")])
def test_binary_dimension_values_are_the_same_error(cell: object) -> None:
    labels = pd.DatetimeIndex(["2025-01-01", "2025-01-02"], tz="UTC")
    dims = {"channel": np.array(["a", cell], dtype=object)}
    with pytest.raises(BadInputError) as got:
        frames.summed(labels, dims, {"m": np.array([1.0, 2.0])}, None, None, where="source 'x' (csv)")
    assert str(got.value) == ("source 'x' (csv): dimension 'channel' holds binary values, not text; store that "
                              "column as text (a string column)")


def test_categorical_dimensions_and_a_missing_label() -> None:
    labels = pd.DatetimeIndex(["2025-01-02", "2025-01-01", "2025-01-02", "2025-01-01"], tz="UTC")
    cells = np.array(["b", "a", "b", None], dtype=object)
    mets = {"m": np.array([1.0, 2.0, 4.0, 8.0])}
    want = reference(labels, {"c": cells}, mets, None, None)
    _same(frames.summed(labels, {"c": pd.Categorical(cells)}, mets, None, None), want)
    keep = pd.Timestamp("2025-01-02", tz="UTC")
    _same(frames.summed(labels, {"c": pd.Categorical(cells)}, mets, keep, None),
          reference(labels, {"c": cells}, mets, keep, None))
    with_nat = pd.DatetimeIndex(["2025-01-02", None, "2025-01-02"], tz="UTC")
    three = {"m": np.array([1.0, 2.0, 4.0])}
    _same(frames.summed(with_nat, {}, three, None, None), reference(with_nat, {}, three, None, None))


@pytest.mark.parametrize("cells", [
    ["1", "2", "", "2", " 3 ", "nan", "2"],
    ["1", "2", "x", "2"],
    ["1", "inf", "2"],
    ["1", "1e300", "1"],
    ["1,5", "1"],
])
def test_numbers_read_once_per_distinct_text_are_the_same(cells: list[str]) -> None:
    """`to_numbers` reads each distinct text once; the numbers, and the first bad cell's
    message (its own row), are those of reading every cell."""
    rows = list(range(10, 10 + len(cells)))
    for values in (np.array(cells, dtype=object), pd.Categorical(cells)):
        try:
            want = frames._checked_numbers(pd.Series(cells, dtype=object), rows, "m", "f.csv", "line")
        except BadInputError as err:
            with pytest.raises(BadInputError) as got:
                frames.to_numbers(values, rows, "m", "f.csv", "line")
            assert str(got.value) == str(err)
            continue
        np.testing.assert_array_equal(frames.to_numbers(values, rows, "m", "f.csv", "line"), want)


def test_timestamps_read_once_per_distinct_text_name_the_first_bad_line() -> None:
    cells = ["2025-01-01", "2025-01-02", "2025-01-01", "2025-13-01", "2025-13-01"]
    with pytest.raises(BadInputError, match="line 13: cannot parse timestamp '2025-13-01'"):
        frames.parse_time_cells(pd.Categorical(cells), [10, 11, 12, 13, 14], "day", "f.csv")
    stamps, aware = frames.parse_time_cells(np.array(cells[:3], dtype=object), [1, 2, 3], "day", "f.csv")
    assert list(stamps.strftime("%d")) == ["01", "02", "01"] and not aware
