"""The YAML config as pydantic models: loaded and validated once, where it enters.

`load_config(path)` returns `Settings` or raises `ConfigError` with one line naming the file, the
key, the value and what is allowed. `${VAR}` in any string is read from the environment, so
secrets never live in the file.
"""

from __future__ import annotations

import ipaddress
import os
import re
import string
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from forecaster.calendar import Calendar, UserEvent
from forecaster.catalog import with_catalog
from forecaster.models.base import model_names
from forecaster.types import BadInputError, Direction

DEFAULT_CONFIG = Path("config/kpiwatch.yaml")
AUTO_MODEL = "auto"
# The detector's model when a KPI names none: ETS without trend, stepped one period at a time.
# `auto` (ETS or seasonal naive by their one-step errors) judged no better on the daily incident
# benchmark and worse on NAB dev, at twice the cost (BENCHMARKS.md).
DEFAULT_MODEL = "ets"
_ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(BadInputError):
    """The config file is missing, not YAML, or breaks a rule. Exit 2."""


class _Strict(BaseModel):
    """Unknown keys are errors: a typo must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class RatioConfig(_Strict):
    """A ratio of summed parts: sum(numerator) / sum(denominator) per period and segment."""

    numerator: str
    denominator: str


class EventConfig(_Strict):
    """A team's own calendar event; `end` defaults to `start` (a one-day event)."""

    name: str = Field(min_length=1)
    start: date
    end: date | None = None

    @model_validator(mode="after")
    def _ordered(self) -> EventConfig:
        if self.end is not None and self.end < self.start:
            raise ValueError(f"event {self.name!r} ends ({self.end}) before it starts ({self.start})")
        return self


class TargetConfig(_Strict):
    """A SMART target: reach `value` (in the KPI's own units, 0.024 = 2.4%) by the day `by`."""

    value: float
    by: date


# Where a KPI's metrics come from: one model per `type` (demo, csv, parquet, sql, ga4).
from forecaster.sources.config import SourceConfig  # noqa: E402

SEVERITY_RANK = {"warning": 1, "critical": 2}


class RouteConfig(_Strict):
    """Where alerts go: a Slack channel for some KPIs (by name or tag), from a minimum severity.

    channel: `#name` or a channel ID. kpis, tags: which KPIs (both empty = every KPI).
    min_severity: `warning` (default) or `critical`. good_news: also send good news (default True).
    """

    channel: str = Field(min_length=1)
    kpis: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    min_severity: Literal["warning", "critical"] = "warning"
    good_news: bool = True

    def takes(self, kpi: str, tags: Sequence[str], severity: str) -> bool:
        """True when an alert of this KPI (with these tags) and severity goes to this channel."""
        if (self.kpis or self.tags) and kpi not in self.kpis and not set(tags) & set(self.tags):
            return False
        if severity == "good_news":
            return self.good_news
        return SEVERITY_RANK[severity] >= SEVERITY_RANK[self.min_severity]


class SnoozeConfig(_Strict):
    """Silence a KPI (one segment, or every segment) until a day (exclusive, in the timezone)."""

    kpi: str
    segment: dict[str, str] = Field(default_factory=dict)
    until: date
    reason: str = ""


class AlertingConfig(_Strict):
    """How alerts reach people.

    routes: channels and what each receives (default: everything to `#kpi-alerts`).
    repeat_hours: an ongoing incident is announced again after this many hours (default 24).
    dashboard_url: link template with `{kpi}`, `{segment}`, `{period}` (default none).
    max_hints: hints per alert in Slack (default 3; the CLI shows more).
    charts: upload a chart per alert into the message's thread (bot token only; default True).
    snoozes: silenced KPIs; `kpiwatch snooze` adds more to the state store.
    """

    routes: list[RouteConfig] = Field(default_factory=lambda: [RouteConfig(channel="#kpi-alerts")], min_length=1)
    repeat_hours: float = Field(default=24.0, gt=0)
    dashboard_url: str = ""

    @field_validator("dashboard_url")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        """Only {kpi}, {segment} and {period} are filled in; anything else would fail at alert time."""
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError as exc:
            raise ValueError(f"dashboard_url {value!r}: {exc}; write a literal brace as {{{{ or }}}}") from None
        unknown = sorted(names - {"kpi", "segment", "period"})
        if unknown:
            raise ValueError(f"dashboard_url has placeholder(s) {', '.join('{' + n + '}' for n in unknown)}; "
                             "allowed: {kpi}, {segment}, {period} (a literal brace is {{ or }})")
        return value
    max_hints: int = Field(default=3, ge=0, le=10)
    charts: bool = True
    snoozes: list[SnoozeConfig] = Field(default_factory=list)


