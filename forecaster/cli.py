"""`kpiwatch ...`: argument parsing and printing only; the work is in `forecaster.pipeline`.

Every domain error (KPIWatchError) becomes one line on stderr and its exit code (2 bad input,
3 a source failed) at one boundary, `_ErrorBoundary`: never a traceback.
"""

from __future__ import annotations

import contextvars
import dataclasses
import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from forecaster.catalog import bundled_config_text
from forecaster.i18n import LOCALES, set_locale, t
from forecaster.pipeline import CheckReport, check, forecast_series, kpi_total_series
from forecaster.settings import Settings, config_path, load_config, parse_config
from forecaster.sources.urls import shown_url
from forecaster.types import (
    Alert,
    BadInputError,
    Forecast,
    KPISeries,
    KPIWatchError,
    segment_key,
)
from forecaster.units import format_period, format_value

if TYPE_CHECKING:  # the CLI face: only it may name alerts (imported where used, after a verdict)
    from alerts.delivery import DeliveryPolicy
    from alerts.grouping import AlertGroup
    from forecaster.demo import Incident

# Piped into a file or CI log, rich would assume 80 columns and fold every table.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class _OptionError(click.BadParameter):
    """A bad option value whose message is complete as it is (names the option, the rule, the value)."""

    def format_message(self) -> str:
        return self.message


class _NumberRange:
    """Mixin for click's IntRange/FloatRange: a value out of range (or not a number, or nan) is
    refused in one line that names the option as typed, the value, the rule and an example:
    "--horizon '-3': `horizon` must be a whole number of periods >= 1, e.g. --horizon 28".
    (Checked where it enters, so the message says `--horizon`, not the model's `horizon`.)"""

    rule: str
    example: str

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            number = super().convert(value, param, ctx)  # type: ignore[misc]
        except click.BadParameter:
            number = math.nan
        if not math.isfinite(number):  # FloatRange lets nan through: every comparison with it is False
            option = param.opts[0] if param is not None and param.opts else "value"
            raise _OptionError(f"{option} {str(value)!r}: `{option.lstrip('-')}` must be {self.rule}, "
                               f"e.g. {option} {self.example}", ctx=ctx, param=param) from None
        return number


class _WholeRange(_NumberRange, click.IntRange):
    """A whole-number option in [minimum, maximum] (see `_NumberRange`)."""

    def __init__(self, minimum: int, maximum: int | None = None, *, unit: str = "", example: int) -> None:
        super().__init__(minimum, maximum)
        of = f" of {unit}" if unit else ""
        self.rule = (f"a whole number{of} >= {minimum}" if maximum is None
                     else f"a whole number{of} from {minimum} to {maximum}")
        self.example = str(example)


class _Probability(_NumberRange, click.FloatRange):
    """A probability option strictly between 0 and 1, such as a band's level (see `_NumberRange`)."""

    def __init__(self, example: float) -> None:
        super().__init__(0.0, 1.0, min_open=True, max_open=True)
        self.rule = "between 0 and 1 (exclusive)"
        self.example = f"{example} for a {example:.0%} band"  # a probability, not a percentage


class _ErrorBoundary(click.Group):
    """Turns every KPIWatchError raised by a command into one stderr line and its exit code, and
    a file the user named that cannot be written or read (an output path under a file, a
    read-only folder) into one line and exit 2. Click's own usage errors (a bad option value, an
    unknown option, a missing one) become one line and exit 2 as well, instead of click's
    three-line usage block."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            # A command runs in a copy of the context: the locale it sets (`--locale`, the
            # config's `locale:`) ends with it, so in-process callers (tests) keep theirs.
            return contextvars.copy_context().run(super().invoke, ctx)
        except click.exceptions.NoArgsIsHelpError:
            raise  # `kpiwatch sources` alone: click prints the group's help, as asked
        except click.UsageError as exc:
            click.echo(f"kpiwatch: error: {_usage_message(exc)}", err=True)
            ctx.exit(BadInputError.exit_code)
        except KPIWatchError as exc:
            click.echo(f"kpiwatch: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except BrokenPipeError:
            # The reader went away (`kpiwatch check --format json | head`): nothing to say, and
            # Python must not complain while flushing the dead pipe on exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(1)
        except OSError as exc:
            if exc.filename is None:  # not a path the user named: the system said no
                click.echo(f"kpiwatch: error: {exc.strerror or exc}", err=True)
                ctx.exit(1)
            click.echo(f"kpiwatch: error: cannot use {exc.filename}: {exc.strerror or exc}; choose another path "
                       "or fix its permissions", err=True)
            ctx.exit(BadInputError.exit_code)


def _usage_message(exc: click.UsageError) -> str:
    """One line for a click usage error: ours as they are, click's with where to look."""
    if isinstance(exc, _OptionError):
        return exc.format_message()
    where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
    return " ".join(exc.format_message().split()).rstrip(".") + where


@click.group(cls=_ErrorBoundary, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kpiwatch")
def cli() -> None:
    """kpiwatch: watches marketing KPIs, forecasts them, and says when and where something moved."""


@cli.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-out"),
              show_default=True, help="Folder for the alert charts (PNG).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--locale", "locale", type=click.Choice(LOCALES), help="Language of the texts (default: the config's, en).")
def demo(out_dir: Path, fmt: str, locale: str | None) -> None:
    """Run the whole pipeline on the built-in demo shop data (no config, no network)."""
    from forecaster.demo import DEMO_NOW

    settings = parse_config(bundled_config_text("kpiwatch.yaml"), origin="config/kpiwatch.yaml")
    _set_command_locale(locale, settings)
    report = _run_check(settings, at=DEMO_NOW, kpis=None, quiet=fmt == "json")
    charts = _write_charts(report, out_dir)
    if fmt == "json":
        _print_json(report, charts, settings, annotate=_demo_injected)
        return
    day = format_period(next(iter(report.period.values())), "D")
    out.print(t("cli.demo", kpis=len(settings.kpis), series=len(report.results), day=day,
                clock=f"{DEMO_NOW:%Y-%m-%d %H:%M}"))
    _print_alerts(report, charts, settings, annotate=_demo_injected_line)


def _demo_injected_line(group: AlertGroup) -> str:
    """The line under a demo incident's header naming the injected incident it is (the README's
    table numbers them 1-4; kpiwatch numbers what it finds 1, 2, ...); "" when none."""
    injected = _demo_injected(group).get("injected")
    return t("cli.demo_injected", number=injected["number"], name=injected["name"]) if injected else ""


def _demo_injected(group: AlertGroup) -> dict[str, Any]:
    """`{"injected": {"number", "name"}}` for an incident that is one of the demo's injected
    ones (`forecaster.demo.INCIDENTS`): a member on a day it ran whose KPI and segment are among
    its expected alerts, or whose segment is where it was injected; the one most members match.
    {} when none matches."""
    from forecaster.demo import INCIDENTS

    def matches(incident: Incident) -> int:
        return sum(1 for alert in group.members if _injected_into(alert, incident))

    best = max(INCIDENTS, key=matches)
    return {"injected": {"number": best.number, "name": best.name}} if matches(best) else {}


def _injected_into(alert: Alert, incident: Incident) -> bool:
    """Whether the demo's injected incident explains the alert."""
    anomaly = alert.anomaly
    if not incident.start <= anomaly.period.date() <= incident.end:  # days are labelled by their local date
        return False
    expected = {(e.kpi, segment_key(e.segment)) for e in incident.expected}
    where = segment_key(anomaly.segment)
    return (anomaly.kpi, where) in expected or where == segment_key(incident.segment)


