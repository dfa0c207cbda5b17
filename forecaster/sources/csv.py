"""Read an ad-hoc CSV file as one KPI series (`kpiwatch forecast --csv FILE`, `replay --csv`).

The file is parsed with the standard library's csv reader rather than `pandas.read_csv`, so
that every error can name the exact line of the file (header = line 1, blank lines counted)
and no cell is silently guessed into another type. Accepted: UTF-8 with or without a BOM;
`\\n`, `\\r\\n` or old-Mac `\\r` line endings; `,`, `;` or tab as separator (whichever occurs
most in the header line, `,` when none does); quoted cells; blank lines (skipped).
"""

from __future__ import annotations

# Absolute import: this is the standard library's csv, not this module.
import csv
import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from forecaster.sources.base import duplicate_fix, to_kpi_series
from forecaster.sources.frames import number_fix, refuse_huge
from forecaster.types import BadInputError, KPISeries

_SEPARATORS = (",", ";", "\t")
# Cells that mean "no value for this period" (compared lowercased); they become NaN.
_MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "#n/a"})
# dateutil turns a lone month name like "Jan" into year 1; no KPI is that old.
_EARLIEST_YEAR = 1000

# A cell of digits only, and one grouped like a '.'-thousands number (1.234, 12.345.678).
_WHOLE = re.compile(r"[+-]?\d+")
_DOT_GROUPED = re.compile(r"[+-]?[1-9]\d{0,2}(?:\.\d{3})+")
# Repeated timestamps named one by one in a message, at most.
_SHOW_LINES = 5
# A column name as exports write them ("sessions", "Conversion rate (%)", "ad cost/EUR"): starts
# with a letter or _, at most 48 characters, no `=` or quotes. A header of other cells (a `.env`
# line `SLACK_BOT_TOKEN=xoxb-...`, a key file, a token) is never echoed: it may be a secret.
_COLUMN_NAME = re.compile(r"[^\W\d][\w .%()/&+#-]{0,47}")
_TOKEN_LIKE = re.compile(r"\d{6}|(?=[A-Za-z0-9]{16})(?=\w*\d)(?=\w*[A-Za-z])")

Row = tuple[int, list[str]]  # (line number in the file, cells)


@dataclass(frozen=True)
class _Columns:
    """The two columns as parsed, in file order, with where each row came from."""

    stamps: pd.DatetimeIndex  # UTC
    values: np.ndarray  # float64, NaN = missing
    lines: list[int]  # line of each row in the file (header = line 1)
    texts: list[str]  # the timestamp cells as written (stripped)


def read_series_csv(
    path: str | Path,
    timestamp_col: str = "timestamp",
    value_col: str = "value",
    name: str | None = None,
) -> KPISeries:
    """Read one series from the CSV at `path`: one row per period, one header line.

    timestamp_col: column of period starts; default "timestamp". ISO 8601 (dates, times and
    offsets may vary by row), or else one other format for the whole file (31/01/2024,
    01/31/2024 13:00, 31.01.2024, Jan 31, 2024); naive timestamps are UTC, offsets are
    converted to UTC.
    value_col: column of numbers; default "value". Empty / NA / NaN / null cells are missing
    periods (NaN), never zero.
    name: the series name; default None = `value_col`.

    The frequency is inferred (see `base.infer_freq`); missing periods become NaN.
    Raises `BadInputError` with one line naming the file, the line, the bad value and the fix.
    """
    columns = _read_columns(path, timestamp_col, value_col)
    origin = f"{path}, column '{value_col}'"
    _refuse_duplicates(columns, origin)
    series = pd.Series(columns.values, index=columns.stamps, name=value_col)
    return to_kpi_series(name or value_col, series, origin=origin)


def read_csv_columns(path: str | Path, timestamp_col: str = "timestamp", value_col: str = "value") -> pd.Series:
    """The two columns as they are in the file: values indexed by UTC timestamps, in file order.

    Cells are checked (dates parse, values are numbers, as in `read_series_csv`) but the rows
    are not: duplicates and irregular spacing are left for the caller to refuse or resolve.
    """
    columns = _read_columns(path, timestamp_col, value_col)
    return pd.Series(columns.values, index=columns.stamps, name=value_col)