class DaemonConfig(_Strict):
    """How `kpiwatch run` behaves.

    health_port: port of `/healthz` and `/metrics` (default 8321; 0 = off).
    bind: the address they listen on (default 127.0.0.1: this machine only; 0.0.0.0 or :: for
        every interface, e.g. inside a container whose port is published). They have no
        authentication: open them wider only behind a firewall or a private network.
    catch_up_periods: after downtime, judge at most this many missed periods per KPI, the
        latest ones (default 7).
    misfire_grace_seconds: a job that could not start on time still runs if it is at most this
        late (default 600; APScheduler's own default is 1 s, which drops jobs after a pause).
    job_timeout_seconds: one KPI's check (fits included) is stopped after this (default 900).
    source_failures: consecutive failed cycles of a KPI's source before one "source failing"
        alert (default 3).
    log_format: `text` (default) or `json`, one line per job.
    shutdown_grace: seconds from SIGTERM/SIGINT to exit (default 10, as `docker stop` waits):
        running checks are cancelled (judged again after the restart) and the outbox is flushed
        for what is left of it.
    """

    health_port: int = Field(default=8321, ge=0, le=65535)
    bind: str = "127.0.0.1"
    catch_up_periods: int = Field(default=7, ge=1, le=1000)
    misfire_grace_seconds: int = Field(default=600, ge=1)
    job_timeout_seconds: float = Field(default=900.0, gt=0)
    source_failures: int = Field(default=3, ge=1)
    log_format: Literal["text", "json"] = "text"
    shutdown_grace: float = Field(default=10.0, ge=0, le=3600)

    @field_validator("bind")
    @classmethod
    def _an_address(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value.strip()))
        except ValueError:
            raise ValueError(f"bind {value!r} is not an IP address; use 127.0.0.1 (this machine only, the "
                             "default), 0.0.0.0 (every interface, e.g. in a container) or ::") from None


class KPIConfig(_Strict):
    """One KPI: what to compute, which way is good, how to judge it.

    Exactly one of `metric` (a summed count or amount) or `ratio` (summed parts) is given.
    level: probability the forecast band holds for normal periods; outside it = anomalous
        (default 0.99, so about 1 normal period in 100 per series lies outside before guardrails).
    min_volume: guardrail; a ratio's denominator (a count's value) below this in a period is
        never alerted on (default 0).
    min_abs_change: guardrail; |actual - expected| below this (in the KPI's own units) is never
        alerted on (default 0).
    for_periods: alert only after this many consecutive anomalous periods (default 1).
    good_news: also report anomalies in the good direction, as good news (default False).
    event_margin: on a public holiday or retail peak the band widens by this fraction of the
        expected value (default 0.15): such effects are learned from only one or two past years.
    model: the detector's one-step model: ets (default), seasonal_naive, prophet or auto (ets or
        seasonal naive, whichever had the smaller one-step errors before each refit; with
        `model_params: {candidates: [ets, prophet]}` Prophet too); every one gets the same
        calibrated band (`forecaster.detect`).
    check_window: periods a check reports and stores (the band a chart draws) (default 7).
    related: KPIs to look at when this one alerts (same segment, same period), e.g.
        page_load_time and bounce_rate for conversion_rate; they must be configured too.
    mask_outliers: kept for old configs; no effect: the detector always keeps past anomalies out
        of its model and its band.
    phase, goal: the funnel phase (see, think, do, care) and what the KPI is for (catalogue text).
    target: a SMART target `{value, by}`, tracked by `kpiwatch goals`.
    tags: labels for routing alerts to channels (`alerting.routes[].tags`).
    schedule: when the daemon checks it: `every day at 07:00` (in `timezone`), `every hour at :10`,
        `every 30 seconds`, or a 5-field cron line (default: daily KPIs every day at 07:00,
        hourly ones every hour at :10).
    data_delay_hours: a period is judged only this long after it ends, when its data is complete
        (default 0; GA4 needs about 24-48).
    completeness: the daemon judges a period only when its raw rows reach this share of the
        median of the 28 periods before it (default 0.9; 0 = off). Meant for exports with a
        steady number of rows per period (a row per segment and hour); for event tables (a row
        per order) lower it or set 0. Sources that cannot count rows (query, ga4, demo) skip it.
        `kpiwatch check` judges the latest complete period of the week before instead.
    no_data_after_hours: a period still incomplete this many hours after it ended (plus the
        data delay) gets a "no data" message of its own and is skipped, never judged as a drop
        (default 24).
    """

    metric: str | None = None
    ratio: RatioConfig | None = None
    good: Direction = Direction.UP
    unit: str = ""
    description: str = ""
    freq: Literal["h", "D"] = "D"
    source: str = "default"
    segments: list[str] = Field(default_factory=list)
    filter: dict[str, list[str]] = Field(default_factory=dict)
    model: str = DEFAULT_MODEL
    model_params: dict[str, Any] = Field(default_factory=dict)
    level: float = Field(default=0.99, gt=0.5, lt=1.0)
    min_volume: float = Field(default=0.0, ge=0.0)
    min_abs_change: float = Field(default=0.0, ge=0.0)
    for_periods: int = Field(default=1, ge=1, le=30)
    good_news: bool = False
    event_margin: float = Field(default=0.15, ge=0.0, le=1.0)
    check_window: int = Field(default=7, ge=1, le=90)
    related: list[str] = Field(default_factory=list)
    mask_outliers: bool = True
    phase: Literal["see", "think", "do", "care"] | None = None
    goal: str = ""
    target: TargetConfig | None = None
    tags: list[str] = Field(default_factory=list)
    schedule: str | None = None
    data_delay_hours: float = Field(default=0.0, ge=0.0, le=24 * 14)
    completeness: float = Field(default=0.9, ge=0, le=1)
    no_data_after_hours: float = Field(default=24.0, gt=0)

    @field_validator("schedule")
    @classmethod
    def _known_schedule(cls, value: str | None) -> str | None:
        if value is not None:
            from forecaster.schedule import parse_schedule

            parse_schedule(value, "UTC")  # raises ValueError with the allowed forms
        return value

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        allowed = model_names()
        if value not in allowed:
            raise ValueError(f"unknown model {value!r}; choose one of: {', '.join(allowed)}")
        return value

    @model_validator(mode="after")
    def _one_formula(self) -> KPIConfig:
        if (self.metric is None) == (self.ratio is None):
            raise ValueError("give exactly one of `metric: <column>` or `ratio: {numerator, denominator}`")
        if self.for_periods > self.check_window:
            raise ValueError(
                f"for_periods ({self.for_periods}) is larger than check_window ({self.check_window}), so it "
                "could never alert; raise check_window or lower for_periods"
            )
        return self

    @property
    def metrics(self) -> list[str]:
        """The source columns this KPI sums."""
        if self.ratio is not None:
            return [self.ratio.numerator, self.ratio.denominator]
        return [self.metric] if self.metric else []

    @property
    def dimensions(self) -> list[str]:
        """Every dimension the KPI needs from its source: its segments and its filters."""
        return sorted(set(self.segments) | set(self.filter))


