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
from datetime import date, timedelta
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
from forecaster.sources.urls import parse_database_url
from forecaster.models.base import model_names
from forecaster.types import BadInputError, Direction
from forecaster.i18n import DEFAULT_LOCALE, LOCALES
from forecaster.units import CURRENCY_UNIT, DEFAULT_CURRENCY, currency_of, currency_symbol, is_currency_code

DEFAULT_CONFIG = Path("config/kpiwatch.yaml")
# Bounds on what is read, so a config cannot make kpiwatch hang or run out of memory: a config is
# a few kilobytes; YAML aliases (`*name`) may expand it, so the expanded size is bounded too
# ("billion laughs": 590 bytes expanding to 10^8 values).
MAX_CONFIG_BYTES = 1_000_000
MAX_YAML_DEPTH = 50
MAX_YAML_VALUES = 100_000
_YEAR_HOURS = 366 * 24
_WEEK_SECONDS = 7 * 24 * 3600
AUTO_MODEL = "auto"
# The detector's model when a KPI names none: ETS without trend, stepped one period at a time.
# `auto` (ETS or seasonal naive by their one-step errors) judged no better on the daily incident
# benchmark and worse on NAB dev, at twice the cost (BENCHMARKS.md).
DEFAULT_MODEL = "ets"
# Keys whose values are never echoed in an error (they may hold a password or a token).
_SECRET_KEYS = frozenset({"url", "state"})
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # tab and newline are fine in text
_ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(BadInputError):
    """The config file is missing, not YAML, or breaks a rule. Exit 2."""


