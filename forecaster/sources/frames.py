"""What every real source does to its rows: period labels, bounds, numbers, the final sum.

Period labels are the demo's (`forecaster.demo`): an hourly row is labelled by the UTC
start of its hour; a daily row by its calendar date in the KPI timezone, written as midnight UTC
of that date (so a day of 23 or 25 hours is still one row and the label never slides a day).
Bounds passed to `fetch` are such labels, both inclusive.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, timedelta

import numpy as np
import pandas as pd

from forecaster.types import BadInputError

FREQS = ("D", "h")
# Cells that mean "no value" in text data; they become NaN (missing is not zero).
# Larger magnitudes are refused where data enter: no marketing count or amount comes near, sums of
# such cells overflow to inf (three 1e308 sessions summed to "no data" and a 100% drop), and the
# models' squares overflow on them. A cell this large is an export error (an id, a unit mix-up).
MAX_ABS_VALUE = 1e15
MISSING_TEXTS = frozenset({"", "na", "n/a", "nan", "null", "none", "#n/a"})
# A trailing UTC offset on a timestamp text: Z, +01, +0100, +01:00.
_OFFSET = re.compile(r"(?:[zZ]|[+-]\d{2}(?::?\d{2})?)$")
_TIME_PART = re.compile(r"\d[T ]\d")
# A number written with ',' as the decimal point: 1,5 / -0,25 / ,5.
_DECIMAL_COMMA = re.compile(r"[+-]?\d*,\d+")
# A number with thousands separators (',' '.' space, apostrophe, no-break spaces) and an optional
# decimal part: 1,234.5 / 1.234,5 / 1 234 / 1'234'567. The first group never starts with 0.
_GROUPED = re.compile(r"[+-]?[1-9]\d{0,2}(?P<sep>[,. '\u00a0\u202f\u2019])\d{3}(?:(?P=sep)\d{3})*"
                      r"(?:(?P<dec>[.,])(?P<decimals>\d+))?")


def check_freq(freq: str, where: str) -> None:
    """Raise BadInputError unless `freq` is a frequency the real sources cut ("D" or "h")."""
    if freq not in FREQS:
        raise BadInputError(f"{where}: freq {freq!r} is not supported; use 'D' (daily) or 'h' (hourly)")


def as_label(ts: pd.Timestamp | str | None, where: str, what: str) -> pd.Timestamp | None:
    """A fetch bound as a tz-aware UTC Timestamp (naive = UTC), or None."""
    if ts is None:
        return None
    try:
        out = pd.Timestamp(ts)
    except (TypeError, ValueError):
        raise BadInputError(f"{where}: {what} {ts!r} is not a timestamp") from None
    return out.tz_localize("UTC") if out.tzinfo is None else out.tz_convert("UTC")


def local_midnight(day: date, timezone: str) -> pd.Timestamp:
    """The UTC instant at which `day` starts in `timezone` (a skipped midnight moves forward)."""
    return pd.Timestamp(day).tz_localize(timezone, nonexistent="shift_forward").tz_convert("UTC")


def instant_bounds(
    freq: str, timezone: str, start: pd.Timestamp | None, end: pd.Timestamp | None
) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    """The half-open instant range [lo, hi) (UTC) covering the periods labelled start..end."""
    if freq == "D":
        lo = local_midnight(start.date(), timezone) if start is not None else None
        hi = local_midnight(end.date() + timedelta(days=1), timezone) if end is not None else None
        return lo, hi
    lo = start.floor("h") if start is not None else None
    hi = end.floor("h") + pd.Timedelta(hours=1) if end is not None else None
    return lo, hi


def period_end(label: pd.Timestamp, freq: str, timezone: str) -> pd.Timestamp:
    """The UTC instant at which the period labelled `label` ends."""
    if freq == "D":
        return local_midnight(label.date() + timedelta(days=1), timezone)
    return label + pd.Timedelta(hours=1)


def label_instants(stamps: pd.DatetimeIndex, freq: str, timezone: str) -> pd.DatetimeIndex:
    """Period labels of tz-aware instants: the UTC hour, or the local date as midnight UTC."""
    utc = stamps.tz_convert("UTC")
    if freq == "h":
        return utc.floor("h")
    local = utc.tz_convert(timezone).tz_localize(None).normalize()
    return local.tz_localize("UTC")


def label_dates(days: pd.DatetimeIndex, freq: str, where: str) -> pd.DatetimeIndex:
    """Period labels of calendar dates (naive midnights): the date as midnight UTC; daily only."""
    if freq != "D":
        raise BadInputError(f"{where}: the timestamps are dates without a time of day, so an hourly KPI "
                            "cannot be cut from them; give timestamps with hours or use freq: D")
    return days.tz_localize("UTC")


def localize_naive(stamps: pd.DatetimeIndex, timezone: str) -> pd.DatetimeIndex:
    """Naive wall-clock times in `timezone` as UTC instants. A repeated hour (DST ends) is read
    as the later, standard-time one and a skipped one (DST starts) moves forward, as PostgreSQL
    reads them, so files, SQLite and PostgreSQL agree."""
    if timezone == "UTC":
        return stamps.tz_localize("UTC")
    flags = np.zeros(len(stamps), dtype=bool)
    return stamps.tz_localize(timezone, ambiguous=flags, nonexistent="shift_forward").tz_convert("UTC")


def has_utc_offset(text: str) -> bool:
    """Whether a timestamp text carries a UTC offset after its time (Z, +01, +0100, +01:00); a bare
    date's "-31" is not one."""
    return bool(_TIME_PART.search(text) and _OFFSET.search(text))


