"""A SQL database as a source (`type: sql`): SQLAlchemy 2 Core, aggregated in the database.

Table mode: kpiwatch reflects the table (so a missing table or column is a clear config error
before any query runs) and builds

    SELECT period, dim..., SUM(metric)...
    FROM (SELECT <period of ts> AS period, dim..., metric... FROM table
          WHERE ts >= :lo AND ts < :hi) GROUP BY period, dim...

where the period is the UTC hour, or the calendar date in the KPI timezone (PostgreSQL:
`date(timezone(:tz, ts))`). The inner select keeps the bound time zone out of GROUP BY (with
server-side parameters PostgreSQL would see two different parameters). SQLite has no time
zones: a day cut in another zone than the stored one is grouped by the stored hour in SQLite
and summed to days in pandas (exact for zones with whole-hour offsets).

Query mode: the configured SQL runs with bound `:start` and `:end` and its rows are re-summed
in pandas (dropping dimensions the KPI does not ask for); a duplicate row is an error.

Only bound parameters reach SQL; table and column names are quoted by SQLAlchemy.
Errors: cannot connect or authenticate, a timeout, a dropped connection -> SourceError (exit 3);
a missing table or column, a malformed query, text in a number column -> BadInputError (exit 2).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    NoSuchModuleError,
    NoSuchTableError,
    SQLAlchemyError,
)

from forecaster.completeness import ROWS_COLUMN
from forecaster.sources import frames
from forecaster.sources.base import WallClock
from forecaster.sources.config import SQLSourceConfig
from forecaster.sources.urls import URLProblem, parse_database_url
from forecaster.types import BadInputError, SourceError

# Bounds of a `query:` when the caller gives none (the whole history).
_EARLIEST = pd.Timestamp("1970-01-01", tz="UTC")
_LATEST = pd.Timestamp("2100-01-01", tz="UTC")
# SQLSTATE classes that mean the SQL or the names in it are wrong (42: syntax error or access
# rule violation, 22: data exception) rather than the server being unreachable.
_CONFIG_SQLSTATE = ("42", "22")
# SQLite reports every problem as OperationalError; these texts mean the config is wrong.
_SQLITE_CONFIG_TEXTS = ("no such table", "no such column", "syntax error", "incomplete input", "no such function")
_EXTRAS = {"postgresql": "postgres", "bigquery": "bigquery", "snowflake": "snowflake"}

_ENGINES: dict[tuple[str, float, float], Engine] = {}
_ENGINES_LOCK = threading.Lock()


def database_url(url: str, where: str) -> URL:
    """`url` parsed; a bare `postgresql://` gets the psycopg 3 driver (the one kpiwatch ships)."""
    try:
        parsed = parse_database_url(url)
    except URLProblem as exc:  # names the scheme only: the rest may hold a password
        raise BadInputError(f"{where}: url {exc}") from None
    if parsed.drivername == "postgresql":
        # SQLAlchemy 2.0 reads a bare postgresql:// as psycopg2, 2.1 as psycopg 3: pin the one we ship.
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _engine(url: URL, connect_timeout: float, statement_timeout: float, where: str) -> Engine:
    """One pooled engine per URL and timeouts, shared by every KPI of the source."""
    key = (url.render_as_string(hide_password=False), connect_timeout, statement_timeout)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = _ENGINES[key] = _create_engine(url, connect_timeout, statement_timeout, where)
    return engine


def _create_engine(url: URL, connect_timeout: float, statement_timeout: float, where: str) -> Engine:
    backend = url.get_backend_name()
    connect_args: dict[str, Any] = {}
    if backend == "postgresql":
        connect_args["connect_timeout"] = max(1, round(connect_timeout))
    elif backend == "sqlite":
        connect_args["timeout"] = connect_timeout
    try:
        engine = sa.create_engine(url, connect_args=connect_args, pool_pre_ping=backend != "sqlite")
    except (ImportError, NoSuchModuleError, ArgumentError) as exc:
        extra = _EXTRAS.get(backend)
        fix = f"pip install 'kpiwatch[{extra}]'" if extra else "install the SQLAlchemy dialect for it"
        raise BadInputError(f"{where}: cannot use {url.render_as_string(hide_password=True)} "
                            f"({_first_line(exc)}); {fix}") from None
    if backend == "postgresql":
        millis = int(statement_timeout * 1000)

        @sa.event.listens_for(engine, "connect")
        def _session(dbapi_conn: Any, _record: Any) -> None:
            # An int we computed, not user text: safe to put in the statement. The session zone
            # is UTC so a `query:` comparing naive timestamps with :start/:end reads them as UTC
            # whatever the server's default zone is.
            cursor = dbapi_conn.cursor()
            cursor.execute(f"SET statement_timeout = {millis}")
            cursor.execute("SET TIME ZONE 'UTC'")
            cursor.close()
            dbapi_conn.commit()

    return engine


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's own message (the DBAPI's, not SQLAlchemy's wrapper)."""
    inner = getattr(exc, "orig", None) or exc
    text = str(inner).strip() or type(inner).__name__
    return text.splitlines()[0].strip()