@cli.command()
@click.argument("kpi", required=False)
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="Config file.")
@click.option("--csv", "csv_file", type=click.Path(dir_okay=False, path_type=Path), help="Forecast a CSV file instead of a KPI.")
@click.option("--timestamp-col", default="timestamp", show_default=True, help="Timestamp column of --csv.")
@click.option("--value-col", default="value", show_default=True, help="Value column of --csv.")
@click.option("--segment", "segments", multiple=True, metavar="DIM=VALUE", help="One segment of the KPI, e.g. device=mobile.")
@click.option("--horizon", default=28, show_default=True, type=_WholeRange(1, unit="periods", example=28),
              help="Periods to forecast.")
@click.option("--level", default=0.95, show_default=True, type=_Probability(example=0.95),
              help="Probability of the band (0-1).")
@click.option("--model", default="auto", show_default=True, help="auto, ets, prophet or seasonal_naive.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Also write a PNG chart here.")
@click.option("--locale", "locale", type=click.Choice(LOCALES), help="Language of the texts (default: the config's).")
def forecast(
    kpi: str | None, config_file: Path | None, csv_file: Path | None, timestamp_col: str, value_col: str,
    segments: tuple[str, ...], horizon: int, level: float, model: str, fmt: str, plot: Path | None,
    locale: str | None,
) -> None:
    """Forecast a configured KPI (or a --csv file) with its prediction band."""
    if (kpi is None) == (csv_file is None):
        raise BadInputError("give a KPI name or --csv FILE (one of the two)")
    country = None
    if csv_file is not None:
        from forecaster.sources.csv import read_series_csv

        _set_command_locale(locale)
        series = read_series_csv(csv_file, timestamp_col, value_col, name=f"{csv_file.name}:{value_col}")
        unit = ""
    else:
        settings = load_config(config_file)
        _set_command_locale(locale, settings)
        series = kpi_total_series(settings, kpi or "", _parse_segment(segments))
        country, unit = settings.country, settings.kpi(kpi or "").unit
    with _spinner(f"fitting {escape(model)} on {len(series.values)} periods of {escape(series.label)}",
                  quiet=fmt != "table"):
        result = forecast_series(series, horizon, level, model=model, country=country)
    _print_forecast(series, result, fmt, unit)
    if plot is not None:
        from alerts.chart import render_chart

        render_chart(plot, series.values, result, title=t("commands.chart_title", label=series.label, model=result.model),
                     unit=unit)
        err.print(t("commands.chart_written", path=plot), markup=False)


