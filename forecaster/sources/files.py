"""CSV and Parquet exports as a source (`type: csv` / `type: parquet`).

One file or a glob: every matching file is read and the rows of all files are summed together
per period and dimension values, so a folder of daily exports is one source. Long format
(timestamp, dimension columns, metric columns); a wide file (one column per metric) is the same
with no dimension columns. Other columns are ignored.

CSV cells are checked so an error names the file, the line and the column (the parsing of
`forecaster.sources.csv`: BOM, line endings, `,`/`;`/tab separators, quoting). A plain file (no
quotes, one cell per column on every line) is split by pandas' C reader; any other goes through
the careful line-by-line reader, which also words every error.

Each source object reads a file once per version (path, modification time in ns, size) and
keeps its parsed columns: a daemon job asks its source three times per period (completeness,
"has a value", the check), and a file of 10,000 campaigns x 2 years is 7 million rows. A file
that changed is read again. Only the source object holds them, so they go when the job's
source goes: see `_Parsed` for why not longer.
"""

from __future__ import annotations

import csv
import glob
import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from forecaster.completeness import ROWS_COLUMN
from forecaster.sources import frames
from forecaster.sources.base import WallClock
from forecaster.sources.config import FileSourceConfig
from forecaster.sources.csv import _header, _read_text, _separator, _split_rows, columns_are
from forecaster.types import BadInputError, SourceError

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class _Table:
    """One file's needed columns: raw cells (CSV text or Parquet values) and their row numbers."""

    label: str
    columns: dict[str, pd.Series | pd.Categorical | np.ndarray]
    rows: np.ndarray  # line numbers (CSV) or 1-based row numbers (Parquet), for messages
    row_word: str  # "line" or "row"


@dataclass
class _Parsed:
    """One version of one file: the columns read so far, and what was parsed from them.

    Held by one source object, not by the module: the daemon makes a source per KPI job and
    every worker process another, and the files change between cycles (an export a day or an
    hour), so a module-level cache would mostly keep last cycle's tables alive, in every
    process, at ~100 MB per 7 million rows. A source object lives for one job: its three
    fetches share one read.
    """

    version: tuple[int, int]  # (mtime_ns, size)
    label: str
    row_word: str = "line"
    rows: np.ndarray | None = None
    header: list[str] | None = None
    cells: dict[str, pd.Series | pd.Categorical | np.ndarray] = field(default_factory=dict)
    parsed: dict[tuple[str, ...], object] = field(default_factory=dict)

    def table(self) -> _Table:
        assert self.rows is not None
        return _Table(self.label, self.cells, self.rows, self.row_word)