def number_fix(text: str) -> str | None:
    """How to write `text` when it is a number in another convention, or None when it is not one.

    "1,5" -> "write it as 1.5: ...", "1,234.5" / "1.234,5" / "1 234" -> "write it as 1234.5: ...",
    and "1,234" (a thousands separator or a decimal comma, the cell alone cannot tell) names both
    readings. Used in "not a number" messages: a cell is never guessed into a number, because a
    file mixing conventions would then be read 1000 times off on some rows.
    """
    cell = text.strip()
    grouped = _GROUPED.fullmatch(cell)
    if grouped and grouped["sep"] != grouped["dec"]:
        whole = cell[: grouped.start("dec")] if grouped["dec"] else cell
        digits = whole.replace(grouped["sep"], "")
        if grouped["sep"] == "," and not grouped["dec"] and cell.count(",") == 1:
            return (f"write {digits} if ',' separates thousands or {cell.replace(',', '.')} if it is the "
                    "decimal point")
        plain = f"{digits}.{grouped['decimals']}" if grouped["dec"] else digits
        return f"write it as {plain}: no thousands separators, '.' as the decimal point"
    if _DECIMAL_COMMA.fullmatch(cell):
        return f"write it as {cell.replace(',', '.')}: '.' as the decimal point, in every row"
    return None


def parse_time_texts(
    texts: Sequence[str], rows: Sequence[int], column: str, where: str, row_word: str = "line"
) -> tuple[pd.DatetimeIndex, bool]:
    """Timestamp texts as (instants or naive datetimes, aware?).

    All cells must agree: either every one carries an offset (then the result is tz-aware UTC)
    or none does (then it is naive, to be localised or read as dates by the caller). An empty or
    unparseable cell raises BadInputError naming the row and the column.
    """
    cells = pd.Index([str(text).strip() for text in texts], dtype=object)
    empty = np.flatnonzero(np.asarray(cells == "", dtype=bool))
    if len(empty):
        raise BadInputError(f"{where}: {row_word} {rows[empty[0]]}: empty timestamp in column '{column}'; "
                            "fill it in or delete the row")
    with_offset = np.array([has_utc_offset(c) for c in cells], dtype=bool)
    aware = bool(with_offset.any())
    if aware and not with_offset.all():
        first = int(np.flatnonzero(~with_offset)[0])
        raise BadInputError(f"{where}: {row_word} {rows[first]}: timestamp {cells[first]!r} in column "
                            f"'{column}' has no UTC offset while others do; give every row an offset "
                            "(e.g. Z) or none")
    stamps = pd.to_datetime(cells, format="ISO8601", utc=aware, errors="coerce")
    bad = np.asarray(pd.isna(stamps), dtype=bool)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise BadInputError(f"{where}: {row_word} {rows[first]}: cannot parse timestamp {cells[first]!r} in "
                            f"column '{column}'; use ISO 8601 such as 2024-01-31 or 2024-01-31T13:00:00Z")
    return pd.DatetimeIndex(stamps), aware