@cli.command(name="check")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="Config file.")
@click.option("--kpi", "kpis", multiple=True, help="Only this KPI (repeatable).")
@click.option("--at", "at", help="Judge as if it were this time (ISO 8601; no zone = the config's timezone).")
@click.option("--dry-run", is_flag=True, help="Print the alerts, send nothing.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="Write alert charts here.")
@click.option("--locale", "locale", type=click.Choice(LOCALES), help="Language of the texts (default: the config's).")
def check_command(
    config_file: Path | None, kpis: tuple[str, ...], at: str | None, dry_run: bool, fmt: str, out_dir: Path | None,
    locale: str | None,
) -> None:
    """Judge the latest closed period of every KPI now and report the alerts."""
    settings = load_config(config_file)
    _set_command_locale(locale, settings)  # the texts of alerts, hints and cards are built in it
    for name in kpis:
        settings.kpi(name)  # an unknown name fails here, before any work
    moment = _parse_at(at, settings)
    report = _run_check(settings, at=moment, kpis=kpis or None, quiet=fmt == "json", require_complete=True,
                        feedback=_stored_feedback(settings, create=not dry_run))
    charts = _write_charts(report, out_dir) if out_dir else {}
    if fmt == "json":
        _print_json(report, charts, settings)
    else:
        out.print(_judged_line(report, settings, moment), markup=False)
        _print_alerts(report, charts, settings)
    if not dry_run:
        _send(report, settings)


def _judged_line(report: CheckReport, settings: Settings, at: pd.Timestamp | None) -> str:
    """The check's first line: which period(s) it judged, so a misread --at shows at once:
    "Judged Wed 10 Dec 2025 (7 KPIs), as of 2025-12-11 08:00 CET"."""
    by_period: dict[str, list[str]] = {}
    for kpi, period in report.period.items():
        by_period.setdefault(format_period(period, settings.kpi(kpi).freq), []).append(kpi)
    when = t("cli.as_of", at=f"{at:%Y-%m-%d %H:%M %Z}") if at is not None else ""
    if not by_period:
        return t("cli.judged_none", when=when)
    if len(by_period) == 1:
        (day, names), = by_period.items()
        return t("cli.judged_one_kpi" if len(names) == 1 else "cli.judged_kpis", period=day, count=len(names), when=when)
    each = "; ".join(f"{day} ({', '.join(names)})" for day, names in by_period.items())
    return t("cli.judged_each", each=each, when=when)


def _send(report: CheckReport, settings: Settings, policy: DeliveryPolicy | None = None) -> None:
    """Store the check, queue its messages and deliver them (retries waited for as `policy`
    says; default `DeliveryPolicy()`, up to 60 s); one line on stderr: the summary, or the
    Slack failure (exit 3; what was queued stays in the outbox)."""
    from alerts.delivery import DeliveryPolicy
    from alerts.incidents import record_and_send
    from alerts.slack import make_notifier
    from alerts.store import Store

    notifier = make_notifier()
    store = Store(settings.state_url)
    try:
        outcome = record_and_send(report, settings, store, notifier, policy=policy or DeliveryPolicy())
        counts = store.counts()
        left = store.waiting()
    finally:
        store.close()
    if outcome.delivery is None and not outcome.problem:
        err.print("no Slack configured (set SLACK_BOT_TOKEN or SLACK_WEBHOOK_URL): judged periods stored, "
                  "alerts printed only", markup=False)
        return
    sent = outcome.delivery.sent if outcome.delivery else 0
    waiting = counts["pending"] + counts["sending"]
    summary = (f"{outcome.queued} new message(s) queued, {sent} sent; outbox: {waiting} waiting, "
               f"{counts['dead']} dead")
    if outcome.problem:
        raise SlackFailed(f"{outcome.problem} (Slack: {summary})")
    if outcome.delivery is not None and outcome.delivery.retries and outcome.delivery.waiting:
        # Slack answered with errors until delivery gave up waiting: nothing is lost, but nothing
        # (or not everything) reached the channel either.
        error = next((row.last_error for row in left if row.last_error), "no answer")
        messages = sum(1 for row in left if row.kind == "message")
        raise SlackFailed(f"Slack did not take {messages} message(s) ({error}); {waiting} outbox row(s) stay "
                          f"queued: `kpiwatch outbox retry` sends them ({outcome.queued} new, {sent} sent)")
    err.print(f"Slack: {summary}", markup=False)


@cli.command()
@click.argument("kpi_name", required=False, metavar="[KPI]")
@click.option("--csv", "csv_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Replay this file instead of a configured KPI.")
@click.option("--timestamp-col", default="timestamp", show_default=True)
@click.option("--value-col", default="value", show_default=True)
@click.option("--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Where to write the judged rows (CSV).")
@click.option("--level", default=0.99, show_default=True, type=_Probability(example=0.99),
              help="Band probability per day of data (given, it overrides the KPI's level).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="With --csv: judge with a KPI's settings from this config (default: none, the default "
                   "detector; $KPIWATCH_CONFIG is not read). With KPI: the config (default as for check).")
@click.option("--kpi", "kpi", help="With --csv: the KPI of --config whose settings apply (needed when it has several).")
@click.option("--segment", "segments", multiple=True, metavar="DIM=VALUE", help="With KPI: one segment (default: the total).")
@click.option("--from", "start", help="With KPI: the first day (or hour) replayed (default: 90 days before the end).")
@click.option("--to", "end", help="With KPI: the last time replayed (default: now by the source's clock).")
@click.option("--feedback", "with_feedback", is_flag=True,
              help="With KPI: apply the verdicts recorded in the state store (`kpiwatch feedback`, Slack buttons), "
                   "each as if given when its incident was announced.")
@click.option("--locale", "locale", type=click.Choice(LOCALES), help="Language of the texts (default: the config's).")
@click.pass_context
def replay(ctx: click.Context, kpi_name: str | None, csv_file: Path | None, timestamp_col: str, value_col: str,
           output: Path, level: float, config_file: Path | None, kpi: str | None, segments: tuple[str, ...],
           start: str | None, end: str | None, with_feedback: bool, locale: str | None) -> None:
    """Walk forward over history as the daemon would, each period judged only from earlier ones.

    `replay KPI`: a configured KPI from its source, run as the daemon on a simulated clock (it
    counts the Slack messages it would have sent). `replay --csv FILE`: the rows of a file.
    """
    if (kpi_name is None) == (csv_file is None):
        raise BadInputError("give a KPI name or --csv FILE (one of the two)")
    if csv_file is not None and output.exists() and (output.resolve() == csv_file.resolve()
                                                     or (csv_file.exists() and output.samefile(csv_file))):
        raise BadInputError(f"--output {output} is the input file: it would be overwritten; write elsewhere")
    level_given = ctx.get_parameter_source("level") is click.core.ParameterSource.COMMANDLINE
    if kpi_name is not None:
        if kpi is not None:
            raise BadInputError("--kpi is for --csv; name the KPI as the argument: kpiwatch replay KPI")
        _replay_configured(kpi_name, config_file, segments, start, end, output, level if level_given else None,
                           with_feedback, locale)
        return
    assert csv_file is not None
    if segments or start or end or with_feedback:
        raise BadInputError("--segment, --from, --to and --feedback are for a configured KPI (kpiwatch replay KPI), "
                            "not --csv")
    _replay_csv(csv_file, timestamp_col, value_col, output, level, level_given, config_file, kpi, locale)


def _replay_csv(csv_file: Path, timestamp_col: str, value_col: str, output: Path, level: float, level_given: bool,
                config_file: Path | None, kpi: str | None, locale: str | None = None) -> None:
    """`kpiwatch replay --csv FILE`: the rows of a file, judged with the default detector or a
    KPI's settings from --config; texts in `locale`, else the config's."""
    from forecaster.detect import Detector, Rules
    from forecaster.i18n import kpi_name
    from forecaster.models.base import check_level
    from forecaster.replay import default_detectors, replay_file, summary
    from forecaster.sources.base import duplicate_fix, repeated_by_clock_change
    from forecaster.sources.csv import read_csv_columns
    from forecaster.units import format_moment

    if config_file is None:
        # Only an explicit --config: benchmarks and scripts replay with the default detector.
        if kpi is not None:
            raise BadInputError(f"--kpi {kpi} needs --config FILE (the config that defines it)")
        _set_command_locale(locale)
        detector_for = default_detectors(Rules(level=check_level(level)))
    else:
        settings = load_config(config_file)
        _set_command_locale(locale, settings)
        name = _replay_kpi(settings, kpi)
        kpi_config = settings.kpi(name)
        if level_given:
            kpi_config = kpi_config.model_copy(update={"level": check_level(level)})
        if kpi_config.ratio is not None and kpi_config.min_volume:
            # The service measures a ratio's volume by its denominator, which a file lacks.
            kpi_config = kpi_config.model_copy(update={"min_volume": 0.0})

        def detector_for(freq: str) -> Detector:
            return Detector.for_kpi(kpi_config, freq, settings.calendar, settings.timezone, settings.alerting.repeat_hours)
    raw = read_csv_columns(csv_file, timestamp_col, value_col)
    with _bar("replaying") as advance:
        frame, periods, notes = replay_file(raw, f"{csv_file.name}:{value_col}", detector_for, progress=advance)
    freq = _freq_of(periods)
    if config_file is not None:  # said once the file is read: a bad file gets its one line only
        events = _event_days(settings) if freq == "D" else ""
        given = t("commands.replay_level_given") if level_given else ""
        out.print(t("commands.replay_settings", kpi=kpi_name(name), config=config_file,
                    rules=detector_for(freq).rules.describe(events), level_given=given), markup=False)
        if settings.kpi(name).ratio is not None and settings.kpi(name).min_volume:
            err.print(t("commands.replay_min_volume", kpi=kpi_name(name)), markup=False)
    for note in notes:
        err.print(t("commands.note", note=note), markup=False)
    repeated = raw.index[raw.index.duplicated()]
    if repeated_by_clock_change(repeated, raw.index):
        # replay merges rows sharing a period (the note above), but local times repeated when DST
        # ended are two different hours: say how to keep them apart.
        err.print(t("commands.replay_twice", moment=format_moment(repeated[0]), path=csv_file,
                    fix=duplicate_fix(repeated, raw.index)), markup=False)
    _write_replay(frame, output)
    out.print(t("commands.replay_written", path=csv_file, summary=summary(periods, freq), output=output), markup=False)


def _event_days(settings: Settings) -> str:
    """What a config's event days are, for the settings line: "holidays of NL, retail peaks, 2 own event(s)"."""
    calendar = settings.calendar
    days = [t("commands.event_holidays", country=calendar.country)] if calendar.country else []
    days += [t("commands.event_retail")] if calendar.retail else []
    days += [t("commands.event_own", count=len(calendar.events))] if calendar.events else []
    return t("commands.event_days", days=", ".join(days) or t("commands.event_none"), timezone=settings.timezone)


def _write_replay(frame: pd.DataFrame, output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    frame.assign(timestamp=frame["timestamp"].map(lambda t: t.isoformat())).to_csv(output, index=False, float_format="%.10g")


def _replay_configured(name: str, config_file: Path | None, segments: tuple[str, ...], start: str | None,
                       end: str | None, output: Path, level: float | None, with_feedback: bool = False,
                       locale: str | None = None) -> None:
    """`kpiwatch replay KPI`: the daemon on a simulated clock over the KPI's history."""
    from alerts.rehearsal import replay_kpi

    settings = load_config(config_file)
    _set_command_locale(locale, settings)
    feedback = _recorded_feedback(settings) if with_feedback else None
    settings.kpi(name)  # an unknown name lists the configured ones
    if level is not None:
        kpis = dict(settings.kpis)
        kpis[name] = kpis[name].model_copy(update={"level": level})
        settings = settings.model_copy(update={"kpis": kpis})
    with _bar("replaying") as advance:
        result = replay_kpi(settings, name, _parse_segment(segments), _parse_at(start, settings, "--from"),
                            _parse_at(end, settings, "--to"), progress=advance, feedback=feedback)
    _write_replay(result.frame, output)
    applied = t("cli.replay_feedback", count=len(feedback)) if feedback else ""
    out.print(t("cli.replay_written", label=result.label, summary=result.summary, applied=applied, output=output),
              markup=False)


def _stored_feedback(settings: Settings, create: bool) -> dict[tuple[str, str], Any]:
    """The verdicts in the state store as the detector applies them (the daemon's view), so
    `check` judges as the daemon would. create False (a dry run): a SQLite store that does not
    exist yet is not created (there is no feedback in it)."""
    from alerts.feedback import series_feedback
    from alerts.store import Store

    store = Store(settings.state_url) if create else _existing_store(settings)
    if store is None:
        return {}
    try:
        return series_feedback(store.feedback_records())
    finally:
        store.close()


def _recorded_feedback(settings: Settings) -> dict[tuple[str, str], Any]:
    """The verdicts in the state store, each dated back to its incident's announcement."""
    from alerts.feedback import series_feedback
    from alerts.store import Store

    store = Store(settings.state_url)
    try:
        return series_feedback(store.feedback_records(), as_announced={n: k.freq for n, k in settings.kpis.items()})
    finally:
        store.close()


def _replay_kpi(settings: Settings, name: str | None) -> str:
    """The KPI whose settings `replay --config` applies: --kpi, else the config's only KPI."""
    if name is not None:
        settings.kpi(name)  # an unknown name lists the configured ones
        return name
    if len(settings.kpis) == 1:
        return next(iter(settings.kpis))
    raise BadInputError(f"the config defines {len(settings.kpis)} KPIs ({', '.join(sorted(settings.kpis))}); "
                        "pick one with --kpi NAME")


@cli.command(name="backtest")
@click.argument("kpi", required=False)
@click.option("--kpi", "kpi_option", help="The KPI (same as the KPI argument).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="Config file.")
@click.option("--csv", "csv_file", type=click.Path(dir_okay=False, path_type=Path), help="Backtest a CSV file instead of a KPI.")
@click.option("--timestamp-col", default="timestamp", show_default=True)
@click.option("--value-col", default="value", show_default=True)
@click.option("--segment", "segments", multiple=True, metavar="DIM=VALUE", help="One segment of the KPI.")
@click.option("--models", default="seasonal_naive,ets,prophet", show_default=True, help="Comma-separated model names.")
@click.option("--horizon", default=28, show_default=True, type=_WholeRange(1, unit="periods", example=28),
              help="Periods per origin.")
@click.option("--origins", default=10, show_default=True, type=_WholeRange(1, example=10), help="Rolling origins.")
@click.option("--train-window", type=_WholeRange(1, unit="periods", example=365),
              help="Train on at most this many periods (default: all before the origin).")
@click.option("--level", default=0.95, show_default=True, type=_Probability(example=0.95),
              help="Probability of the band (0-1).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--locale", "locale", type=click.Choice(LOCALES), help="Language of the texts (default: the config's).")
def backtest_command(
    kpi: str | None, kpi_option: str | None, config_file: Path | None, csv_file: Path | None, timestamp_col: str, value_col: str,
    segments: tuple[str, ...], models: str, horizon: int, origins: int, train_window: int | None, level: float,
    fmt: str, locale: str | None,
) -> None:
    """Rolling-origin accuracy per model: MASE, sMAPE, interval coverage, MSIS, time per fit, and the
    coverage of the detector's alert band with that model."""
    from forecaster.backtest import backtest

    kpi = kpi or kpi_option
    if (kpi is None) == (csv_file is None):
        raise BadInputError("give a KPI name or --csv FILE (one of the two)")
    if csv_file is not None:
        from forecaster.sources.csv import read_series_csv

        _set_command_locale(locale)
        series = read_series_csv(csv_file, timestamp_col, value_col, name=f"{csv_file.name}:{value_col}")
    else:
        settings = load_config(config_file)
        _set_command_locale(locale, settings)
        series = kpi_total_series(settings, kpi or "", _parse_segment(segments))
    names = [name.strip() for name in models.split(",") if name.strip()]
    with _bar(f"backtesting {len(names)} model(s)") as advance:
        scores = backtest(series.values, names, horizon=horizon, origins=origins, level=level,
                          train_window=train_window, progress=advance)
    if fmt == "json":
        click.echo(json.dumps({"series": series.label, "horizon": horizon, "origins": origins, "level": level,
                               "scores": [dataclasses.asdict(score) for score in scores]}, indent=2))
        return
    _print_backtest(series.label, scores, origins, horizon, level)


def _print_backtest(label: str, scores: list[Any], origins: int, horizon: int, level: float) -> None:
    """The backtest's table, a row per model, and what its two coverages measure."""
    from forecaster.units import format_number, format_percent

    def number(value: float, digits: int) -> str:
        return format_number(value, digits, grouping=False)

    table = Table(title=t("commands.backtest_title", label=escape(label), origins=origins, horizon=horizon,
                          level=format_percent(level, 0)))
    for number_of, column in enumerate(t("commands.backtest_columns").split("|")):
        table.add_column(column, justify="left" if number_of == 0 else "right")
    for score in scores:
        table.add_row(score.model, number(score.mase, 3), number(score.smape, 2), number(score.coverage, 3),
                      number(score.msis, 2), number(score.seconds_per_fit * 1000, 1), str(score.fallbacks),
                      number(score.alert_coverage, 3))
    out.print(table)
    out.print(t("commands.backtest_note"), markup=False)


@cli.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="Config file.")
@click.option("--at", "at", help="As if it were this time (ISO 8601; no zone = the config's timezone).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--locale", "locale", type=click.Choice(LOCALES), help="Language of the texts (default: the config's).")
def goals(config_file: Path | None, at: str | None, fmt: str, locale: str | None) -> None:
    """Each KPI target: current value, forecast at the deadline, chance of reaching it."""
    from forecaster.goals import BAND_LEVEL
    from forecaster.goals import goals as goal_statuses
    from forecaster.i18n import kpi_name
    from forecaster.units import format_percent

    settings = load_config(config_file)
    _set_command_locale(locale, settings)
    with _spinner("forecasting to each deadline", quiet=fmt == "json"):
        statuses = goal_statuses(settings, _parse_at(at, settings))
    if not statuses:
        raise BadInputError("no KPI has a target; add `target: {value: ..., by: YYYY-MM-DD}` to a KPI")
    if fmt == "json":
        click.echo(json.dumps([{**dataclasses.asdict(s), "by": s.by.date().isoformat(), "on_track": s.on_track}
                               for s in statuses], indent=2))
        return
    table = Table(title=t("cli.goals_title", level=format_percent(BAND_LEVEL, 0)))
    columns = t("cli.goals_columns").split("|")
    for number, column in enumerate(columns):
        table.add_column(column, justify="left" if number in (0, len(columns) - 1) else "right", no_wrap=True)
    for s in statuses:
        table.add_row(kpi_name(s.kpi), format_value(s.target, s.unit), f"{s.by:%Y-%m-%d}",
                      format_value(s.current, s.unit), format_value(s.forecast, s.unit),
                      f"{format_value(s.lower, s.unit)}-{format_value(s.upper, s.unit)}",
                      format_percent(s.probability, 0), t("cli.goals_on_track" if s.on_track else "cli.goals_at_risk"))
    out.print(table)


@cli.command(name="report")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="Config file.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write the report to (default: <state_dir>/report, the folder the daemon serves).")
@click.option("--at", "at", help="As if it were this time (ISO 8601; no zone = the config's timezone).")
@click.option("--locale", "locale", type=click.Choice(LOCALES), help="Language of the report (default: the config's).")
def report_command(config_file: Path | None, out_dir: Path | None, at: str | None, locale: str | None) -> None:
    """A static HTML report: the KPIs by funnel phase, a page per KPI (opens from disk, offline)."""
    from alerts.report.build import build_report, report_folder

    settings = load_config(config_file)
    _set_command_locale(locale, settings)
    moment = _parse_at(at, settings)
    folder = out_dir or report_folder(settings)
    store = _existing_store(settings)
    try:
        with _spinner("judging every KPI and writing the report", quiet=False):
            index = build_report(settings, folder, at=moment, store=store)
    finally:
        if store is not None:
            store.close()
    out.print(t("commands.report_written", uri=index.resolve().as_uri(), pages=len(settings.kpis),
                folder=(index.parent / "kpi").resolve()), markup=False, soft_wrap=True)


def _existing_store(settings: Settings) -> Any:
    """The state store when there is one (a SQLite file that does not exist is not created:
    a report reads, it never sets up a store); None otherwise."""
    from sqlalchemy.engine import make_url

    from alerts.store import Store

    url = make_url(settings.state_url)
    if url.get_backend_name() == "sqlite" and not (url.database and Path(url.database).exists()):
        return None
    return Store(settings.state_url)


@cli.command(name="digest")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="Config file.")
@click.option("--at", "at", help="The digest of the last full week (Monday to Sunday) before this time (ISO 8601; "
              "no zone = the config's timezone). Default: now.")