class FileSource(WallClock):
    """Rows of CSV or Parquet files, summed per period (see the module docstring).

    config: the `sources:` entry. timezone: where days are cut (the config's `timezone`).
    name: the source's name under `sources:`, used in messages.
    """

    def __init__(self, config: FileSourceConfig, timezone: str = "UTC", name: str = "") -> None:
        self.config = config
        self.timezone = timezone
        self.name = name or config.type
        self.data_delay = pd.Timedelta(hours=config.delay_hours or 0)
        if config.type == "parquet":
            _require_pyarrow(self.where)
        self._files: dict[Path, _Parsed] = {}  # the latest version read of each file

    @property
    def where(self) -> str:
        """How messages name this source."""
        return f"source {self.name!r} ({self.config.type})"

    def __repr__(self) -> str:
        return f"FileSource(name={self.name!r}, path={self.config.path!r})"

    def paths(self) -> list[Path]:
        """The files the configured path or glob matches now, sorted.

        None is a SourceError (exit 3), like a database that is down: an export folder is often
        empty for a while (a late export, a moved share), and the daemon then keeps the KPI's
        last state and judges the missed periods once the files are back.
        """
        pattern = os.path.expanduser(self.config.path)
        if not _GLOB_CHARS & set(pattern):
            path = Path(pattern)
            if not path.is_file():
                raise SourceError(f"{self.where}: no such file {pattern!r}; check `path:`")
            return [path]
        found = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        if not found:
            raise SourceError(f"{self.where}: no file matches {pattern!r}; check `path:` (a glob like "
                              "exports/*.csv)")
        return found

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
        """Metrics summed per period label and dimension values, start <= label <= end (labels,
        inclusive; None = unbounded), from every matching file as it is now (a file this source
        read before and that has not changed since is not read again).

        rows: also return `_rows`, how many file rows went into each output row (default False).
        """
        frames.check_freq(freq, self.where)
        metrics, dimensions = list(dict.fromkeys(metrics)), list(dict.fromkeys(dimensions))
        if not metrics:
            raise BadInputError(f"{self.where}: no metric requested")
        lo = frames.as_label(start, self.where, "start")
        hi = frames.as_label(end, self.where, "end")
        paths = self.paths()
        for gone in set(self._files) - set(paths):
            del self._files[gone]
        parts = [self._read(path, metrics, dimensions, freq, lo, hi) for path in paths]
        counted = [*metrics, ROWS_COLUMN] if rows else metrics
        if not parts:
            return frames.empty_frame(dimensions, counted)
        labels = parts[0][0].append([p[0] for p in parts[1:]]) if len(parts) > 1 else parts[0][0]
        dims = {d: _joined([p[1][d] for p in parts]) for d in dimensions}
        mets = {m: np.concatenate([p[2][m] for p in parts]) for m in metrics}
        if rows:
            # One per file row, summed like a metric: a row with an empty metric cell still counts
            # (the export wrote it), a row that is not there yet does not.
            mets[ROWS_COLUMN] = np.ones(len(labels), dtype="float64")
        return frames.summed(labels, dims, mets, lo, hi, where=self.where)

    def _column(self, kind: str, name: str) -> str:
        mapping = self.config.metrics if kind == "metric" else self.config.dimensions
        return mapping.get(name, name)

    def _parsed(self, path: Path) -> _Parsed:
        """The file's entry for its current version (a new, empty one when it changed)."""
        label = f"{self.where}: {path}"
        try:
            stat = path.stat()
        except OSError:
            raise SourceError(f"{self.where}: no such file {str(path)!r}; check `path:`") from None
        version = (stat.st_mtime_ns, stat.st_size)
        known = self._files.get(path)
        if known is None or known.version != version:
            known = self._files[path] = _Parsed(version, label, "line" if self.config.type == "csv" else "row")
        return known

    def _read(
        self, path: Path, metrics: list[str], dimensions: list[str], freq: str,
        lo: pd.Timestamp | None, hi: pd.Timestamp | None,
    ) -> tuple[pd.DatetimeIndex, dict[str, pd.Categorical | np.ndarray], dict[str, np.ndarray]]:
        """One file's labels, dimension values and metric numbers (not yet summed), lo..hi."""
        wanted = {self.config.timestamp: ("timestamp", self.config.timestamp)}
        wanted.update({self._column("dimension", d): ("dimension", d) for d in dimensions})
        wanted.update({self._column("metric", m): ("metric", m) for m in metrics})
        entry = self._parsed(path)
        if entry.header is not None:
            _missing_columns(entry.header, list(wanted), entry.label)
        # Cells are kept for timestamps and dimensions; a metric's only until it is parsed.
        _load(entry, path, [col for col, (kind, _) in wanted.items()
                            if kind != "metric" or ("metric", col) not in entry.parsed], self.config.type)
        table = entry.table()
        ts_col = self.config.timestamp
        naive_zone = self.config.timezone or "UTC"
        key = ("labels", ts_col, freq, self.timezone, naive_zone)
        if key not in entry.parsed:
            entry.parsed[key] = _labels(table, ts_col, freq, self.timezone, naive_zone)
        codes, distinct_labels = entry.parsed[key]  # type: ignore[misc]
        labels = distinct_labels.take(codes)
        dims = {d: _dimension(table.columns[self._column("dimension", d)]) for d in dimensions}
        mets = {}
        for m in metrics:
            col = self._column("metric", m)
            if ("metric", col) not in entry.parsed:
                entry.parsed["metric", col] = frames.to_numbers(table.columns[col], table.rows, col, table.label,
                                                                 table.row_word)
                if col != ts_col and col not in {self._column("dimension", d) for d in dimensions}:
                    entry.cells.pop(col)
            mets[m] = entry.parsed["metric", col]
        keep = np.ones(len(labels), dtype=bool)
        if lo is not None:
            keep &= np.asarray(labels >= lo)
        if hi is not None:
            keep &= np.asarray(labels <= hi)
        if not keep.all():  # a window (the daemon's recent periods): only its rows go on
            labels = labels[keep]
            dims = {d: values[keep] for d, values in dims.items()}
            mets = {m: values[keep] for m, values in mets.items()}
        return labels, dims, mets


def _load(entry: _Parsed, path: Path, wanted: list[str], kind: str) -> None:
    """Read the `wanted` columns `entry` does not hold yet (one read of the file for all)."""
    missing = [col for col in dict.fromkeys(wanted) if col not in entry.cells]
    if not missing:
        return
    header, rows, columns = (_read_csv if kind == "csv" else _read_parquet)(path, missing, entry.label)
    entry.header, entry.rows = header, rows
    entry.cells.update(columns)