class Settings(_Strict):
    """The whole config file.

    timezone: IANA name in which days are cut and "now" is read (default UTC).
    country: ISO code whose public holidays the models learn (default none).
    state_dir: folder of the default state store (default `.kpiwatch`, relative to the working
        directory).
    reselect_days: kept for old configs; no effect: `auto` chooses again at each refit of the
        detector, whose state the store keeps.
    events: the team's own events (campaign launches, promotions, releases): the models learn
        their effect like a holiday's, the band widens on them, and alerts name them.
    state: SQLAlchemy URL of the state store (evaluations, outbox, snoozes); default
        `sqlite:///<state_dir>/state.db`; PostgreSQL for production (`${KPIWATCH_STATE_URL}`).
    alerting: Slack routes, repeat interval, dashboard link, snoozes.
    daemon: `kpiwatch run`'s health port, catch-up, time limits, logging.
    """

    timezone: str = "UTC"
    country: str | None = None
    state_dir: str = ".kpiwatch"
    reselect_days: int = Field(default=30, ge=1, le=365)
    events: list[EventConfig] = Field(default_factory=list)
    state: str | None = None
    alerting: AlertingConfig = Field(default_factory=AlertingConfig)
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)
    sources: dict[str, SourceConfig]
    kpis: dict[str, KPIConfig] = Field(min_length=1)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r}; use an IANA name such as Europe/Amsterdam") from None
        return value

    @model_validator(mode="after")
    def _related_exist(self) -> Settings:
        for name, kpi in self.kpis.items():
            unknown = [other for other in kpi.related if other not in self.kpis]
            if unknown:
                raise ValueError(
                    f"kpis.{name}.related names {', '.join(repr(u) for u in unknown)}, which is not a configured "
                    f"KPI (configured: {', '.join(sorted(self.kpis))})"
                )
        return self

    @model_validator(mode="after")
    def _sources_exist(self) -> Settings:
        for name, kpi in self.kpis.items():
            if kpi.source not in self.sources:
                raise ValueError(
                    f"kpi {name!r} uses source {kpi.source!r}, which is not under `sources:` "
                    f"(defined: {', '.join(sorted(self.sources))})"
                )
        return self

    @model_validator(mode="after")
    def _alerting_names_exist(self) -> Settings:
        named = [(f"alerting.routes[{i}].kpis", k) for i, r in enumerate(self.alerting.routes) for k in r.kpis]
        named += [(f"alerting.snoozes[{i}].kpi", s.kpi) for i, s in enumerate(self.alerting.snoozes)]
        for where, name in named:
            if name not in self.kpis:
                raise ValueError(f"{where} names {name!r}, which is not a configured KPI "
                                 f"(configured: {', '.join(sorted(self.kpis))})")
        return self

    @property
    def state_url(self) -> str:
        """The state store's URL: `state`, else a SQLite file in `state_dir`."""
        if self.state:
            return self.state
        return f"sqlite:///{Path(self.state_dir).expanduser() / 'state.db'}"

    @property
    def calendar(self) -> Calendar:
        """Holidays of `country`, the retail peaks, and the configured `events`."""
        own = tuple(UserEvent(e.name, e.start, e.end or e.start) for e in self.events)
        return Calendar(self.country, True, own)

    def kpi(self, name: str) -> KPIConfig:
        """The KPI by name; an unknown name lists the configured ones."""
        if name not in self.kpis:
            raise BadInputError(f"unknown KPI {name!r}; the config defines: {', '.join(sorted(self.kpis))}")
        return self.kpis[name]