@click.option("--dry-run", is_flag=True, help="Print the digest, send nothing.")
@click.option("--locale", "locale", type=click.Choice(LOCALES), help="Language of the texts (default: the config's).")
def digest_command(config_file: Path | None, at: str | None, dry_run: bool, locale: str | None) -> None:
    """The weekly digest: last week's KPIs by funnel phase, one Slack message per channel."""
    from alerts.digest import digest_now, last_full_week
    from alerts.slack import make_notifier

    settings = load_config(config_file)
    _set_command_locale(locale, settings)
    week = last_full_week(_parse_at(at, settings) or digest_now(settings), settings.timezone)
    notifier = None if dry_run else make_notifier()
    if notifier is None:
        _print_digest(settings, week)
        if not dry_run:
            err.print("no Slack configured (set SLACK_BOT_TOKEN or SLACK_WEBHOOK_URL): digest printed only",
                      markup=False)
        return
    _send_digest(settings, week, notifier)


def _print_digest(settings: Settings, week: Any) -> None:
    """Each channel's digest as plain text, read from the store when there is one (a dry run
    creates none: expected values then come from a check, and there are no incidents)."""
    from alerts.digest import build_digest, channel_kpis, digest_channels, gather_digest

    store = _existing_store(settings)
    try:
        with _spinner("gathering last week", quiet=False):
            data = gather_digest(settings, store, week)
    finally:
        if store is not None:
            store.close()
    for i, channel in enumerate(digest_channels(settings)):
        digest = build_digest(data, channel, channel_kpis(settings, channel), settings.digest.top)
        out.print(f"{chr(10) if i else ''}── {channel} ──{chr(10)}{digest.text}", markup=False)