class _Strict(BaseModel):
    """Unknown keys are errors: a typo must never be silently ignored. Numbers are finite: `.inf`
    or `.nan` would pass every `gt=0` and fail every job later."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class RatioConfig(_Strict):
    """A ratio of summed parts: sum(numerator) / sum(denominator) per period and segment."""

    numerator: str
    denominator: str

    @model_validator(mode="after")
    def _two_metrics(self) -> RatioConfig:
        if self.numerator == self.denominator:
            raise ValueError(f"ratio of {self.numerator!r} over itself is always 1; give two different metrics")
        return self


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
    repeat_hours: an ongoing incident is announced again after this many hours (default 24, at
        most 8784, a year).
    dashboard_url: link template with `{kpi}`, `{segment}`, `{period}` (default none).
    report_url: where the report is served (`kpiwatch run` serves it at /report behind your proxy),
        e.g. `https://kpiwatch.example.com/report`; cards link to `{report_url}/kpi/<kpi>.html`
        (default none: no link).
    max_hints: hints per alert in Slack (default 3; the CLI shows more).
    charts: upload a chart per alert into the message's thread (bot token only; default True).
    snoozes: silenced KPIs; `kpiwatch snooze` adds more to the state store.
    """

    routes: list[RouteConfig] = Field(default_factory=lambda: [RouteConfig(channel="#kpi-alerts")], min_length=1)
    repeat_hours: float = Field(default=24.0, gt=0, le=_YEAR_HOURS)
    dashboard_url: str = ""

    @field_validator("dashboard_url")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        """Only {kpi}, {segment} and {period} are filled in; anything else would fail at alert time."""
        try:
            fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(value)
                      if name is not None]
        except ValueError as exc:
            raise ValueError(f"dashboard_url {value!r}: {exc}; write a literal brace as {{{{ or }}}}") from None
        names = {name for name, _, _ in fields}
        unknown = sorted(names - {"kpi", "segment", "period"})
        if unknown:
            raise ValueError(f"dashboard_url has placeholder(s) {', '.join('{' + n + '}' for n in unknown)}; "
                             "allowed: {kpi}, {segment}, {period} (a literal brace is {{ or }})")
        formatted = [f"{{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}"
                     for name, spec, conversion in fields if spec or conversion]
        if formatted:  # `{kpi:d}` fails on a text at alert time, after the alert was judged
            raise ValueError(f"dashboard_url placeholder {formatted[0]} has a format; write plain {{kpi}}, "
                             "{segment}, {period}")
        return value
    report_url: str = ""

    @field_validator("report_url")
    @classmethod
    def _a_web_address(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith(("https://", "http://")):
            raise ValueError(f"report_url {value[:80]!r} is not a web address; write it as "
                             "https://kpiwatch.example.com/report (the daemon serves the report at /report)")
        return value.rstrip("/")
    max_hints: int = Field(default=3, ge=0, le=10)
    charts: bool = True
    snoozes: list[SnoozeConfig] = Field(default_factory=list)

    def channels_for(self, kpi: str, tags: Sequence[str], severity: str) -> list[str]:
        """The channels an alert goes to, each once, in route order: two routes to one channel
        (`- channel: "#a"` and `- {channel: "#a", kpis: [cpa]}`) must not list it twice there."""
        return list(dict.fromkeys(r.channel for r in self.routes if r.takes(kpi, tags, severity)))


class DaemonConfig(_Strict):
    """How `kpiwatch run` behaves.

    health_port: port of `/healthz` and `/metrics` (default 8321; 0 = off).
    bind: the address they listen on (default 127.0.0.1: this machine only; 0.0.0.0 or :: for
        every interface, e.g. inside a container whose port is published). They have no
        authentication: open them wider only behind a firewall or a private network.
    catch_up_periods: after downtime, judge at most this many missed periods per KPI, the
        latest ones (default 7).
    misfire_grace_seconds: a job that could not start on time still runs if it is at most this
        late (default 600, at most a week; APScheduler's own default is 1 s, which drops jobs after
        a pause).
    job_timeout_seconds: one KPI's check (fits included) is stopped after this (default 900, at
        most a week).
    source_failures: consecutive failed cycles of a KPI's source before one "source failing"
        alert (default 3, at most 1000).
    log_format: `text` (default) or `json`, one line per job.
    shutdown_grace: seconds from SIGTERM/SIGINT to exit (default 10, as `docker stop` waits):
        running checks are cancelled (judged again after the restart) and the outbox is flushed
        for what is left of it.
    """

    health_port: int = Field(default=8321, ge=0, le=65535)
    bind: str = "127.0.0.1"
    catch_up_periods: int = Field(default=7, ge=1, le=1000)
    misfire_grace_seconds: int = Field(default=600, ge=1, le=_WEEK_SECONDS)
    job_timeout_seconds: float = Field(default=900.0, gt=0, le=_WEEK_SECONDS)
    source_failures: int = Field(default=3, ge=1, le=1000)
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


class DigestConfig(_Strict):
    """The weekly digest (`alerts.digest`): last week's KPIs by funnel phase, one Slack message per channel.

    enabled: send it (default True; false: the daemon schedules no digest job).
    schedule: when the daemon sends it, in `timezone` (default `every monday at 09:00`); any form
        a KPI's `schedule` takes. The digest covers the last full week (Monday to Sunday) before it.
    channels: where it goes (default: every channel of `alerting.routes`); a routed channel gets
        the KPIs its routes take, any other channel every KPI.
    top: KPIs listed as furthest from expected and from their targets (default 3, 1..20).
    """

    enabled: bool = True
    schedule: str = "every monday at 09:00"
    channels: list[str] = Field(default_factory=list)
    top: int = Field(default=3, ge=1, le=20)

    @field_validator("schedule")
    @classmethod
    def _known_schedule(cls, value: str) -> str:
        from forecaster.schedule import parse_schedule

        parse_schedule(value, "UTC")  # raises ValueError naming the allowed forms
        return value


_EXECUTOR_SCHEMES = ("tcp", "tls", "ucx", "ws", "wss")


class ExecutorConfig(_Strict):
    """Where the per-series work runs (`forecaster.executor`); sources, the store and Slack stay
    in the daemon's process.

    type: `local` (default): worker processes on this machine; `dask`: a Dask cluster (`pip
        install 'kpiwatch[dask]'`).
    address: the Dask scheduler, `tcp://host:8786` (dask only). Without it, dask starts a local
        Dask cluster on this machine, for trying it out.
    workers: items judged at once: the local worker processes, or the local Dask cluster's
        (default: one per core; at most 1024). Not with an address: there the cluster's workers
        decide.
    connect_timeout: seconds to wait for the Dask scheduler (default 10; no effect with local).
    """

    type: Literal["local", "dask"] = "local"
    address: str | None = None
    workers: int | None = Field(default=None, ge=1, le=1024)
    connect_timeout: float = Field(default=10.0, gt=0, le=3600)

    @field_validator("address")
    @classmethod
    def _a_scheduler(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        scheme, sep, rest = value.partition("://")
        host, colon, port = rest.rpartition(":")
        if not sep or scheme not in _EXECUTOR_SCHEMES or not host or not colon or not port.isdigit():
            raise ValueError(f"{value!r} is not a Dask scheduler address; write tcp://host:port, e.g. "
                             "tcp://10.0.0.5:8786 (what `dask scheduler` prints)")
        return value

    @model_validator(mode="after")
    def _address_only_for_dask(self) -> ExecutorConfig:
        if self.type == "dask":
            if self.address is not None and self.workers is not None:
                raise ValueError(f"workers ({self.workers}) is for a local cluster; with address {self.address} "
                                 "the cluster's workers decide (start more with `dask worker`): remove workers")
            return self
        # connect_timeout is not refused here: it has a default, and a dumped config holds it whatever the type
        if self.address is not None:
            raise ValueError(f"address is only for type dask (type is {self.type}); set `type: dask` or remove "
                             "address")
        return self


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
        (default 24, at most 8784, a year).
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
    no_data_after_hours: float = Field(default=24.0, gt=0, le=_YEAR_HOURS)

    @field_validator("schedule")
    @classmethod
    def _known_schedule(cls, value: str | None) -> str | None:
        if value is not None:
            from forecaster.schedule import parse_schedule

            try:  # raises ValueError with the allowed forms
                trigger = parse_schedule(value, "UTC")
            except OverflowError:  # `every 99999999999999999999 seconds`
                trigger = None
            interval = getattr(trigger, "interval", timedelta(0))
            if trigger is None or interval > timedelta(hours=_YEAR_HOURS):
                raise ValueError(f"schedule {value!r}: the interval is longer than a year; use at most "
                                 f"every {_YEAR_HOURS} hours")
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
    currency: ISO 4217 code of money amounts (an impact "≈ $3,812 more ad cost", a KPI with
        `unit: currency`) where the KPI's own `unit` names no currency (ROAS's revenue). Default:
        the one currency the KPIs' units name (`unit: "$"` -> USD), else EUR.
    locale: the language of every text a person reads (alerts, hints, Slack cards, CLI verdicts)
        and the conventions of its numbers and dates: "en" (default) or "nl" (`1.234,5`,
        `€ 1.234`, `wo 10 dec 2025`); `--locale` on the CLI overrides it.
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
    executor: where the per-series work runs: `{type: local}` (default: worker processes on this
        machine) or `{type: dask, address: tcp://host:8786}` (a Dask cluster; `pip install
        'kpiwatch[dask]'`); also `workers`, `connect_timeout`.
    digest: the weekly Slack digest: `{enabled, schedule, channels, top}` (`DigestConfig`).
    """

    timezone: str = "UTC"
    country: str | None = None
    currency: str = DEFAULT_CURRENCY
    locale: str = DEFAULT_LOCALE
    state_dir: str = ".kpiwatch"
    reselect_days: int = Field(default=30, ge=1, le=365)
    events: list[EventConfig] = Field(default_factory=list)
    state: str | None = None
    alerting: AlertingConfig = Field(default_factory=AlertingConfig)
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    digest: DigestConfig = Field(default_factory=DigestConfig)
    sources: dict[str, SourceConfig]
    kpis: dict[str, KPIConfig] = Field(min_length=1)

    @field_validator("state")
    @classmethod
    def _state_parses(cls, value: str | None) -> str | None:
        """Refused at load, naming only the scheme: the store would otherwise fail later, and a
        URL that does not parse cannot be shown with its password masked."""
        if value is not None:
            parse_database_url(value)
        return value

    @field_validator("locale")
    @classmethod
    def _known_locale(cls, value: str) -> str:
        if value not in LOCALES:
            raise ValueError(f"unknown locale {value!r}; choose one of: {', '.join(LOCALES)}")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r}; use an IANA name such as Europe/Amsterdam") from None
        return value

    @model_validator(mode="before")
    @classmethod
    def _currency_of_units(cls, raw: Any) -> Any:
        """Without `currency:`, the one currency the KPIs' units name: a config whose money KPIs
        say `unit: "$"` prices ROAS's revenue in dollars too, not in the EUR default."""
        if not isinstance(raw, dict) or "currency" in raw or not isinstance(raw.get("kpis"), dict):
            return raw
        named = {currency_of(kpi["unit"]) for kpi in raw["kpis"].values()
                 if isinstance(kpi, dict) and isinstance(kpi.get("unit"), str)} - {None}
        return {**raw, "currency": named.pop()} if len(named) == 1 else raw

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        value = value.strip().upper()  # "usd" can only mean USD here
        if not is_currency_code(value):
            raise ValueError(f"unknown currency {value!r}; use an ISO 4217 code such as EUR, USD or GBP")
        return value

    @model_validator(mode="after")
    def _money_in_currency(self) -> Settings:
        """`unit: currency` (the catalogue's money KPIs) becomes the symbol of `currency`, so every
        face shows a KPI in one spelling ("$", "€"). The KPIs are replaced in the dict, not
        mutated: a KPIConfig is frozen, the dict is not."""
        for name, kpi in self.kpis.items():
            if kpi.unit == CURRENCY_UNIT:
                self.kpis[name] = kpi.model_copy(update={"unit": currency_symbol(self.currency)})
        return self

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
        with file.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)  # never more: a wrong --config may be a huge file
    except FileNotFoundError:
        # A path given on the command line is what to fix; without one, say where else to give it.
        hint = "check the --config path" if path else "pass --config FILE or set KPIWATCH_CONFIG"
        raise ConfigError(f"{file}: no such config file; {hint}") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read ({exc.strerror})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{file}: larger than {MAX_CONFIG_BYTES:,} bytes; is it the config file? (a config is a "
                          "few kilobytes)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                          "save it as UTF-8") from None
    return parse_config(text, origin=str(file))


def parse_config(text: str, origin: str = "config") -> Settings:
    """Validate config text (YAML); `origin` names it in error messages."""
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except RecursionError:  # a deep structure that the depth limit did not stop (flow keys)
        raise ConfigError(f"{origin}: nested more than {MAX_YAML_DEPTH} levels deep; flatten it") from None
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
    if len(text) > MAX_CONFIG_BYTES:  # parse_config is public: text may come from elsewhere
        raise ConfigError(f"{origin}: larger than {MAX_CONFIG_BYTES:,} characters; a config is a few kilobytes")
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
    copy-pasted KPI block would silently replace another), a key that is a list or a map, and
    a document nested deeper than MAX_YAML_DEPTH or expanding (through aliases) to more than
    MAX_YAML_VALUES values."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        # Composing recurses once per level: stop before Python's recursion limit does.
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_YAML_DEPTH} levels deep; "
                                                  "flatten it", self.peek_event().start_mark)
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._depth -= 1

    def construct_document(self, node: yaml.Node) -> Any:
        # Aliases share nodes, so the node graph is small while what it stands for is not.
        if _expanded_size(node, {}, set()) > MAX_YAML_VALUES:
            raise yaml.constructor.ConstructorError(
                None, None, f"expands to more than {MAX_YAML_VALUES:,} values through aliases (*name); "
                "use fewer aliases", node.start_mark)
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise yaml.constructor.ConstructorError(
                    None, None, "a key is a list or a map; keys are plain names", key_node.start_mark)
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice; keep one", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """How many values `node` stands for with every alias expanded (memoised per node, so a
    bomb of nested aliases is counted in linear time); a node inside itself counts as too many."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:  # `x: &a [*a]`: infinite
        return MAX_YAML_VALUES + 1
    open_nodes.add(key)
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    total = 1
    for child in children:
        total += _expanded_size(child, sizes, open_nodes)
        if total > MAX_YAML_VALUES:
            break
    open_nodes.discard(key)
    sizes[key] = total
    return total