def config_path(explicit: str | Path | None) -> Path:
    """`--config`, else `$KPIWATCH_CONFIG`, else `config/kpiwatch.yaml`."""
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("KPIWATCH_CONFIG") or DEFAULT_CONFIG)


def load_config(path: str | Path | None = None) -> Settings:
    """Read, expand `${VAR}` and validate the config file; ConfigError on any problem."""
    file = config_path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        # A path given on the command line is what to fix; without one, say where else to give it.
        hint = "check the --config path" if path else "pass --config FILE or set KPIWATCH_CONFIG"
        raise ConfigError(f"{file}: no such config file; {hint}") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read ({exc.strerror})") from None
    return parse_config(text, origin=str(file))


def parse_config(text: str, origin: str = "config") -> Settings:
    """Validate config text (YAML); `origin` names it in error messages."""
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{origin}: not valid YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: expected a mapping with `sources:` and `kpis:` at the top")
    try:
        raw = _expand_env(raw, origin)
    except RecursionError:  # a self-referencing alias such as `x: &a [*a]`
        raise ConfigError(f"{origin}: a YAML alias refers to itself; remove the loop") from None
    if isinstance(raw.get("kpis"), dict):
        try:  # KPIs named after (or `catalog:` pointing at) a catalogue entry start from it
            raw = {**raw, "kpis": with_catalog(raw["kpis"])}
        except BadInputError as exc:
            raise ConfigError(f"{origin}: {exc}") from None
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{origin}: {_first_error(exc)}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice (PyYAML silently keeps the last one, so a
    copy-pasted KPI block would silently replace another)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice; keep one", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _expand_env(value: Any, origin: str) -> Any:
    """Replace `${VAR}` in every string with the environment's value."""
    if isinstance(value, dict):
        return {key: _expand_env(item, origin) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand_env(item, origin) for item in value]
    if isinstance(value, str):
        return _ENV_VAR.sub(lambda match: _env(match.group(1), origin), value)
    return value


def _env(name: str, origin: str) -> str:
    if name not in os.environ:
        raise ConfigError(f"{origin}: ${{{name}}} is used but not set in the environment; export {name}=...")
    return os.environ[name]


def _first_error(exc: ValidationError) -> str:
    """One line for the first problem: the dotted key, what is wrong, the value given."""
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(error["loc"])
        return f"{key}: unknown key{f'; allowed here: {allowed}' if allowed else ''}"
    if kind == "missing":
        return f"{key}: required key is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    given = error.get("input")
    plain = not isinstance(given, dict | list) and given is not None
    shown = f" (got {given!r})" if plain and repr(given) not in message else ""
    return f"{key}: {message}{shown}"


def _allowed_keys(loc: tuple[Any, ...]) -> str:
    """The keys a model accepts at `loc` (walks Settings -> KPIConfig -> RatioConfig ...)."""
    model: type[BaseModel] = Settings
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None:
            continue  # a dict key such as a KPI name
        annotation = field.annotation
        inner = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)]
        nested = [a for a in inner if issubclass(a, BaseModel)]
        if nested:
            model = nested[-1]
    return ", ".join(model.model_fields)