def _send_digest(settings: Settings, week: Any, notifier: Any) -> None:
    """Queue the week's digest (a row per channel not queued yet, in one transaction), deliver
    the outbox, one line on stderr; a Slack failure is exit 3 with the rows left queued."""
    from alerts.delivery import DeliveryPolicy, deliver
    from alerts.digest import digest_channels, queue_digest
    from alerts.slack import SlackError
    from alerts.store import Store

    store = Store(settings.state_url)
    try:
        with _spinner("gathering last week", quiet=False):
            queued = queue_digest(settings, store, week, pd.Timestamp.now(tz="UTC").to_pydatetime())
        channels = sorted({r.channel for r in settings.alerting.routes} | set(digest_channels(settings)))
        try:
            ids = notifier.check(channels)
        except SlackError as exc:
            raise SlackFailed(f"{exc} ({queued} digest message(s) stay queued: `kpiwatch outbox retry` sends "
                              "them)") from None
        report = deliver(store, notifier, ids, DeliveryPolicy())
        counts = store.counts()
    finally:
        store.close()
    waiting = counts["pending"] + counts["sending"]
    summary = (f"digest of the week of {format_period(week.start, 'D')}: {queued} new message(s) queued, "
               f"{report.sent} sent; outbox: {waiting} waiting, {counts['dead']} dead")
    if report.dead or (report.retries and report.waiting):
        raise SlackFailed(f"Slack did not take every message ({summary})")
    err.print(summary, markup=False)


@cli.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="Config file.")
@click.option("--locale", "locale", type=click.Choice(LOCALES), help="Language of the texts (default: the config's).")
def validate(config_file: Path | None, locale: str | None) -> None:
    """Check a config file and exit (0 = valid)."""
    settings = load_config(config_file)
    _set_command_locale(locale, settings)
    out.print(t("commands.validate_ok", path=config_path(config_file), kpis=len(settings.kpis),
                kpi_names=", ".join(sorted(settings.kpis)), sources=len(settings.sources),
                source_names=", ".join(sorted(settings.sources))), markup=False)


@cli.command(name="run")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="Config file.")
@click.option("--once", is_flag=True, help="Judge every KPI's due periods once, deliver, and exit.")
@click.option("--no-wait", is_flag=True, help="Exit (code 3) if another daemon holds the store, instead of standing by.")
def run_command(config_file: Path | None, once: bool, no_wait: bool) -> None:
    """The daemon: judge every KPI on its schedule, send alerts, serve /healthz and /metrics."""
    from alerts.daemon import Daemon

    daemon = Daemon(config_file, wait_for_lock=not no_wait)
    code = daemon.run(once=once)
    if daemon.lingering():
        # A source read or Slack post outlived daemon.shutdown_grace: Python would wait for it at
        # exit, past `docker stop`'s patience. Unstored work is redone after the restart.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)