def _read_columns(path: str | Path, timestamp_col: str, value_col: str) -> _Columns:
    """The two columns parsed cell by cell (see `read_csv_columns`), with their line numbers."""
    label = str(path)
    text = _read_text(Path(path), label)
    header, rows = _split_rows(text, label)
    ts_at, value_at = _column_positions(header, timestamp_col, value_col, label)
    lines = [line for line, _ in rows]
    texts = [cells[ts_at].strip() for _, cells in rows]
    stamps = _parse_timestamps(texts, lines, timestamp_col, label)
    sep = _separator(_first_line(text) or "")
    values = _parse_values([cells[value_at] for _, cells in rows], lines, value_col, label, sep)
    return _Columns(stamps, values, lines, texts)


def _refuse_duplicates(columns: _Columns, origin: str) -> None:
    """Raise BadInputError when a timestamp repeats, naming the line that repeats it and the
    line it repeats ("line 4 repeats the timestamp 2025-01-02 of line 3"), with the count and
    the first few lines when there are several.

    Here rather than in `to_kpi_series`, which sees only the timestamps: the file's lines are
    what the user can find and fix.
    """
    repeat = columns.stamps.duplicated(keep="first")
    if not repeat.any():
        return
    at = np.flatnonzero(repeat)
    first = int(at[0])
    earlier = int(np.flatnonzero(columns.stamps == columns.stamps[first])[0])
    lines, texts = columns.lines, columns.texts
    what = f"line {lines[first]} repeats the timestamp {texts[earlier]} of line {lines[earlier]}"
    if texts[first] != texts[earlier]:  # 2024-01-03T00:00:00Z repeats 2024-01-03
        what += f" (written {texts[first]})"
    if len(at) > 1:
        shown = ", ".join(str(lines[i]) for i in at[:_SHOW_LINES]) + (", ..." if len(at) > _SHOW_LINES else "")
        what = f"{len(at)} duplicate timestamps (lines {shown}); {what}"
    raise BadInputError(f"{origin}: {what}; {duplicate_fix(columns.stamps[at], columns.stamps)}")