class FirstRows(Sequence[int]):
    """Row numbers of distinct values: item k is the row of the first cell holding value k
    (`codes` numbers the cells by value, values in order of first appearance). Looked up only
    when a message names a row."""

    def __init__(self, codes: np.ndarray, rows: Sequence[int]) -> None:
        self.codes = codes
        self.rows = rows
        self.size = int(codes.max()) + 1 if len(codes) else 0

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, k):  # type: ignore[no-untyped-def, override]
        if not isinstance(k, int | np.integer):
            raise TypeError("FirstRows takes one position")
        return self.rows[int(np.flatnonzero(self.codes == k)[0])]


# Object cells that can be numbered by value without changing what they say: equal ones are
# equal as text too (1, 1.0 and True are one value to pandas but three texts).
_SAFE_KINDS = frozenset({"string", "date", "datetime"})


def distinct(values: pd.Series | pd.Categorical | np.ndarray | Sequence[object]) -> tuple[np.ndarray, np.ndarray] | None:
    """(codes, distinct values) of cells of text, dates or datetimes: distinct values as an
    object array in order of first appearance, so the first cell holding a value comes before
    every cell holding a later one. None when a cell is missing or of another kind (numbers,
    a mix): such cells are read one by one."""
    if isinstance(values, pd.Categorical) or isinstance(getattr(values, "dtype", None), pd.CategoricalDtype):
        categorical = pd.Categorical(values)
        codes = np.asarray(categorical.codes)
        categories = np.asarray(categorical.categories, dtype=object)
        if (codes < 0).any() or pd.api.types.infer_dtype(categories, skipna=False) not in _SAFE_KINDS:
            return None
        appear = pd.unique(codes)
        renumber = np.zeros(len(categories), dtype=np.intp)
        renumber[appear] = np.arange(len(appear))
        return renumber[codes], categories[appear]
    dtype = getattr(values, "dtype", None)
    if dtype is not None and dtype != object and not pd.api.types.is_string_dtype(dtype):
        return None  # numbers, datetimes: nothing to parse per cell
    cells = np.asarray(values, dtype=object)
    if cells.ndim != 1 or pd.api.types.infer_dtype(cells, skipna=False) not in _SAFE_KINDS:
        return None
    codes, uniques = pd.factorize(cells)
    if (codes < 0).any():
        return None
    return codes, np.asarray(uniques, dtype=object)


def parse_time_cells(
    values: pd.Series | pd.Categorical | np.ndarray, rows: Sequence[int], column: str, where: str,
    row_word: str = "line",
) -> tuple[pd.DatetimeIndex, bool]:
    """`parse_time_texts` of cells (text; None is empty), each distinct cell parsed once:
    a period's timestamp repeats in every row of it."""
    found = distinct(values)
    if found is None:
        cells = np.asarray(values, dtype=object)
        return parse_time_texts(["" if cell is None else str(cell) for cell in cells], rows, column, where, row_word)
    codes, uniques = found
    stamps, aware = parse_time_texts([str(cell) for cell in uniques], FirstRows(codes, rows), column, where, row_word)
    return stamps.take(codes), aware