@cli.command()
@click.argument("kpi")
@click.option("--segment", "segment", multiple=True, help="Only this segment, DIMENSION=VALUE (repeatable).")
@click.option("--until", "until", required=True, help="Silence until this day or time (ISO 8601, config timezone).")
@click.option("--reason", default="", help="Why (shown by `kpiwatch alerts`).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="Config file.")
@click.option("--locale", "locale", type=click.Choice(LOCALES), help="Language of the texts (default: the config's).")
def snooze(kpi: str, segment: tuple[str, ...], until: str, reason: str, config_file: Path | None,
           locale: str | None) -> None:
    """Silence a KPI (or one segment of it) until a date; the evaluations go on."""
    from alerts.store import Store
    from forecaster.i18n import kpi_name
    from forecaster.types import segment_key
    from forecaster.units import format_moment

    settings = load_config(config_file)
    _set_command_locale(locale, settings)
    settings.kpi(kpi)
    end = _parse_at(until, settings, option="--until")
    if end is None or end <= pd.Timestamp.now(tz="UTC"):
        raise BadInputError(f"--until {until!r} is not in the future; give a later day, e.g. --until 2030-01-31")
    wanted = _parse_segment(segment)
    unknown = sorted(set(wanted) - set(settings.kpi(kpi).segments))
    if unknown:  # a snooze nothing can match would silence nothing, without a word
        known = ", ".join(settings.kpi(kpi).segments) or "none: snooze the whole KPI"
        raise BadInputError(f"--segment {unknown[0]}=...: KPI {kpi} is not split by {unknown[0]!r} (its segments: {known})")
    where = segment_key(wanted)
    store = Store(settings.state_url)
    try:
        store.add_snooze(kpi, where, end.tz_convert("UTC").to_pydatetime(), reason)
    finally:
        store.close()
    out.print(t("commands.snoozed", kpi=kpi_name(kpi), where=f" {where}" if where else "",
                until=format_moment(end, zone=True)), markup=False)


@cli.command()
@click.argument("incident")
@click.argument("verdict", type=click.Choice(["expected", "false-alarm", "snooze", "resolve"]))
@click.option("--user", default=lambda: os.environ.get("USER", ""), help="Who says so (default: $USER).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="Config file.")
@click.option("--locale", "locale", type=click.Choice(LOCALES),
              help="Language of the texts, the cards' edit included (default: the config's).")
def feedback(incident: str, verdict: str, user: str, config_file: Path | None, locale: str | None) -> None:
    """Answer an incident as its Slack buttons do: expected, false-alarm, snooze (7 days) or resolve.

    INCIDENT is its number (`kpiwatch alerts` lists them) or its key. The rule each verdict
    follows is in the README ("Feedback").
    """
    from alerts.feedback import apply_feedback, verdict_of
    from alerts.incidents import deliver_outbox
    from alerts.slack import make_notifier
    from alerts.store import Store
    from forecaster.schedule import Clock

    settings = load_config(config_file)
    _set_command_locale(locale, settings)  # the cards' edit ("resolved by @ana") is built in it too
    clock = Clock.from_env()
    now = clock.now().floor("us").to_pydatetime()
    store = Store(settings.state_url)
    try:
        outcome = apply_feedback(store, settings, incident, verdict_of(verdict), user, now)
        notifier = make_notifier() if outcome.recorded else None
        problem = ""
        if notifier is not None:  # edit the cards now; without Slack the edit waits in the outbox
            _, problem = deliver_outbox(settings, store, notifier, clock=lambda: clock.now().floor("us").to_pydatetime())
    finally:
        store.close()
    name = _incident_name(outcome.group)
    if not outcome.recorded:
        out.print(t("commands.feedback_already", incident=name, verdict=t(f"commands.already.{verdict_of(verdict)}")),
                  markup=False)
        return
    out.print(t("commands.feedback_done", incident=name, line=outcome.line), markup=False)
    if problem:
        raise SlackFailed(problem)


def _incident_name(group: Any) -> str:
    """An incident as `feedback` names it: "incident 3 (leads channel=email)"."""
    from forecaster.i18n import kpi_name

    return t("commands.incident_name", number=group.id, kpi=kpi_name(group.root_kpi),
             where=f" {group.root_segment}" if group.root_segment else "")


@cli.command(name="alerts")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="Config file.")
@click.option("--limit", default=20, show_default=True, type=_WholeRange(1, 1000, example=20), help="Rows to show.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--locale", "locale", type=click.Choice(LOCALES),
              help="Language of the tables (default: the config's); the JSON stays as it is.")
def alerts_command(config_file: Path | None, limit: int, fmt: str, locale: str | None) -> None:
    """Recent incidents (with their members, feedback and what it changed), the alert messages and
    the outbox: what was sent, what waits, what Slack refused."""
    from alerts.feedback import feedback_notes, series_feedback
    from alerts.store import Store

    settings = load_config(config_file)
    if fmt != "json":  # the JSON is machine output: its notes stay as they always were
        _set_command_locale(locale, settings)
    store = Store(settings.state_url)
    try:
        rows, counts, snoozed = store.rows(limit=limit), store.counts(), store.snoozes()
        groups = store.groups(limit)
        said = {g.key: store.feedback_for(g.key) for g in groups}
        notes = feedback_notes(series_feedback(store.feedback_records()), pd.Timestamp.now(tz="UTC").to_pydatetime())
    finally:
        store.close()
    if fmt == "json":
        click.echo(json.dumps({"incidents": [_incident_dict(g, said[g.key]) for g in groups],
                               "sensitivity": [{"kpi": k, "segment": s, "note": n} for (k, s), n in notes.items()],
                               "outbox": counts, "snoozes": [dataclasses.asdict(z) for z in snoozed],
                               "messages": [_outbox_dict(r) for r in rows]}, indent=2, default=str))
        return
    _print_incidents(groups, said, settings.timezone)
    for note in notes.values():
        out.print(t("commands.feedback_note", note=note), markup=False)
    _print_outbox(rows, counts, settings)
    _print_snoozes(snoozed, settings.timezone)


def _print_outbox(rows: list[Any], counts: Mapping[str, int], settings: Settings) -> None:
    """The outbox as a table: its counts per state in the title, a row per recent message."""
    from forecaster.units import format_moment

    shown = ", ".join(t("commands.outbox_count", count=count, state=_word("commands.outbox_state", state))
                      for state, count in counts.items())
    table = Table(title=t("commands.outbox_title", url=escape(shown_url(settings.state_url)), counts=shown))
    for column in t("commands.outbox_columns").split("|"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(format_moment(pd.Timestamp(row.created_at)), _word("commands.outbox_kind", row.kind), row.channel,
                      _word("commands.outbox_state", row.state), str(row.attempts), row.text.splitlines()[0][:80],
                      row.last_error[:60])
    out.print(table)


def _print_snoozes(snoozed: list[Any], timezone: str) -> None:
    """A line per snooze: what is silenced, until when (in the config's timezone) and why."""
    from forecaster.i18n import kpi_name
    from forecaster.units import format_moment

    for item in snoozed:
        until = pd.Timestamp(item.until).tz_convert(timezone)
        reason = t("commands.snooze_reason", reason=item.reason) if item.reason else ""
        out.print(t("commands.snoozed_line", kpi=kpi_name(item.kpi), segment=item.segment or t("commands.all_segments"),
                    until=format_moment(until, zone=True), reason=reason), markup=False)


def _print_incidents(groups: list[Any], said: dict[str, list[dict[str, Any]]], timezone: str) -> None:
    """The incidents as a table: number, state, root cause, members, feedback."""
    from forecaster.i18n import kpi_name
    from forecaster.units import format_moment

    if not groups:
        out.print(t("commands.no_incidents"))
        return
    table = Table(title=t("commands.incidents_title"))
    for column in t("commands.incidents_columns").split("|"):
        table.add_column(column, overflow="fold")
    for group in groups:
        opened = pd.Timestamp(group.opened_at).tz_convert(timezone)
        state = _word("commands.state", group.state)
        if group.closed_by:
            state = t("commands.state_closed", state=state, closed_by=_word("commands.closed_by", group.closed_by))
        root = f"{kpi_name(group.root_kpi)} {group.root_segment}".strip()
        members = ", ".join(f"{kpi_name(m.kpi)} {m.segment}".strip() for m in group.members if (m.kpi, m.segment)
                            != (group.root_kpi, group.root_segment))
        verdicts = ", ".join(t("commands.verdict_by", verdict=_word("commands.verdict", f["verdict"]), user=f["user"] or "?")
                             for f in said.get(group.key, []))
        table.add_row(str(group.id), format_moment(opened), state, root, members, verdicts)
    out.print(table)


def _word(section: str, value: str) -> str:
    """A stored word (a state, a verdict, a kind) in the current locale: the catalogue's
    `<section>.<value>` (spaces as underscores: "back to normal"), else the value as stored."""
    from forecaster.i18n import catalogue, current_locale

    return catalogue(current_locale()).get(f"{section}.{value.replace(' ', '_')}", value)


def _set_command_locale(option: str | None, settings: Settings | None = None) -> None:
    """A command's texts in --locale, else the config's `locale:` (English without a config, as
    `forecast --csv`); like `check`, the rest of the command runs in it."""
    from forecaster.i18n import DEFAULT_LOCALE

    set_locale(option or (settings.locale if settings is not None else DEFAULT_LOCALE))


def _incident_dict(group: Any, said: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": group.id, "key": group.key, "state": group.state, "closed_by": group.closed_by,
            "root_cause": {"kpi": group.root_kpi, "segment": group.root_segment, "why": group.why},
            "opened_at": group.opened_at, "resolved_at": group.resolved_at, "severity": group.severity,
            "members": [{"kpi": m.kpi, "segment": m.segment, "state": m.state, "first_period": m.first_period,
                         "last_period": m.last_period, "summary": m.summary} for m in group.members],
            "feedback": [{"verdict": f["verdict"], "user": f["user"], "at": f["created_at"]} for f in said]}


@cli.group()
def sources() -> None:
    """The data sources: check that every KPI's source answers."""


@sources.command(name="test")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="Config file.")
@click.option("--periods", default=3, show_default=True, type=_WholeRange(1, 366, example=3),
              help="Recent periods to fetch.")
@click.option("--at", "at", help="As if it were this time (ISO 8601; no zone = the config's timezone), "
              "e.g. a warehouse copy that ends in the past.")
@click.option("--locale", "locale", type=click.Choice(LOCALES), help="Language of the texts (default: the config's).")
def sources_test(config_file: Path | None, periods: int, at: str | None, locale: str | None) -> None:
    """Fetch the last few periods of every KPI from its source: rows, last period, delay."""
    from forecaster.sources.probe import probe_sources
    from forecaster.units import format_moment, format_number

    settings = load_config(config_file)
    _set_command_locale(locale, settings)
    moment = _parse_at(at, settings)
    with _spinner("asking every source", quiet=False):
        probes = probe_sources(settings, periods=periods, at=moment)
    table = Table(title=t("commands.sources_title", path=escape(str(config_path(config_file)))))
    for number, column in enumerate(t("commands.sources_columns").split("|")):
        table.add_column(column, justify="right" if number in (3, 7) else "left", overflow="fold")  # rows, s
    for p in probes:
        last = "-" if p.last_period is None else format_moment(pd.Timestamp(p.last_period))
        table.add_row(p.kpi, p.source, p.kind, str(p.rows), last, _hours(p.delay), _hours(p.data_delay),
                      format_number(p.seconds, 2, grouping=False), _probe_status(p))
    out.print(table)
    failed = [p for p in probes if not p.ok]
    if failed:
        # A mistake in the config (exit 2, as `check` says it) comes first: it is the one to fix.
        first = min(failed, key=lambda p: p.exit_code != BadInputError.exit_code)
        problem = SourcesFailed(f"{len(failed)} of {len(probes)} KPI source(s) failed; first: {first.kpi}: {first.error}")
        problem.exit_code = first.exit_code or SourcesFailed.exit_code
        raise problem


@cli.group()
def outbox() -> None:
    """The queue of Slack messages: resend what Slack refused."""


@outbox.command(name="retry")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="Config file.")
@click.option("--locale", "locale", type=click.Choice(LOCALES), help="Language of the texts (default: the config's).")
def outbox_retry(config_file: Path | None, locale: str | None) -> None:
    """Queue every dead letter again and deliver the outbox now (after fixing the cause)."""
    from alerts.incidents import deliver_outbox
    from alerts.slack import make_notifier
    from alerts.store import Store
    from forecaster.schedule import Clock

    settings = load_config(config_file)
    _set_command_locale(locale, settings)
    clock = Clock.from_env()  # the daemon's notion of now (KPIWATCH_CLOCK), which the rows were queued with
    notifier = make_notifier()
    if notifier is None:
        raise BadInputError("no Slack configured: set SLACK_BOT_TOKEN (or SLACK_WEBHOOK_URL) and run again")
    store = Store(settings.state_url)
    try:
        revived = store.retry_dead(clock.now().floor("us").to_pydatetime())
        delivery, problem = deliver_outbox(settings, store, notifier, clock=lambda: clock.now().floor("us").to_pydatetime())
        counts = store.counts()
    finally:
        store.close()
    sent = delivery.sent if delivery else 0
    out.print(t("commands.outbox_retried", revived=revived, sent=sent, waiting=counts["pending"] + counts["sending"],
                dead=counts["dead"]), markup=False)
    if problem:
        raise SlackFailed(problem)