def _read_text(path: Path, label: str) -> str:
    """The file's text with a UTF-8 BOM removed and every line ending turned into `\\n`."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BadInputError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise BadInputError(f"{label}: is a directory, not a CSV file") from None
    except OSError as err:
        reason = err.strerror or err
        raise BadInputError(f"{label}: cannot read ({reason}); check the path") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise BadInputError(
            f"{label}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); "
            "save the file as UTF-8"
        ) from None
    # Normalise here so the csv reader's line count matches what an editor shows.
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _split_rows(text: str, label: str) -> tuple[list[str], list[Row]]:
    """The header cells and the data rows (with their line numbers); blank rows skipped."""
    header_text = _first_line(text)
    if header_text is None:
        raise BadInputError(
            f"{label}: empty file; give a header line (e.g. timestamp,value) and one row per period"
        )
    sep = _separator(header_text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, skipinitialspace=True)
    header: list[str] | None = None
    rows: list[Row] = []
    next_start = 1  # the line the next record starts on (a quoted cell may span lines)
    try:
        for cells in reader:
            start, next_start = next_start, reader.line_num + 1
            if not any(cell.strip() for cell in cells):
                continue  # blank line, or a row of empty cells as spreadsheets export them
            if header is None:
                header = _header(cells)
                continue
            rows.append((start, _fit_width(cells, len(header), start, sep, label)))
    except csv.Error as err:
        raise BadInputError(
            f"{label}: line {reader.line_num}: {err}; check the quoting"
        ) from None
    return header or [], rows


def _first_line(text: str) -> str | None:
    """The first non-blank line of `text` (the header), or None when there is none."""
    return next((line for line in text.split("\n") if line.strip()), None)


def _header(cells: list[str]) -> list[str]:
    """Column names, stripped; trailing unnamed columns (a spreadsheet's stray commas) dropped."""
    names = [cell.strip() for cell in cells]
    while names and not names[-1]:
        names.pop()
    return names


def _separator(header_line: str) -> str:
    """The candidate separator occurring most often in the header line; "," on none."""
    counts = {sep: header_line.count(sep) for sep in _SEPARATORS}
    best = max(_SEPARATORS, key=lambda sep: counts[sep])
    return best if counts[best] else ","


def _fit_width(cells: list[str], width: int, line: int, sep: str, label: str) -> list[str]:
    """`cells` cut to the header's width; trailing empty extras are fine, anything else not.

    A row with extra non-empty cells is usually an unquoted separator inside a number
    ("1,234"), which would silently shift the values, so it is an error.
    """
    if len(cells) < width or any(cell.strip() for cell in cells[width:]):
        shown = "tab" if sep == "\t" else repr(sep)
        raise BadInputError(
            f"{label}: line {line} has {len(cells)} cells but the header has {width}; "
            f"give one cell per column and quote values that contain the separator {shown}"
        )
    return cells[:width]


def plausible_header(header: list[str]) -> bool:
    """True when every cell of a header line looks like a column name (see `_COLUMN_NAME`), so
    naming the columns in a message cannot echo a secret from a file that is not a table."""
    return bool(header) and all(_COLUMN_NAME.fullmatch(name) and not _TOKEN_LIKE.search(name) for name in header)


def columns_are(header: list[str]) -> str:
    """"columns are: a, b" for a message, or "not a table" when the header is no list of names."""
    if plausible_header(header):
        return f"columns are: {', '.join(header)}"
    return ("its first line does not look like a header of column names: is it a table? (the line is not "
            "shown: it may hold a secret)")


def _column_positions(
    header: list[str], timestamp_col: str, value_col: str, label: str
) -> tuple[int, int]:
    """Positions of the two columns in the header; names the missing ones and the real ones."""
    missing = [col for col in (timestamp_col, value_col) if col not in header]
    if missing:
        what = " and ".join(repr(col) for col in missing)
        noun = "column" if len(missing) == 1 else "columns"
        raise BadInputError(
            f"{label}: no {noun} {what}; {columns_are(header)}. "
            "Use --timestamp-col/--value-col"
        )
    for col in (timestamp_col, value_col):
        if header.count(col) > 1:
            raise BadInputError(
                f"{label}: column '{col}' appears {header.count(col)} times in the header; "
                "rename all but one"
            )
    return header.index(timestamp_col), header.index(value_col)


_LOCAL_MIDNIGHT = r"\d{4}-\d{2}-\d{2}[T ]00:00(:00(\.0+)?)?[+-]\d{2}:?\d{2}"


def _parse_timestamps(
    cells: list[str], lines: list[int], column: str, label: str
) -> pd.DatetimeIndex:
    """The timestamp cells as a UTC DatetimeIndex; the first empty or bad cell is an error."""
    texts = pd.Index([cell.strip() for cell in cells], dtype=object)
    empty = np.flatnonzero(np.asarray(texts == "", dtype=bool))
    if len(empty):
        raise BadInputError(
            f"{label}: line {lines[empty[0]]}: empty timestamp in column '{column}'; "
            "fill it in or delete the row"
        )
    if texts.str.fullmatch(_LOCAL_MIDNIGHT).all():
        # Every stamp is midnight with a UTC offset (2025-03-30T00:00:00+02:00): a daily file
        # written in local time. Its days are the dates as written; in UTC they would be 22:00
        # or 23:00 the day before, one day early, and 23 h apart across a DST change.
        texts = texts.str.slice(0, 10)
    # ISO 8601 first: fast and unambiguous; only the cells it rejects need format guessing.
    stamps = pd.Series(pd.to_datetime(texts, utc=True, format="ISO8601", errors="coerce"))
    retry = stamps.isna().to_numpy()
    if retry.any():
        stamps[retry] = _parse_one_format(texts[retry])
    bad = (stamps.isna() | (stamps.dt.year < _EARLIEST_YEAR)).to_numpy()
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise BadInputError(
            f"{label}: line {lines[first]}: cannot parse timestamp {_show(texts[first])} in column "
            f"'{column}'; use a date like 2024-01-31 or 2024-01-31T13:00:00Z"
        )
    return pd.DatetimeIndex(stamps)


def _parse_one_format(texts: pd.Index) -> pd.DatetimeIndex:
    """Non-ISO timestamps parsed with ONE format inferred for all cells (NaT where it fails).

    Not `format="mixed"`: guessing cell by cell reads 01/02 as January 2nd and 13/02 as
    February 13th in the same file, scrambling the series without an error. Both month-first
    and day-first are tried; the one parsing more cells wins (13/01/2024 settles it). When
    both parse every cell (all days <= 12), the one leaving fewer holes in its time span wins
    (01/02, 01/03, ... day-first is monthly and full, month-first is daily and mostly empty);
    on a full tie, month-first (pandas' default).
    """
    with warnings.catch_warnings():
        # pandas warns when it falls back to dateutil or when dayfirst contradicts the format;
        # both outcomes are checked cell by cell through the NaT count instead.
        warnings.simplefilter("ignore", UserWarning)
        month_first = pd.to_datetime(texts, utc=True, errors="coerce")
        day_first = pd.to_datetime(texts, utc=True, errors="coerce", dayfirst=True)
    misses = (month_first.isna().sum(), day_first.isna().sum())
    if misses[0] != misses[1]:
        return day_first if misses[1] < misses[0] else month_first
    return day_first if _fill(day_first) > _fill(month_first) else month_first


def _fill(stamps: pd.DatetimeIndex) -> float:
    """Share of the span, in steps of the smallest spacing, that has a timestamp (1.0 = full)."""
    unique = stamps.dropna().unique().sort_values()
    if len(unique) < 2:
        return 1.0
    step = (unique[1:] - unique[:-1]).min()
    return len(unique) / ((unique[-1] - unique[0]) / step + 1)


def _show(text: str) -> str:
    """A cell quoted for a message, cut to 40 characters (an unclosed quote swallows lines)."""
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _parse_values(cells: list[str], lines: list[int], column: str, label: str, sep: str = ",") -> np.ndarray:
    """The value cells as floats, NaN for missing-value cells; the first bad cell is an error.

    Only plain numbers with '.' as the decimal point are read: a cell in another convention
    ("1,5", "1,234.5", "1.234,5") is refused with the way to write it, never guessed, so one
    column cannot be read in two conventions. `sep` is the file's separator (see
    `_refuse_dot_thousands`).
    """
    texts = [cell.strip() for cell in cells]
    missing = np.array([text.lower() in _MISSING for text in texts], dtype=bool)
    given = pd.Series([np.nan if gap else text for text, gap in zip(texts, missing)], dtype=object)
    numbers = pd.to_numeric(given, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    bad = ~np.isfinite(numbers) & ~missing  # "inf" and 1e400 too: no KPI is infinite
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        fix = number_fix(texts[first]) or (
            "give a number with '.' as the decimal point, or leave the cell empty for a missing value"
        )
        raise BadInputError(f"{label}: line {lines[first]}: column '{column}' has {_show(texts[first])}, not a number; {fix}")
    _refuse_dot_thousands([t for t, gap in zip(texts, missing) if not gap],
                          [n for n, gap in zip(lines, missing) if not gap], column, label, sep)
    refuse_huge(numbers, lines, column, label, "line")
    return numbers


def _refuse_dot_thousands(texts: list[str], lines: list[int], column: str, label: str, sep: str) -> None:
    """Raise BadInputError when a ';' or tab file mixes whole numbers with '.'-grouped ones.

    Spreadsheets in most of Europe write such files with '.' as the thousands separator, so
    "987" and "1.234" next to each other are most likely 987 and 1234; read as written they
    would be 987 and 1.234, a thousand times apart without a word. One cell with another use
    of '.' ("12.5", "0.234") shows '.' is the decimal point, and then nothing is refused. A
    ','-separated file cannot use ',' as the decimal point unquoted, so it is left alone.
    """
    if sep == ",":
        return
    grouped = next(((t, n) for t, n in zip(texts, lines) if _DOT_GROUPED.fullmatch(t)), None)
    whole = next(((t, n) for t, n in zip(texts, lines) if _WHOLE.fullmatch(t)), None)
    if grouped is None or whole is None:
        return
    if any("." in t and not _DOT_GROUPED.fullmatch(t) for t in texts):
        return
    (cell, line), (plain, plain_line) = grouped, whole
    raise BadInputError(
        f"{label}: line {line}: column '{column}' has {cell!r} but line {plain_line} has {plain!r}: if '.' "
        f"separates thousands, write {cell.replace('.', '')} (no thousands separators); if it is the decimal "
        f"point, write {plain}.0"
    )