def labels_of(
    stamps: pd.DatetimeIndex, freq: str, timezone: str, naive_zone: str, where: str
) -> pd.DatetimeIndex:
    """Period labels of parsed timestamps.

    Aware stamps are instants. Naive stamps that are all midnights are calendar dates (a daily
    export); other naive stamps are wall-clock times in `naive_zone`.
    """
    if stamps.tz is not None:
        return label_instants(stamps, freq, timezone)
    if len(stamps) and bool((stamps == stamps.normalize()).all()):
        return label_dates(stamps, freq, where)
    return label_instants(localize_naive(stamps, naive_zone), freq, timezone)


def to_numbers(
    values: pd.Series | Sequence[object], rows: Sequence[int], column: str, where: str, row_word: str = "row"
) -> np.ndarray:
    """Cells as float64, NaN for missing; text that is not a number, or an infinite one, raises
    BadInputError naming the row and the column (a typo must not look like a missing period or a
    zero, and `inf` would otherwise become a gap further on).

    Text cells (and categoricals of text) are parsed once per distinct text: a file's column
    of counts holds a few thousand of them in millions of rows, and a single empty cell would
    otherwise send every cell through the cell-by-cell reading.
    """
    found = distinct(values)
    if found is not None:
        codes, uniques = found
        return _checked_numbers(uniques, FirstRows(codes, rows), column, where, row_word)[codes]
    if isinstance(values, pd.Categorical) or isinstance(getattr(values, "dtype", None), pd.CategoricalDtype):
        values = np.asarray(values, dtype=object)
    return _checked_numbers(values, rows, column, where, row_word)


def _checked_numbers(
    values: pd.Series | Sequence[object], rows: Sequence[int], column: str, where: str, row_word: str
) -> np.ndarray:
    """`to_numbers` of the cells as they are."""
    numbers = _parse_numbers(values, rows, column, where, row_word)
    infinite = np.flatnonzero(np.isinf(numbers))
    if len(infinite):
        first = int(infinite[0])
        raise BadInputError(f"{where}: {row_word} {rows[first]}: column '{column}' has "
                            f"{str(pd.Series(values).iloc[first])[:40]!r}, not a finite number; give numbers with "
                            "'.' as the decimal point (empty for missing)")
    refuse_huge(numbers, rows, column, where, row_word)
    return numbers


def refuse_huge(numbers: np.ndarray, rows: Sequence[int], column: str, where: str, row_word: str = "row") -> None:
    """BadInputError naming the first cell beyond +-MAX_ABS_VALUE (see there); NaN is fine."""
    with np.errstate(invalid="ignore"):
        huge = np.flatnonzero(np.abs(numbers) > MAX_ABS_VALUE)
    if len(huge):
        first = int(huge[0])
        raise BadInputError(f"{where}: {row_word} {rows[first]}: column '{column}' has {numbers[first]:.6g}, beyond "
                            f"+-{MAX_ABS_VALUE:.0e}; such a value is an export error (an id? a unit?): fix or empty "
                            "the cell")