def main() -> None:
    """Console entry point (`kpiwatch`)."""
    cli(prog_name="kpiwatch")


def _run_check(settings: Settings, at: pd.Timestamp | None, kpis: tuple[str, ...] | None, quiet: bool,
               require_complete: bool = False, feedback: dict[tuple[str, str], Any] | None = None) -> CheckReport:
    if quiet or not err.is_terminal:
        return check(settings, at=at, kpis=kpis, require_complete=require_complete, feedback=feedback)
    with Progress(TextColumn("fitting and judging"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task("series", total=None)
        return check(settings, at=at, kpis=kpis, require_complete=require_complete, feedback=feedback,
                     progress=lambda done, total: bar.update(task, completed=done, total=total))


@contextmanager
def _bar(label: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr (only on a terminal); yields `advance(done, total)`."""
    if not err.is_terminal:
        yield lambda done, total: None
        return
    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


@contextmanager
def _spinner(text: str, quiet: bool) -> Iterator[None]:
    if quiet or not err.is_terminal:
        yield
        return
    with err.status(text):
        yield


def _write_charts(report: CheckReport, folder: Path) -> dict[int, Path]:
    from alerts.chart import chart_title, render_chart
    from alerts.message import alert_slug

    charts = {}
    for number, alert in enumerate(report.alerts):
        result = report.result_for(alert.anomaly)
        charts[number] = render_chart(folder / f"{alert_slug(alert)}.png", result.series.values, result.forecast,
                                      result.judgements, title=chart_title(alert.anomaly), unit=alert.anomaly.unit)
    return charts


def _print_alerts(report: CheckReport, charts: dict[int, Path], settings: Settings,
                  annotate: Callable[[AlertGroup], str] | None = None) -> None:
    """The incidents (root cause first), then every alert with its hints and chart, then a summary.
    annotate: a line to print under an incident's header ("" for none; the demo's ground truth)."""
    from alerts.grouping import group_alerts, incident_text
    from alerts.message import plain_text

    if not report.alerts:
        out.print(t("cli.no_anomalies") if not report.no_data else
                  t("cli.no_anomalies_no_data", judged=len(report.period), missing=len(report.no_data)))
    groups = group_alerts(report.alerts, settings)
    for number, group in enumerate(groups, start=1):
        header, _, rest = incident_text(group, number).partition("\n")
        note = annotate(group) if annotate else ""
        out.print("\n".join(line for line in (header, note and f"  {note}", rest) if line), markup=False)
        out.print()
    if groups:
        out.print(t("cli.one_by_one", count=len(report.alerts)), markup=False)
    for number, alert in enumerate(report.alerts):
        out.print(plain_text(alert), markup=False)
        if number in charts:
            out.print(t("cli.chart", path=charts[number]), markup=False)
        out.print()
    _print_held_back(report.held_back)
    bad = sum(1 for a in report.alerts if a.anomaly.is_bad)
    out.print(t("cli.summary", incidents=len(groups), alerts=len(report.alerts), bad=bad, good=len(report.alerts) - bad,
                series=len(report.results)))
    for note in report.notes:
        err.print(t("note.skipped", note=note), markup=False)
    for note in report.incomplete:
        err.print(t("note.incomplete_line", note=note), markup=False)
    for note in report.no_data:
        err.print(t("note.no_data_line", note=note), markup=False)


MAX_HELD_BACK = 10
"""Held-back lines `check` prints; the rest are counted (`--format json` lists them all)."""


def _print_held_back(lines: list[str]) -> None:
    """The out-of-band periods a guardrail kept from alerting, after the alerts: a guardrail
    must not swallow an incident without a word."""
    if not lines:
        return
    out.print(t("cli.held_back", count=len(lines)), markup=False)
    for line in lines[:MAX_HELD_BACK]:
        out.print(f"  - {line}", markup=False)
    if len(lines) > MAX_HELD_BACK:
        out.print(t("cli.held_back_more", count=len(lines) - MAX_HELD_BACK), markup=False)
    out.print()


def _print_json(report: CheckReport, charts: dict[int, Path], settings: Settings,
                annotate: Callable[[AlertGroup], Mapping[str, Any]] | None = None) -> None:
    """The one JSON object of `check`/`demo --format json`; `annotate` adds keys to each incident
    (the demo's ground truth)."""
    from alerts.grouping import group_alerts, incident_to_dict
    from alerts.message import alert_to_dict

    alerts = []
    for number, alert in enumerate(report.alerts):
        item = alert_to_dict(alert)
        if number in charts:
            item["chart"] = str(charts[number])
        alerts.append(item)
    incidents = [{**incident_to_dict(group, number), **(annotate(group) if annotate else {})}
                 for number, group in enumerate(group_alerts(report.alerts, settings), start=1)]
    payload = {"alerts": alerts, "incidents": incidents, "judged": {k: v.isoformat() for k, v in report.period.items()},
               "series": len(report.results), "skipped": report.notes,
               "incomplete": list(report.incomplete), "no_data": list(report.no_data),
               "held_back": report.held_back}
    click.echo(json.dumps(payload, indent=2, ensure_ascii=False))


def _print_forecast(series: KPISeries, result: Forecast, fmt: str, unit: str) -> None:
    frame = result.to_frame()
    frame.index.name = "timestamp"
    if fmt == "csv":
        click.echo(frame.to_csv(float_format="%.6g"), nl=False)
        return
    if fmt == "json":
        rows = [{"timestamp": ts.isoformat(), **{k: float(v) for k, v in row.items()}} for ts, row in frame.iterrows()]
        click.echo(json.dumps({"series": series.label, "model": result.model, "level": result.level,
                               "note": result.note, "forecast": rows}, indent=2))
        return
    from forecaster.i18n import tn
    from forecaster.units import format_percent

    # escaped: rich would read the segment in "conversion_rate[device=mobile]" as a style tag and drop it
    table = Table(title=t("commands.forecast_title", label=escape(series.label), periods=tn("commands.periods", len(frame)),
                          level=format_percent(result.level, 0), model=escape(result.model)))
    for number, column in enumerate(t("commands.forecast_columns").split("|")):
        table.add_column(column, justify="right" if number else "left")
    for ts, row in frame.iterrows():
        table.add_row(format_period(ts, series.freq), *(format_value(row[c], unit) for c in ("forecast", "lower", "upper")))
    out.print(table)
    if result.note:
        err.print(t("commands.note", note=result.note), markup=False)


def _freq_of(frame: pd.DataFrame) -> str:
    """The usual spacing of a replay's rows as an alias, for its summary."""
    from forecaster.timegrid import alias, usual_spacing

    return alias(usual_spacing(pd.DatetimeIndex(frame["timestamp"]).sort_values()))


def _probe_status(probe: Any) -> str:
    """A source's status cell: "ok", "ok (its notes)", or "FAILED: why" (the reason in English)."""
    if not probe.ok:
        return t("commands.source_failed", error=probe.error)
    return t("commands.source_ok_notes", notes="; ".join(probe.notes)) if probe.notes else t("commands.source_ok")


class SourcesFailed(KPIWatchError):
    """A source did not answer (exit code 3)."""

    exit_code = 3


def _hours(delta: object) -> str:
    """A delay in hours, one decimal: "26.0 h" ("26,0 u" in Dutch); "-" when there is none."""
    from forecaster.units import format_number

    if delta is None:
        return "-"
    return t("commands.hours", hours=format_number(pd.Timedelta(delta).total_seconds() / 3600, 1, grouping=False))


class SlackFailed(KPIWatchError):
    """Slack refused (a token, a channel, a message): exit code 3; the rows stay in the outbox."""

    exit_code = 3


def _outbox_dict(row: object) -> dict[str, object]:
    fields = dataclasses.asdict(row)
    fields.pop("file", None)
    fields.pop("payload", None)
    return fields


def _parse_segment(items: tuple[str, ...]) -> dict[str, str]:
    segment = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise BadInputError(f"--segment {item!r}: use DIMENSION=VALUE, e.g. --segment device=mobile")
        segment[key.strip()] = value.strip()
    return segment


# ISO 8601 in its extended form: a date, optionally a time (T or a space) and a zone (Z, +01:00).
# Nothing else: `03/12/2026` is 3 December in Amsterdam and 12 March in New York, and the data
# sources read only ISO 8601 too, so --at means the same as a timestamp in the data.
_ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?(Z|[+-]\d{2}(:?\d{2})?)?",
                       re.IGNORECASE)
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")
_DAY_MONTH = re.compile(r"(\d{1,2})[/.-](\d{1,2})[/.-]\d{2,4}\b.*")


def _parse_at(text: str | None, settings: Settings, option: str = "--at") -> pd.Timestamp | None:
    """Read a timestamp option (`--at`, `--until`, `--from`, `--to`): ISO 8601 only
    (2026-12-03, 2026-12-03T10:00, 2026-12-03T10:00+01:00); no zone = the config's timezone.
    Errors name `option` and the format."""
    if text is None:
        return None
    stamp = parse_iso_time(text, option)
    if stamp.tzinfo is not None:
        return stamp
    # a local time skipped by DST moves forward; one that happens twice is read as the first
    return stamp.tz_localize(settings.timezone, nonexistent="shift_forward", ambiguous=True)


def parse_iso_time(text: str, option: str = "--at") -> pd.Timestamp:
    """`text` as a Timestamp (naive when it has no zone); BadInputError in one line otherwise."""
    usage = "use ISO 8601: YYYY-MM-DD, optionally a time and zone, e.g. 2026-12-03 or 2026-12-03T10:00+01:00"
    cleaned = text.strip()
    day_month = _DAY_MONTH.fullmatch(cleaned)
    if day_month:
        first, second = int(day_month.group(1)), int(day_month.group(2))
        if 1 <= first <= 12 and 1 <= second <= 12 and first != second:
            raise BadInputError(f"{option} {text!r} is ambiguous ({first} {_MONTHS[second - 1]} or {second} "
                                f"{_MONTHS[first - 1]}?); {usage}")
        raise BadInputError(f"{option} {text!r}: day and month order differ by country; {usage}")
    if not _ISO_TIME.fullmatch(cleaned):
        raise BadInputError(f"{option} {text[:40]!r}: not a timestamp; {usage}")
    try:
        moment = datetime.fromisoformat(cleaned.upper().replace("Z", "+00:00"))
    except ValueError as exc:  # 2026-02-30, 25:00, an offset of 24 hours
        raise BadInputError(f"{option} {text!r}: not a real time ({exc}); {usage}") from None
    if not 1900 <= moment.year <= 2200:  # the models' calendars and nanosecond stamps end around here
        raise BadInputError(f"{option} {text!r}: the year must be from 1900 to 2200")
    return pd.Timestamp(moment)


if __name__ == "__main__":  # `python -m forecaster.cli` (the tests run the daemon this way)
    main()