def _labels(
    table: _Table, column: str, freq: str, timezone: str, naive_zone: str
) -> tuple[np.ndarray, pd.DatetimeIndex]:
    """(codes, distinct labels) of the timestamp column: each distinct timestamp parsed and
    labelled once (a daily file repeats each day in every row of it)."""
    values = table.columns[column]
    where = f"{table.label}, column '{column}'"
    if isinstance(values, pd.Series) and pd.api.types.is_datetime64_any_dtype(values.dtype):
        stamps = _timestamps(table, column)
        codes, uniques = pd.factorize(stamps)
        return codes, frames.labels_of(pd.DatetimeIndex(uniques), freq, timezone, naive_zone, where)
    found = frames.distinct(values)
    if found is None:
        stamps = _timestamps(table, column)
        return np.arange(len(stamps)), frames.labels_of(stamps, freq, timezone, naive_zone, where)
    codes, uniques = found
    if all(hasattr(v, "isoformat") for v in uniques):  # datetime.date / datetime objects from Parquet
        texts = [v.isoformat() for v in uniques]
    else:
        texts = [str(v) for v in uniques]
    stamps, _ = frames.parse_time_texts(texts, frames.FirstRows(codes, table.rows), column, table.label,
                                        table.row_word)
    return codes, frames.labels_of(stamps, freq, timezone, naive_zone, where)


def _dimension(values: pd.Series | pd.Categorical | np.ndarray) -> pd.Categorical | np.ndarray:
    """A dimension column as `frames.summed` takes it: a categorical as it is, else objects."""
    if isinstance(values, pd.Categorical):
        return values
    return np.asarray(values, dtype=object)


def _joined(parts: list[pd.Categorical | np.ndarray]) -> pd.Categorical | np.ndarray:
    """One dimension's values of several files as one column."""
    if len(parts) == 1:
        return parts[0]
    if all(isinstance(p, pd.Categorical) for p in parts):
        return pd.api.types.union_categoricals(parts)
    return np.concatenate([np.asarray(p, dtype=object) for p in parts])


def _require_pyarrow(where: str) -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise BadInputError(f"{where}: reading Parquet needs pyarrow; pip install 'kpiwatch[parquet]'") from None


def _missing_columns(header: Sequence[str], wanted: Sequence[str], label: str) -> None:
    missing = [col for col in wanted if col not in header]
    if missing:
        noun = "column" if len(missing) == 1 else "columns"
        raise BadInputError(
            f"{label}: no {noun} {', '.join(repr(c) for c in missing)}; {columns_are(list(map(str, header)))}. "
            "Map the names under `metrics:`/`dimensions:` or set `timestamp:`"
        )


def _read_csv(path: Path, wanted: list[str], label: str) -> tuple[list[str], np.ndarray, dict[str, object]]:
    """The header, the line number of every row, and the wanted columns of a CSV file as text
    cells (categoricals when pandas split it, objects when the careful reader did)."""
    text = _read_text(path, label)
    fast = _split_plain(text, wanted)
    if fast is not None:
        return fast
    header, rows = _split_rows(text, label)
    _missing_columns(header, wanted, label)
    at = {col: header.index(col) for col in wanted}
    columns: dict[str, object] = {
        col: pd.Series([cells[i] for _, cells in rows], dtype=object) for col, i in at.items()}
    return header, np.array([line for line, _ in rows], dtype=np.int64), columns


