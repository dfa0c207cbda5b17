"""The config of each source kind (`sources:` in the YAML), one pydantic model per `type`.

`SourceConfig` is the union of the kinds, chosen by the `type` key (demo | csv | parquet | sql |
ga4). It validates like a tagged union but reports errors at the plain key path
(`sources.warehouse.table`, not `sources.warehouse.sql.table`) and lists the keys the chosen kind
allows, so `forecaster.settings` can turn them into its usual one-line messages.

This module must not import `forecaster.settings` (settings imports it).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    SerializationInfo,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

# Names kpiwatch uses for metrics and dimensions (and so for the columns it returns).
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# GA4 metric expressions: names joined by + or - (bounces = sessions - engagedSessions).
_GA4_EXPR = re.compile(r"^\s*[A-Za-z][A-Za-z0-9_:]*(\s*[-+]\s*[A-Za-z][A-Za-z0-9_:]*)*\s*$")


class _Strict(BaseModel):
    """Unknown keys are errors: a typo must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_zone(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {value!r}; use an IANA name such as Europe/Amsterdam") from None
    return value


def _check_names(mapping: dict[str, str], what: str) -> dict[str, str]:
    bad = [name for name in mapping if not _NAME.match(name)]
    if bad:
        raise ValueError(f"{what} name {bad[0]!r} is not a plain name; use letters, digits and _")
    return mapping


class DemoSourceConfig(_Strict):
    """`type: demo`: the built-in generated shop data (no files, no network, a fixed clock)."""

    type: Literal["demo"]


class _RealSourceConfig(_Strict):
    """What every real source shares.

    delay_hours: how long after a period ends its data are complete in the source, in hours
        (default 0; GA4 defaults to 48). Exposed as the source's `data_delay`.
    """

    delay_hours: float | None = Field(default=None, ge=0, le=24 * 14)


class _ColumnsConfig(_RealSourceConfig):
    """Where the numbers are in a file or table (files and SQL share these keys).

    timestamp: the column of timestamps or dates (default "timestamp").
    timezone: the zone of naive timestamps (default UTC).
    metrics, dimensions: {kpiwatch name: column} where the names differ (default: same names).
    """

    timestamp: str = Field(default="timestamp", min_length=1)
    timezone: str | None = None
    metrics: dict[str, str] = Field(default_factory=dict)
    dimensions: dict[str, str] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return _check_zone(value)

    @field_validator("metrics", "dimensions")
    @classmethod
    def _plain_names(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_names(value, "kpiwatch")


class FileSourceConfig(_ColumnsConfig):
    """`type: csv` or `type: parquet`: exported files, re-read on every fetch.

    path: one file or a glob (`exports/sessions_*.csv`); every matching file is read and the rows
        are summed together, so a team can drop one export per day into a folder.
    timestamp: the column of timestamps (default "timestamp"). Values with an offset (`Z`,
        `+01:00`) are instants; naive ones are in `timezone`. Dates without a time of day (all
        rows at midnight, no offset) are calendar dates, taken as they are for daily KPIs.
    timezone: the zone of naive timestamps (default UTC).
    metrics: {kpiwatch metric: column} when the file's names differ (default: same name).
    dimensions: {kpiwatch dimension: column} likewise (default: same name).
    Long format: timestamp, dimension columns, metric columns; a wide file (one column per metric,
    no dimension columns) is the same thing.
    """

    type: Literal["csv", "parquet"]
    path: str = Field(min_length=1)


class CsvSourceConfig(FileSourceConfig):
    """`type: csv` (see FileSourceConfig)."""

    type: Literal["csv"]


class ParquetSourceConfig(FileSourceConfig):
    """`type: parquet` (see FileSourceConfig); needs `pip install kpiwatch[parquet]`."""

    type: Literal["parquet"]


class SQLSourceConfig(_ColumnsConfig):
    """`type: sql`: any database with a SQLAlchemy dialect.

    url: SQLAlchemy URL, usually `${WAREHOUSE_URL}`; a bare `postgresql://` uses psycopg 3.
    Then EITHER table mode (kpiwatch builds the aggregating SELECT):
      table: table or view, `schema.table` allowed;
      timestamp: its time column (default "timestamp"): a date, a timestamp with time zone, or
        a naive timestamp in `timezone`;
      metrics: {kpiwatch metric: column}, summed per period (a metric not listed is read from
        the column of the same name);
      dimensions: {kpiwatch dimension: column} likewise;
    OR query mode:
      query: SQL text with bound `:start` (inclusive) and `:end` (exclusive) instants (UTC,
        tz-aware; on SQLite 'YYYY-MM-DD HH:MM:SS' UTC text) that returns the timestamp column,
        dimension and metric columns already summed, one row per period and dimension values
        (every returned column that is not a metric counts as a dimension). The range covers
        the periods asked for, a day wider on each side for daily KPIs; kpiwatch keeps the exact
        periods. PostgreSQL sessions run in UTC, so naive timestamps compare as UTC.
    timezone: zone of naive stored timestamps (default UTC).
    connect_timeout: seconds to wait for a connection (default 10).
    statement_timeout: seconds a query may run, where the dialect allows it (PostgreSQL;
        default 120).
    """

    type: Literal["sql"]
    url: str = Field(min_length=1)
    table: str | None = Field(default=None, min_length=1)
    query: str | None = Field(default=None, min_length=1)
    connect_timeout: float = Field(default=10.0, gt=0, le=600)
    statement_timeout: float = Field(default=120.0, gt=0, le=3600)

    @field_validator("url")
    @classmethod
    def _parses(cls, value: str) -> str:
        """Refused here, with the scheme only: a URL that does not parse cannot be masked later."""
        from forecaster.sources.urls import parse_database_url

        parse_database_url(value)  # URLProblem is a ValueError: pydantic reports it at `url`
        return value

    @model_validator(mode="after")
    def _table_or_query(self) -> SQLSourceConfig:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of `table:` (kpiwatch builds the query) or `query:` "
                             "(SQL with :start and :end)")
        if self.query is not None and not (re.search(r":start\b", self.query) and re.search(r":end\b", self.query)):
            raise ValueError("`query:` must use both bound parameters :start and :end "
                             "(e.g. WHERE day >= :start AND day < :end)")
        return self


class GA4SourceConfig(_RealSourceConfig):
    """`type: ga4`: a Google Analytics 4 property through the Data API (`kpiwatch[ga4]`).

    property_id: the numeric property id (e.g. "123456789").
    metrics: {kpiwatch metric: GA4 metric or sum/difference of GA4 metrics}, e.g.
        {sessions: sessions, conversions: keyEvents, revenue: totalRevenue,
         bounces: "sessions - engagedSessions"}. A metric not listed is asked under its own name.
    dimensions: {kpiwatch dimension: GA4 dimension}, e.g. {channel: sessionDefaultChannelGroup,
        device: deviceCategory, country: country}.
    page_size: rows per request (default 100,000; GA4 allows up to 250,000).
    delay_hours: default 48 (GA4 keeps processing a day's data for 24-48 hours).
    Credentials: the standard GOOGLE_APPLICATION_CREDENTIALS (a service-account key file).
    """

    type: Literal["ga4"]
    property_id: str
    metrics: dict[str, str] = Field(default_factory=dict)
    dimensions: dict[str, str] = Field(default_factory=dict)
    page_size: int = Field(default=100_000, ge=1, le=250_000)

    @field_validator("property_id", mode="before")
    @classmethod
    def _numeric_id(cls, value: Any) -> str:
        text = str(value).strip()
        if not re.fullmatch(r"(properties/)?[0-9]+", text):
            raise ValueError(f"GA4 property id {text!r} is not a number; give the numeric id from Admin > "
                             "Property details, e.g. '123456789'")
        return text

    @field_validator("metrics")
    @classmethod
    def _expressions(cls, value: dict[str, str]) -> dict[str, str]:
        _check_names(value, "kpiwatch")
        bad = [expr for expr in value.values() if not _GA4_EXPR.match(expr)]
        if bad:
            raise ValueError(f"GA4 metric {bad[0]!r} is not a metric name or a sum/difference of metric "
                             "names (e.g. 'sessions - engagedSessions')")
        return value

    @field_validator("dimensions")
    @classmethod
    def _plain_names(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_names(value, "kpiwatch")


AnySourceConfig = DemoSourceConfig | CsvSourceConfig | ParquetSourceConfig | SQLSourceConfig | GA4SourceConfig

SOURCE_KINDS: dict[str, type[BaseModel]] = {
    "demo": DemoSourceConfig,
    "csv": CsvSourceConfig,
    "parquet": ParquetSourceConfig,
    "sql": SQLSourceConfig,
    "ga4": GA4SourceConfig,
}


def parse_source_config(value: Any) -> AnySourceConfig:
    """One `sources:` entry as the model of its `type`.

    Raises pydantic's ValidationError with locations relative to the entry (`table`, not
    `sql.table`), an unknown key naming the keys this kind allows, an unknown type the kinds.
    """
    if isinstance(value, tuple(SOURCE_KINDS.values())):
        return value  # type: ignore[return-value]
    if not isinstance(value, dict):
        raise PydanticCustomError("source_entry", "expected a mapping with a `type:` key (one of {kinds})",
                                  {"kinds": ", ".join(SOURCE_KINDS)})
    kind = value.get("type")
    if kind is None:
        _raise("missing", "required key is missing", ("type",), value)
    if not isinstance(kind, str) or kind not in SOURCE_KINDS:
        _raise("source_type", f"unknown source type; choose one of: {', '.join(SOURCE_KINDS)}", ("type",), kind)
    model = SOURCE_KINDS[kind]
    try:
        return model.model_validate(value)  # type: ignore[return-value]
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(error["loc"])
        if error["type"] == "extra_forbidden":
            allowed = ", ".join(["type", *(key for key in model.model_fields if key != "type")])
            _raise("unknown_key", f"unknown key; allowed here: {allowed}", loc, None)
        if error["type"] == "missing":
            _raise("missing", "required key is missing", loc, None)
        message = str(error["msg"]).removeprefix("Value error, ")
        _raise(error["type"], message, loc, error.get("input"))


def _raise(kind: str, message: str, loc: tuple[Any, ...], given: Any) -> NoReturn:
    """Raise one validation error at `loc` (relative to the entry) with a fixed message."""
    # Braces would be read as format fields by PydanticCustomError.
    template = message.replace("{", "{{").replace("}", "}}")
    raise ValidationError.from_exception_data(
        "source", [{"type": PydanticCustomError(kind, template), "loc": loc, "input": given}]
    )


def _dump_source_config(value: BaseModel, info: SerializationInfo) -> dict[str, Any]:
    """An entry back as plain data (the union's own serializer cannot tell the kinds apart)."""
    return value.model_dump(mode=info.mode)


SourceConfig = Annotated[
    AnySourceConfig, PlainValidator(parse_source_config), PlainSerializer(_dump_source_config)
]
"""The type of one `sources:` entry (what `forecaster.settings.Settings.sources` holds)."""
