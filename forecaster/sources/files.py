"""CSV and Parquet exports as a source (`type: csv` / `type: parquet`), re-read on every fetch.

One file or a glob: every matching file is read and the rows of all files are summed together
per period and dimension values, so a folder of daily exports is one source. Long format
(timestamp, dimension columns, metric columns); a wide file (one column per metric) is the same
with no dimension columns. Other columns are ignored.

CSV cells are checked one by one so an error names the file, the line and the column (the
parsing of `forecaster.sources.csv`: BOM, line endings, `,`/`;`/tab separators, quoting).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from forecaster.completeness import ROWS_COLUMN
from forecaster.sources import frames
from forecaster.sources.base import WallClock
from forecaster.sources.config import FileSourceConfig
from forecaster.sources.csv import _read_text, _split_rows, columns_are
from forecaster.types import BadInputError, SourceError

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class _Table:
    """One file's needed columns: raw cells (CSV text or Parquet values) and their row numbers."""

    label: str
    columns: dict[str, pd.Series]
    rows: np.ndarray  # line numbers (CSV) or 1-based row numbers (Parquet), for messages
    row_word: str  # "line" or "row"


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
        inclusive; None = unbounded), read fresh from every matching file.

        rows: also return `_rows`, how many file rows went into each output row (default False).
        """
        frames.check_freq(freq, self.where)
        metrics, dimensions = list(dict.fromkeys(metrics)), list(dict.fromkeys(dimensions))
        if not metrics:
            raise BadInputError(f"{self.where}: no metric requested")
        lo = frames.as_label(start, self.where, "start")
        hi = frames.as_label(end, self.where, "end")
        parts = [self._read(path, metrics, dimensions, freq) for path in self.paths()]
        counted = [*metrics, ROWS_COLUMN] if rows else metrics
        if not parts:
            return frames.empty_frame(dimensions, counted)
        labels = pd.DatetimeIndex(np.concatenate([p[0].to_numpy() for p in parts]))
        dims = {d: np.concatenate([p[1][d] for p in parts]) for d in dimensions}
        mets = {m: np.concatenate([p[2][m] for p in parts]) for m in metrics}
        if rows:
            # One per file row, summed like a metric: a row with an empty metric cell still counts
            # (the export wrote it), a row that is not there yet does not.
            mets[ROWS_COLUMN] = np.ones(len(labels), dtype="float64")
        return frames.summed(labels, dims, mets, lo, hi, where=self.where)

    def _column(self, kind: str, name: str) -> str:
        mapping = self.config.metrics if kind == "metric" else self.config.dimensions
        return mapping.get(name, name)

    def _read(
        self, path: Path, metrics: list[str], dimensions: list[str], freq: str
    ) -> tuple[pd.DatetimeIndex, dict[str, np.ndarray], dict[str, np.ndarray]]:
        """One file's labels, dimension values and metric numbers (not yet summed)."""
        wanted = {self.config.timestamp: ("timestamp", self.config.timestamp)}
        wanted.update({self._column("dimension", d): ("dimension", d) for d in dimensions})
        wanted.update({self._column("metric", m): ("metric", m) for m in metrics})
        label = f"{self.where}: {path}"
        table = _read_csv(path, list(wanted), label) if self.config.type == "csv" else _read_parquet(
            path, list(wanted), label)
        ts_col = self.config.timestamp
        stamps = _timestamps(table, ts_col)
        naive_zone = self.config.timezone or "UTC"
        labels = frames.labels_of(stamps, freq, self.timezone, naive_zone, f"{label}, column '{ts_col}'")
        dims = {d: table.columns[self._column("dimension", d)].to_numpy(dtype=object) for d in dimensions}
        mets = {
            m: frames.to_numbers(table.columns[self._column("metric", m)], table.rows,
                                 self._column("metric", m), table.label, table.row_word)
            for m in metrics
        }
        return labels, dims, mets


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


def _read_csv(path: Path, wanted: list[str], label: str) -> _Table:
    """The wanted columns of a CSV file as text cells, with the line number of every row."""
    header, rows = _split_rows(_read_text(path, label), label)
    _missing_columns(header, wanted, label)
    at = {col: header.index(col) for col in wanted}
    columns = {col: pd.Series([cells[i] for _, cells in rows], dtype=object) for col, i in at.items()}
    return _Table(label, columns, np.array([line for line, _ in rows], dtype=np.int64), "line")


def _read_parquet(path: Path, wanted: list[str], label: str) -> _Table:
    """The wanted columns of a Parquet file, with 1-based row numbers."""
    import pyarrow
    import pyarrow.parquet as pq

    try:
        header = pq.read_schema(path).names
        _missing_columns(header, wanted, label)
        frame = pq.read_table(path, columns=wanted).to_pandas()
    except (pyarrow.ArrowException, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInputError(f"{label}: not a readable Parquet file ({reason})") from None
    columns = {col: frame[col].reset_index(drop=True) for col in wanted}
    return _Table(label, columns, np.arange(1, len(frame) + 1, dtype=np.int64), "row")


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