def _expand_env(value: Any, origin: str, where: str = "") -> Any:
    """Replace `${VAR}` in every string with the environment's value; a control character (a NUL,
    an escape) in a key or a string is refused: it breaks file names, logs and Slack text later."""
    if isinstance(value, dict):
        return {_plain(key, origin, where): _expand_env(item, origin, f"{where}.{key}" if where else str(key))
                for key, item in value.items()}
    if isinstance(value, list):
        return [_expand_env(item, origin, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, str):
        return _ENV_VAR.sub(lambda match: _env(match.group(1), origin), _plain(value, origin, where))
    return value


def _plain(value: Any, origin: str, where: str) -> Any:
    """`value` unchanged unless it is text holding a control character (ConfigError)."""
    if isinstance(value, str):
        bad = _CONTROL.search(value)
        if bad:
            raise ConfigError(f"{origin}: {where or '(top level)'}: {value[:bad.start()][-20:]!r}... holds the control "
                              f"character {bad.group()!r}; remove it")
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
    if loc_names(error["loc"]) & _SECRET_KEYS:
        given = None  # a URL may hold a password: its validator's message names what is wrong
    plain = not isinstance(given, dict | list) and given is not None
    shown = f" (got {given!r})" if plain and repr(given) not in message else ""
    return f"{key}: {message}{shown}"


def loc_names(loc: tuple[Any, ...]) -> set[str]:
    """The key names along an error's location."""
    return {str(part) for part in loc}


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