class SQLSource(WallClock):
    """Metrics from a SQL table/view or query, summed per period in the database.

    config: the `sources:` entry (see `forecaster.sources.config.SQLSourceConfig`).
    timezone: where days are cut (the config's `timezone`; default UTC).
    name: the entry's name under `sources:`, for messages.
    """

    def __init__(self, config: SQLSourceConfig, timezone: str = "UTC", name: str = "") -> None:
        self.config = config
        self.timezone = timezone
        self.name = name or "sql"
        self.data_delay = pd.Timedelta(hours=config.delay_hours or 0)
        self.url = database_url(config.url, self.where)
        self.stored_zone = config.timezone or "UTC"

    @property
    def where(self) -> str:
        """How messages name this source."""
        return f"source {self.name!r} (sql)"

    @property
    def shown_url(self) -> str:
        """The URL with the password hidden, for messages."""
        return self.url.render_as_string(hide_password=True)

    def __repr__(self) -> str:
        return f"SQLSource(name={self.name!r}, url={self.shown_url!r})"

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
        inclusive; None = unbounded). See the module docstring for the SQL that runs.

        rows: in table mode also return `_rows`, the COUNT(*) of table rows in each output row
        (default False); a `query:` returns rows already summed, so it cannot, and adds none.
        """
        frames.check_freq(freq, self.where)
        metrics, dimensions = list(dict.fromkeys(metrics)), list(dict.fromkeys(dimensions))
        if not metrics:
            raise BadInputError(f"{self.where}: no metric requested")
        lo = frames.as_label(start, self.where, "start")
        hi = frames.as_label(end, self.where, "end")
        engine = _engine(self.url, self.config.connect_timeout, self.config.statement_timeout, self.where)
        try:
            conn = engine.connect()
        except SQLAlchemyError as exc:
            raise SourceError(f"{self.where}: cannot connect to {self.shown_url}: {_first_line(exc)}") from None
        with conn:
            try:
                if self.config.table is not None:
                    return self._fetch_table(conn, metrics, dimensions, freq, lo, hi, rows)
                return self._fetch_query(conn, metrics, dimensions, freq, lo, hi)
            except NoSuchTableError:
                raise BadInputError(f"{self.where}: table {self.config.table!r} does not exist in "
                                    f"{self.shown_url}; check `table:` (schema.table for another schema)") from None
            except SQLAlchemyError as exc:
                raise self._classified(exc) from None

    # ----------------------------------------------------------------------- errors

    def _classified(self, exc: SQLAlchemyError) -> BadInputError | SourceError:
        """A database error as BadInputError (fix the config or query) or SourceError (retry)."""
        reason = _first_line(exc)
        what = "query" if self.config.query is not None else f"query on table {self.config.table!r}"
        if isinstance(exc, DBAPIError) and not exc.connection_invalidated:
            state = str(getattr(exc.orig, "sqlstate", "") or "")
            sqlite_config = self.url.get_backend_name() == "sqlite" and any(
                text in reason.lower() for text in _SQLITE_CONFIG_TEXTS)
            if state.startswith(_CONFIG_SQLSTATE) or sqlite_config or isinstance(
                    exc, sa.exc.ProgrammingError | sa.exc.DataError):
                return BadInputError(f"{self.where}: the {what} failed: {reason}; fix `{self._key()}:`")
        return SourceError(f"{self.where}: the {what} on {self.shown_url} failed: {reason}")

    def _key(self) -> str:
        return "query" if self.config.query is not None else "table"

    # ----------------------------------------------------------------------- table mode

    def _column(self, kind: str, name: str) -> str:
        mapping = self.config.metrics if kind == "metric" else self.config.dimensions
        return mapping.get(name, name)

    def _fetch_table(
        self, conn: Connection, metrics: list[str], dimensions: list[str], freq: str,
        lo: pd.Timestamp | None, hi: pd.Timestamp | None, rows: bool = False,
    ) -> pd.DataFrame:
        schema, _, table_name = (self.config.table or "").rpartition(".")
        types = {col["name"]: col["type"] for col in sa.inspect(conn).get_columns(table_name, schema=schema or None)}
        ts_col = self.config.timestamp
        wanted = [("timestamp", ts_col, ts_col)]
        wanted += [("dimension", d, self._column("dimension", d)) for d in dimensions]
        wanted += [("metric", m, self._column("metric", m)) for m in metrics]
        missing = [(kind, name, col) for kind, name, col in wanted if col not in types]
        if missing:
            kind, name, col = missing[0]
            fix = "Set `timestamp:`" if kind == "timestamp" else f"Map {kind} {name!r} under `{kind}s:`"
            raise BadInputError(f"{self.where}: table {self.config.table!r} has no column {col!r}; "
                                f"columns are: {', '.join(types)}. {fix}")
        for _, name, col in wanted[1 + len(dimensions):]:
            if isinstance(types[col], sa.String | sa.Text | sa.Date | sa.DateTime | sa.Boolean):
                raise BadInputError(f"{self.where}: column {col!r} of table {self.config.table!r} is "
                                    f"{types[col]}, not a number, so metric {name!r} cannot be summed; "
                                    "map a number column")
        table = sa.table(table_name, *(sa.column(col, types[col]) for _, _, col in wanted), schema=schema or None)
        period, kind = self._period(table.c[ts_col], types[ts_col], freq)
        where = self._time_filter(table.c[ts_col], types[ts_col], freq, lo, hi)
        inner = sa.select(
            period.label("kp_period"),
            *(table.c[self._column("dimension", d)].label(f"kd_{i}") for i, d in enumerate(dimensions)),
            *(table.c[self._column("metric", m)].label(f"km_{i}") for i, m in enumerate(metrics)),
        ).where(*where).subquery("kp_rows")
        dims = [inner.c[f"kd_{i}"] for i in range(len(dimensions))]
        # COUNT(*) in the same GROUP BY: the rows behind each sum, for the completeness check.
        counts = [sa.cast(sa.func.count(), sa.Float)] if rows else []
        query = sa.select(
            # Sums as double precision: a NUMERIC sum would arrive as Decimal objects, ~5x slower.
            inner.c.kp_period, *dims, *(sa.cast(sa.func.sum(inner.c[f"km_{i}"]), sa.Float)
                                        for i in range(len(metrics))), *counts
        ).group_by(inner.c.kp_period, *dims)
        result = conn.execute(query)
        # The driver's plain tuples: every value is parsed below anyway, and going through
        # SQLAlchemy's Row objects costs more than the query itself for 36,500 rows.
        found = result.cursor.fetchall() if result.cursor is not None else [tuple(r) for r in result.all()]
        result.close()
        if not found:
            return frames.empty_frame(dimensions, [*metrics, ROWS_COLUMN] if rows else metrics)
        width = 1 + len(dimensions) + len(metrics)
        column = _columns(found)
        labels = self._labels(column(0), kind, freq)
        numbers = range(1, len(found) + 1)
        sums = {m: frames.to_numbers(_floats(column(1 + len(dimensions) + i)), numbers, self._column("metric", m),
                                     self.where) for i, m in enumerate(metrics)}
        if rows:
            sums[ROWS_COLUMN] = _floats(column(width)).astype("float64")
        # Dimension values typed as in a frame of the rows (an integer column with a NULL is
        # floats there, so 1 is written "1.0": segment names stay what they were).
        dims = {d: _typed(column(1 + i)) for i, d in enumerate(dimensions)}
        # One row per period and dimension values already (GROUP BY): `summed` only sorts them,
        # unless labels cut in pandas (zone_hour) put several rows in one period.
        return frames.summed(labels, dims, sums, lo, hi, where=self.where)

    def _stored_kind(self, column_type: Any) -> str:
        """"date" (calendar dates), "aware" (instants) or "naive" (wall-clock in `timezone`)."""
        if isinstance(column_type, sa.Date) and not isinstance(column_type, sa.DateTime):
            return "date"
        if isinstance(column_type, sa.DateTime) and column_type.timezone:
            return "aware"
        return "naive"

    def _period(self, ts: Any, column_type: Any, freq: str) -> tuple[Any, str]:
        """The SQL expression of a row's period and how to read it back:
        "date" (a calendar date = the label), "utc_hour" (naive UTC hour = the label) or
        "zone_hour" (naive hour in the stored zone, labelled in pandas)."""
        stored, backend = self._stored_kind(column_type), self.url.get_backend_name()
        if stored == "date":
            if freq == "h":
                raise BadInputError(f"{self.where}: column {self.config.timestamp!r} holds dates, so an hourly "
                                    "KPI cannot be cut from it; use freq: D or a timestamp column")
            return (sa.func.date(ts) if backend == "sqlite" else sa.cast(ts, sa.Date)), "date"
        if backend == "postgresql":
            instant = ts if stored == "aware" else sa.func.timezone(sa.bindparam("kp_stored", self.stored_zone), ts)
            if freq == "h":
                return sa.func.date_trunc("hour", sa.func.timezone("UTC", instant)), "utc_hour"
            return sa.cast(sa.func.timezone(sa.bindparam("kp_tz", self.timezone), instant), sa.Date), "date"
        if backend == "sqlite":
            if freq == "D" and self.stored_zone == self.timezone:
                return sa.func.date(ts), "date"
            hour = sa.func.strftime("%Y-%m-%d %H:00:00", ts)
            return hour, ("utc_hour" if self.stored_zone == "UTC" and freq == "h" else "zone_hour")
        raise BadInputError(f"{self.where}: `table:` builds SQL for PostgreSQL and SQLite; for "
                            f"{backend} give `query:` with :start and :end instead")

    def _time_filter(
        self, ts: Any, column_type: Any, freq: str, lo: pd.Timestamp | None, hi: pd.Timestamp | None
    ) -> list[Any]:
        """WHERE terms keeping the rows of the periods lo..hi (bound values, half-open)."""
        start, end = frames.instant_bounds(freq, self.timezone, lo, hi)
        stored, backend = self._stored_kind(column_type), self.url.get_backend_name()
        terms: list[Any] = []
        if stored == "date":
            # A date row's label is the date itself: keep the periods' own dates.
            column = sa.func.date(ts) if backend == "sqlite" else ts
            for label, after in ((lo, True), (hi, False)):
                if label is not None:
                    day = label.date()
                    value = sa.bindparam(None, day.isoformat() if backend == "sqlite" else day)
                    terms.append(column >= value if after else column <= value)
            if backend == "sqlite":
                terms += _sqlite_index_range(ts, lo.date() if lo is not None else None,
                                             hi.date() if hi is not None else None)
            return terms
        days: list[date | None] = []
        for bound, after in ((start, True), (end, False)):
            if bound is None:
                days.append(None)
                continue
            if stored == "aware" and backend != "sqlite":
                value, column = bound.to_pydatetime(), ts
            else:
                local = bound.tz_convert(self.stored_zone).tz_localize(None).to_pydatetime()
                days.append(local.date())
                if backend == "sqlite":
                    # SQLite compares text: normalise both sides to 'YYYY-MM-DD HH:MM:SS'.
                    value, column = local.strftime("%Y-%m-%d %H:%M:%S"), sa.func.datetime(ts)
                else:
                    value, column = local, ts
            param = sa.bindparam(None, value)
            terms.append(column >= param if after else column < param)
        if backend == "sqlite":
            terms += _sqlite_index_range(ts, *days)
        return terms

    def _labels(self, values: np.ndarray, kind: str, freq: str) -> pd.DatetimeIndex:
        """Period labels of the database's period values (an object array), parsed once per
        distinct value: a period has a row per dimension value."""
        codes, uniques = pd.factorize(values)
        if (codes < 0).any():  # a NULL period (a row without a timestamp): parsed like the others, as NaT
            codes, uniques = pd.factorize(values, use_na_sentinel=False)
        return self._parsed_labels(np.asarray(uniques, dtype=object), kind, freq).take(codes)

    def _parsed_labels(self, values: np.ndarray, kind: str, freq: str) -> pd.DatetimeIndex:
        try:  # dates and datetimes from the driver convert directly
            stamps = pd.DatetimeIndex(pd.to_datetime(pd.Series(values, dtype=object)))
        except (TypeError, ValueError):  # text (SQLite) or a mix: through ISO text
            stamps = pd.DatetimeIndex(pd.to_datetime(pd.Index(values, dtype=object).map(_as_text), format="ISO8601"))
        if stamps.tz is not None:
            stamps = stamps.tz_convert("UTC").tz_localize(None)
        if kind in ("date", "utc_hour"):
            return stamps.tz_localize("UTC")
        return frames.label_instants(frames.localize_naive(stamps, self.stored_zone), freq, self.timezone)

    # ----------------------------------------------------------------------- query mode

    def _query_bounds(self, freq: str, lo: pd.Timestamp | None, hi: pd.Timestamp | None) -> dict[str, Any]:
        """:start and :end for the configured query: a half-open instant range covering the
        periods, a day wider on each side for daily KPIs (a `date` column compared with an
        instant depends on the session's zone); pandas keeps the exact periods."""
        start, end = frames.instant_bounds(freq, self.timezone, lo, hi)
        margin = pd.Timedelta(days=1) if freq == "D" else pd.Timedelta(0)
        start = _EARLIEST if start is None else start - margin
        end = _LATEST if end is None else end + margin
        if self.url.get_backend_name() == "sqlite":
            # SQLite stores text; naive UTC in its own datetime format compares correctly.
            return {"start": start.strftime("%Y-%m-%d %H:%M:%S"), "end": end.strftime("%Y-%m-%d %H:%M:%S")}
        return {"start": start.to_pydatetime(), "end": end.to_pydatetime()}

    def _fetch_query(
        self, conn: Connection, metrics: list[str], dimensions: list[str], freq: str,
        lo: pd.Timestamp | None, hi: pd.Timestamp | None,
    ) -> pd.DataFrame:
        result = conn.execute(sa.text(self.config.query or ""), self._query_bounds(freq, lo, hi))
        names = list(result.keys())
        rows = result.cursor.fetchall() if result.cursor is not None else [tuple(r) for r in result.all()]
        result.close()
        ts_col = self.config.timestamp
        wanted = [ts_col, *(self._column("dimension", d) for d in dimensions),
                  *(self._column("metric", m) for m in metrics)]
        missing = [col for col in wanted if col not in names]
        if missing:
            raise BadInputError(f"{self.where}: the query returns no column {missing[0]!r}; it returns: "
                                f"{', '.join(names)}. Name the column in the SELECT or map it under "
                                "`metrics:`/`dimensions:`/`timestamp:`")
        if not rows:
            return frames.empty_frame(dimensions, metrics)
        column = _columns(rows)
        # Numbers and dimension values typed as pandas would type a frame of the rows (all
        # true/false is a bool column, refused as a metric).
        frame = pd.DataFrame({name: pd.Series(column(i)).infer_objects() for i, name in enumerate(names)})
        numbers = np.arange(1, len(frame) + 1)
        metric_cols = {self._column("metric", m) for m in metrics} | set(self.config.metrics.values())
        key = [c for c in names if c not in metric_cols]
        where = f"{self.where}: query result"
        stamps = self._query_stamps(column(names.index(ts_col)), numbers, ts_col, where)
        labels = frames.labels_of(stamps, freq, self.timezone, self.stored_zone, where)
        self._no_duplicates(frame, labels, key, ts_col)
        return frames.summed(
            labels,
            {d: frame[self._column("dimension", d)].to_numpy(dtype=object) for d in dimensions},
            {m: frames.to_numbers(frame[self._column("metric", m)], numbers, self._column("metric", m), where)
             for m in metrics},
            lo, hi, where=where,
        )

    def _query_stamps(self, values: np.ndarray, numbers: np.ndarray, column: str, where: str) -> pd.DatetimeIndex:
        """The query's timestamps (dates, datetimes or text), each distinct one parsed once."""
        found = frames.distinct(values)
        if found is None:
            stamps, _ = frames.parse_time_texts([_as_text(v) for v in values], numbers, column, where, "row")
            return stamps
        codes, uniques = found
        stamps, _ = frames.parse_time_texts([_as_text(v) for v in uniques], frames.FirstRows(codes, numbers), column,
                                            where, "row")
        return stamps.take(codes)

    def _no_duplicates(self, frame: pd.DataFrame, labels: pd.DatetimeIndex, key: list[str], ts_col: str) -> None:
        """One row per period and dimension values (every returned column that is not a metric);
        a second one would be double counted, so it is an error naming both rows."""
        if not _repeated(frame, labels, [c for c in key if c != ts_col]):
            return
        keys = frame[[c for c in key if c != ts_col]].astype(str).assign(_kp_label=labels)
        dup = keys.duplicated(keep=False).to_numpy()
        if dup.any():
            rows = np.flatnonzero(dup)
            first = rows[0]
            twin = next(int(r) for r in rows[1:] if keys.iloc[r].equals(keys.iloc[first]))
            dims = ", ".join(f"{c}={frame[c].iloc[first]}" for c in key if c != ts_col)
            raise BadInputError(
                f"{self.where}: the query returns rows {first + 1} and {twin + 1} for the same period "
                f"({labels[first].date() if labels[first] == labels[first].normalize() else labels[first]}"
                f"{', ' + dims if dims else ''}) in column {ts_col!r}; GROUP BY the period and the dimensions "
                "so each appears once"
            )


def _repeated(frame: pd.DataFrame, labels: pd.DatetimeIndex, columns: list[str]) -> bool:
    """Whether two rows have the same label and the same texts in `columns` (numbered by
    distinct value rather than written out as text row by row; text is compared as text, so
    1 and '1' are the same)."""
    key = pd.factorize(labels)[0].astype(np.int64)
    for name in columns:
        cells = frame[name].to_numpy(dtype=object)
        try:
            codes, uniques = pd.factorize(cells)
            text = not (codes < 0).any() and all(isinstance(value, str) for value in uniques)
        except TypeError:
            text = False
        if not text:
            codes, uniques = pd.factorize(pd.Series(cells, dtype=object).astype(str).to_numpy(dtype=object))
        if float(key.max() + 1) * len(uniques) >= 2.0**62:
            return True  # too many to number: let the text comparison decide
        key = key * len(uniques) + codes
    return bool(pd.Index(key).has_duplicates)


def _sqlite_index_range(ts: Any, first: date | None, last: date | None) -> list[Any]:
    """A looser range on the bare column, which an index on it can serve (SQLite cannot use one
    for `datetime(ts) >= ...`), added to the exact terms: the rows whose text starts with a date
    from two days before `first` to two days after `last` (two days: a text with a UTC offset
    may name the day before or after), and every number (Julian days: SQLite sorts numbers
    before text, so `ts < '!'` is a second index range; '!', not '0', which a column of
    numeric affinity would turn into the number 0). Timestamps stored as text must start
    with their date, as ISO 8601 and SQLAlchemy write them (Julian days written as text
    would be left out)."""
    if first is None and last is None:
        return []
    low = sa.bindparam(None, (first - timedelta(days=2)).isoformat()) if first is not None else None
    high = sa.bindparam(None, (last + timedelta(days=2)).isoformat()) if last is not None else None
    if low is None:
        return [ts < high]  # numbers are below any text already
    within = ts >= low if high is None else sa.and_(ts >= low, ts < high)
    return [sa.or_(within, ts < sa.bindparam(None, "!"))]


def _columns(found: Sequence[tuple[Any, ...]]) -> Callable[[int], np.ndarray]:
    """Column i of the driver's rows as an object array (cheaper than a DataFrame of tuples)."""
    count = len(found)
    return lambda i: np.fromiter(map(itemgetter(i), found), dtype=object, count=count)


def _typed(values: np.ndarray) -> np.ndarray:
    """Cells as a frame of the rows would hold them (objects; text, dates as they are)."""
    if pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty"):
        return values  # nothing to convert, and a text column would go through Arrow and back
    return pd.Series(values).infer_objects().to_numpy(dtype=object)


def _floats(values: np.ndarray) -> np.ndarray:
    """A column of the database's numbers as float64 (None -> NaN), or as it is when some cell
    is not a number, for `frames.to_numbers` to name."""
    try:
        return values.astype("float64")
    except (TypeError, ValueError):
        return values


def _as_text(value: Any) -> str:
    """A database time value as ISO text (dates, datetimes with or without zone, strings)."""
    if isinstance(value, datetime | pd.Timestamp):
        return value.isoformat(sep="T")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return "" if value is None else str(value)