def _parse_numbers(
    values: pd.Series | Sequence[object], rows: Sequence[int], column: str, where: str, row_word: str
) -> np.ndarray:
    """`to_numbers` before its check for infinite values."""
    series = pd.Series(values)
    if pd.api.types.is_bool_dtype(series.dtype):
        raise BadInputError(f"{where}: column '{column}' holds true/false, not numbers; map a number column")
    if pd.api.types.is_numeric_dtype(series.dtype):
        return series.to_numpy(dtype="float64", na_value=np.nan)
    try:
        # Fast path: Decimals from a database, numeric text; anything odd goes cell by cell below.
        return pd.to_numeric(series, errors="raise").to_numpy(dtype="float64", na_value=np.nan)
    except (TypeError, ValueError):
        pass
    texts = series.map(lambda cell: cell if not isinstance(cell, str) else cell.strip())
    missing = texts.map(lambda cell: cell is None or (isinstance(cell, str) and cell.lower() in MISSING_TEXTS)
                        or (isinstance(cell, float) and np.isnan(cell)))
    given = texts.where(~missing, np.nan)
    numbers = pd.to_numeric(given.map(_plain_number), errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    bad = np.isnan(numbers) & ~missing.to_numpy(dtype=bool)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        shown = str(series.iloc[first])
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        fix = number_fix(shown) or "give numbers with '.' as the decimal point (empty for missing)"
        raise BadInputError(f"{where}: {row_word} {rows[first]}: column '{column}' has {shown!r}, not a number; {fix}")
    return numbers


def _plain_number(cell: object) -> object:
    """Decimal and other number-likes as float; anything else as it is (for to_numeric)."""
    if isinstance(cell, bool):
        return np.nan
    if isinstance(cell, str | float | int) or cell is None:
        return cell
    try:
        return float(cell)  # type: ignore[arg-type]  # decimal.Decimal from a database
    except (TypeError, ValueError):
        return np.nan


def summed(
    labels: pd.DatetimeIndex,
    dimensions: dict[str, pd.Series | pd.Categorical | np.ndarray],
    metrics: dict[str, np.ndarray],
    start: pd.Timestamp | None,
    end: pd.Timestamp | None,
    where: str = "source",
) -> pd.DataFrame:
    """The contract's frame: `timestamp, *dimensions, *metrics`, metrics summed per period label
    and dimension values (NaN only where every summed cell was missing), start <= label <= end,
    sorted by timestamp then dimension values, with a fresh RangeIndex. `where` names the
    source in an error (a dimension of binary values).

    Rows already one per label and dimension values (a database's GROUP BY) are only sorted;
    others are summed with pandas' own group sum, so the numbers are the same either way.
    Dimension values are written as text ("(none)" for a missing one) from their distinct
    values, not cell by cell.
    """
    stamps = pd.DatetimeIndex(labels)
    if stamps.tz is None:  # no rows at all: concatenating nothing loses the UTC zone
        stamps = stamps.tz_localize("UTC")
    stamps = stamps.as_unit("us")
    keep = np.ones(len(stamps), dtype=bool)
    if start is not None:
        keep &= np.asarray(stamps >= start)
    if end is not None:
        keep &= np.asarray(stamps <= end)
    if not keep.all():
        stamps = stamps[keep]
        dimensions = {name: values[keep] if isinstance(values, pd.Categorical) else np.asarray(values, dtype=object)[keep]
                      for name, values in dimensions.items()}
        metrics = {name: np.asarray(values, dtype="float64")[keep] for name, values in metrics.items()}
    if not len(stamps) or stamps.hasnans:  # (NaT: a database row without a timestamp, kept as its own period)
        return _summed_by_pandas(stamps, dimensions, metrics, where)
    time_codes, times = pd.factorize(stamps, sort=True)
    keys, texts = [time_codes], []
    for name, values in dimensions.items():
        codes, uniques = _text_codes(values, name, where)
        keys.append(codes)
        texts.append(uniques)
    sizes = [len(times), *(len(u) for u in texts)]
    if float(np.prod(np.array(sizes, dtype="float64"))) >= 2.0**62:  # one int64 key cannot hold them
        return _summed_by_pandas(stamps, dimensions, metrics, where)
    key = np.zeros(len(stamps), dtype=np.int64)
    for codes, size in zip(keys, sizes):
        key = key * size + codes  # sorts like (timestamp, dimension texts...)
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    if len(ordered) < 2 or bool((ordered[1:] != ordered[:-1]).all()):
        # One row per key: nothing to add. (+ 0.0 turns -0.0 into 0.0, as a sum would.)
        groups = ordered
        sums = {name: np.asarray(values, dtype="float64")[order] + 0.0 for name, values in metrics.items()}
    else:
        grouped = pd.DataFrame({name: np.asarray(values, dtype="float64") for name, values in metrics.items()})
        grouped = grouped.groupby(key, sort=True).sum(min_count=1)
        groups = grouped.index.to_numpy(dtype=np.int64)
        sums = {name: grouped[name].to_numpy(dtype="float64") for name in metrics}
    parts = []
    for size in reversed(sizes):
        groups, part = np.divmod(groups, size)
        parts.append(part)
    parts.reverse()
    data: dict[str, object] = {"timestamp": times.take(parts[0])}
    for (name, uniques), codes in zip(zip(dimensions, texts), parts[1:]):
        data[name] = pd.array(uniques, dtype=str).take(codes)
    data.update(sums)
    return pd.DataFrame(data)


def _text_codes(values: pd.Categorical | pd.Series | np.ndarray, name: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Codes of `values` as text (a missing value as "(none)") and their sorted distinct texts."""
    if isinstance(values, pd.Categorical):
        codes, uniques = np.asarray(values.codes), np.asarray(values.categories, dtype=object)
    else:
        values = np.asarray(values, dtype=object)
        try:
            codes, uniques = pd.factorize(values)
        except TypeError:  # an unhashable cell (a bytearray): found by the check below
            codes, uniques = None, values
    if codes is None or not all(isinstance(value, str) for value in uniques):
        # Not all text: 1, 1.0 and True are one distinct value to pandas but three texts, so
        # every cell is written as text first (and checked for binary values).
        values = np.asarray(values, dtype=object)
        _refuse_binary(values, name, where)
        cells = pd.Series(values, dtype=object)
        values = cells.where(cells.notna(), "(none)").astype(str).to_numpy(dtype=object)
        codes, uniques = pd.factorize(values)
    if (codes < 0).any():
        uniques = np.append(np.asarray(uniques, dtype=object), "(none)")
        codes = np.where(codes < 0, len(uniques) - 1, codes)
    texts, remap = np.unique(np.asarray(uniques, dtype=object), return_inverse=True)
    return remap.reshape(-1)[codes], texts


def _refuse_binary(values: np.ndarray, name: str, where: str) -> None:
    if any(isinstance(cell, bytes | bytearray | memoryview) for cell in values):
        raise BadInputError(f"{where}: dimension '{name}' holds binary values, not text; store that column "
                            "as text (a string column)")


def _summed_by_pandas(
    stamps: pd.DatetimeIndex, dimensions: dict[str, pd.Series | np.ndarray], metrics: dict[str, np.ndarray],
    where: str,
) -> pd.DataFrame:
    """`summed` (already cut to its bounds) by one pandas groupby over text cells: for no rows,
    a missing label, and more distinct keys than one int64 can number."""
    data: dict[str, object] = {"timestamp": stamps.as_unit("us")}
    for name, values in dimensions.items():
        cells = pd.Series(values, dtype=object)
        _refuse_binary(cells.to_numpy(dtype=object), name, where)
        # A missing dimension value becomes "(none)" so its rows are not dropped by groupby.
        data[name] = cells.where(cells.notna(), "(none)").astype(str).to_numpy(dtype=object)
    for name, values in metrics.items():
        data[name] = np.asarray(values, dtype="float64")
    frame = pd.DataFrame(data)
    dims, names = list(dimensions), list(metrics)
    out = frame.groupby(["timestamp", *dims], sort=True, dropna=False)[names].sum(min_count=1)
    out = out.reset_index()
    for name in dims:
        out[name] = out[name].astype(str)
    return out[["timestamp", *dims, *names]]


def empty_frame(dimensions: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """The contract's frame with no rows (right columns and dtypes)."""
    data: dict[str, object] = {"timestamp": pd.DatetimeIndex([], tz="UTC").as_unit("us")}
    data.update({name: pd.Series([], dtype=object) for name in dimensions})
    data.update({name: pd.Series([], dtype="float64") for name in metrics})
    return pd.DataFrame(data)