def _split_plain(text: str, wanted: list[str]) -> tuple[list[str], np.ndarray, dict[str, object]] | None:
    """`_split_rows` by pandas' C reader, for a plain file; None for any other (quotes, a blank
    line before the header, a row with more or fewer cells than the header, a missing column,
    no rows), which the careful reader then splits and words the errors of.

    The same cells: no quotes means a line is a row and a separator a cell boundary (leading
    spaces skipped, as `_split_rows` does); every line is checked to hold exactly the header's
    separators (pandas refuses more, the total count shows fewer); rows of blank cells are
    skipped and keep the line numbers counting.
    """
    if '"' in text or "\x00" in text:
        return None
    end = text.find("\n")
    first = text if end < 0 else text[:end]
    if not first.strip():
        return None
    sep = _separator(first)
    raw = [cell.lstrip(" ") for cell in first.split(sep)]
    header, width = _header(raw), len(raw)
    if any(col not in header for col in wanted) or not header:
        return None
    lines = text.count("\n") + (0 if text.endswith("\n") else 1) - 1  # after the header
    at = {col: header.index(col) for col in dict.fromkeys(wanted)}
    # Wanted columns as text (pandas would read "007" and "1.50" of a categorical as numbers);
    # the others only need splitting, to find rows with more cells than the header.
    types = {i: (str if i in at.values() else "category") for i in range(width)}
    try:
        with warnings.catch_warnings():
            # A first row longer than the header is only a warning to pandas (it drops the
            # extra cells); a later one an error. Either way: not a plain file.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(io.StringIO(text), sep=sep, header=None, skiprows=1, names=range(width),
                                dtype=types, na_filter=False, skip_blank_lines=False, skipinitialspace=True,
                                quoting=csv.QUOTE_NONE, engine="c", index_col=False, low_memory=False)
    except (pd.errors.ParserError, pd.errors.ParserWarning, pd.errors.EmptyDataError, ValueError):
        return None
    if len(frame) != lines:
        return None
    cells = {i: _coded(frame[i].array) for i in range(width)}
    del frame
    blank = np.ones(lines, dtype=bool)
    for codes, uniques in cells.values():
        blank &= _blank(uniques)[codes]
    separators = (width - 1) * (1 + int((~blank).sum()))
    if blank.any():  # their separators are not in the count above: count them
        texts = text.split("\n")[1:]
        separators += sum(texts[i].count(sep) for i in np.flatnonzero(blank))
    if separators != text.count(sep):
        return None  # some row has fewer cells than the header
    keep = ~blank
    for i in range(len(header), width):  # cells under trailing unnamed columns must be empty
        codes, uniques = cells[i]
        if not _blank(uniques)[codes][keep].all():
            return None
    columns: dict[str, object] = {}
    for col, i in at.items():
        codes, uniques = cells[i]
        column = pd.Categorical.from_codes(codes, categories=pd.Index(uniques, dtype=object))
        columns[col] = column if keep.all() else column[keep]
    return header, np.arange(2, 2 + lines, dtype=np.int64)[keep], columns


def _coded(cells: object) -> tuple[np.ndarray, np.ndarray]:
    """(codes, distinct texts) of a column pandas split."""
    if isinstance(cells, pd.Categorical):
        codes = np.asarray(cells.codes)
        uniques = np.asarray(cells.categories, dtype=object)
        if (codes < 0).any():  # no cell is missing with na_filter off; but if one were, it is blank
            uniques, codes = np.append(uniques, ""), np.where(codes < 0, len(uniques), codes)
        return codes, uniques
    codes, uniques = pd.factorize(cells)  # type: ignore[call-overload]
    return np.asarray(codes), np.asarray(uniques, dtype=object)


def _blank(uniques: np.ndarray) -> np.ndarray:
    """Which distinct cells hold nothing but whitespace."""
    return np.array([not str(cell).strip() for cell in uniques], dtype=bool)


def _read_parquet(path: Path, wanted: list[str], label: str) -> tuple[list[str], np.ndarray, dict[str, object]]:
    """The header, 1-based row numbers and the wanted columns of a Parquet file."""
    import pyarrow
    import pyarrow.parquet as pq

    try:
        header = pq.read_schema(path).names
        _missing_columns(header, wanted, label)
        frame = pq.read_table(path, columns=list(dict.fromkeys(wanted))).to_pandas()
    except (pyarrow.ArrowException, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInputError(f"{label}: not a readable Parquet file ({reason})") from None
    columns: dict[str, object] = {col: frame[col].reset_index(drop=True) for col in wanted}
    return list(header), np.arange(1, len(frame) + 1, dtype=np.int64), columns


def _timestamps(table: _Table, column: str) -> pd.DatetimeIndex:
    """The timestamp column parsed: datetimes as they are, dates as naive midnights, text by
    `frames.parse_time_texts`; a missing value is an error naming the row."""
    values = table.columns[column]
    where = f"{table.label}"
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        missing = np.flatnonzero(values.isna().to_numpy())
        if len(missing):
            raise BadInputError(f"{where}: {table.row_word} {table.rows[missing[0]]}: empty timestamp in column "
                                f"'{column}'; fill it in or delete the row")
        return pd.DatetimeIndex(values)
    if len(values) and all(isinstance(v, pd.Timestamp | np.datetime64) or hasattr(v, "isoformat") for v in values):
        texts = [v.isoformat() for v in values]  # datetime.date / datetime objects from Parquet
    else:
        texts = ["" if v is None else str(v) for v in values]
    stamps, _ = frames.parse_time_texts(texts, table.rows, column, where, table.row_word)
    return stamps
