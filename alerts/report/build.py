"""Write the static report: `index.html` (the KPIs by funnel phase) and `kpi/<name>.html` (one
page per KPI), from ONE check's report (`forecaster.pipeline.check`), so the demo's 62 series
cost one walk each, as `kpiwatch check` spends.

What a page shows, and where it comes from:
- latest value, expected value, band and change: the KPI total's judgement of the checked period;
- target and the chance of reaching it: `forecaster.goals.target_status` on the total series the
  check read (one forecast to the deadline per KPI with a target);
- the chart: the total's history with the band of the periods the check judged (`REPORT_WINDOW`
  of them when the report runs its own check; the KPI's `check_window` in the daemon);
- anomalies and incidents: the check's alerts grouped as Slack shows them
  (`alerts.grouping.group_alerts`), with their hints; the incidents the service recorded and the
  feedback given on them, from the state store when there is one (`Store.groups`,
  `Store.feedback_for`); without a store the page says so and shows the check's only;
- segments: every segment's judgement of the checked period;
- the model: the models named by the judgements, and two figures measured on the judged window,
  each period forecast before its value was known (a walk forward): the one-step error (MAPE of
  the periods inside the band) and the band's coverage (the share of judged periods inside it).

Every text comes from the catalogues (`report.*` in `forecaster/i18n/*.yaml`, through `t`);
numbers and dates from `forecaster.units`. Templates are Jinja2 with autoescape on.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape

from alerts.grouping import AlertGroup, episode_start, group_alerts, root_headline
from alerts.message import plain_text
from alerts.report import REPORT_FOLDER, kpi_page
from alerts.report.charts import kpi_chart, sparkline
from forecaster.catalog import load_catalog
from forecaster.goals import GoalStatus, target_status
from forecaster.i18n import current_locale, kpi_name, t, use_locale
from forecaster.pipeline import CheckReport, SeriesResult, check
from forecaster.settings import KPIConfig, Settings
from forecaster.types import Alert, BadInputError, Judgement, segment_label
from forecaster.units import format_change, format_percent, format_period, format_value

PHASES = ("see", "think", "do", "care")  # the customer journey, in order (DOMAIN.md)
REPORT_WINDOW = 56  # judged periods (with their band) the report's own check keeps per series: 8 weeks of days
SPARK_PERIODS = 28  # periods a sparkline draws
STORED_GROUPS = 200  # newest incident groups read from the store (a KPI page shows its own)

__all__ = ["PHASES", "REPORT_WINDOW", "build_report", "kpi_phase", "report_check", "report_folder", "write_report"]


def report_folder(settings: Settings) -> Path:
    """Where the daemon builds the report and serves it from: `<state_dir>/report`."""
    return Path(settings.state_dir).expanduser() / REPORT_FOLDER


def report_check(settings: Settings, at: pd.Timestamp | None = None,
                 feedback: Mapping[tuple[str, str], Any] | None = None, **kwargs: Any) -> CheckReport:
    """The check a report is built from: `check` with every KPI's window widened to
    `REPORT_WINDOW` judged periods (the chart's band and the model's figures; the verdicts are
    the same: the window is what is reported, not how it is judged). kwargs go to `check`."""
    wider = {name: kpi.model_copy(update={"check_window": max(kpi.check_window, REPORT_WINDOW)})
             for name, kpi in settings.kpis.items()}
    return check(settings.model_copy(update={"kpis": wider}), at=at, feedback=feedback, **kwargs)


def kpi_phase(name: str, kpi: KPIConfig) -> str | None:
    """The KPI's funnel phase: its own `phase`, else the catalogue's for a KPI of that name (a
    config that writes the formula itself is not laid over the catalogue), else None."""
    if kpi.phase is not None:
        return kpi.phase
    phase = load_catalog().get(name, {}).get("phase")
    return phase if phase in PHASES else None


def build_report(settings: Settings, out: Path, at: pd.Timestamp | None = None, store: Any = None,
                 locale: str | None = None, **kwargs: Any) -> Path:
    """Run one check (`report_check`) and write the report to `out`; returns index.html's path.
    store: an open `alerts.store.Store` for the recorded incidents and feedback (None: without).
    The detector applies the store's feedback as the daemon would."""
    feedback = None
    if store is not None:
        from alerts.feedback import series_feedback

        feedback = series_feedback(store.feedback_records())
    report = report_check(settings, at=at, feedback=feedback, **kwargs)
    return write_report(settings, report, out, store=store, locale=locale)


def write_report(settings: Settings, report: CheckReport, out: Path, store: Any = None, locale: str | None = None,
                 now: datetime | None = None) -> Path:
    """Write the report of an existing check (the daemon's cycle) to `out`; index.html's path.

    Each file is written whole and then renamed into place, so a reader (the daemon's /report)
    never sees half a page. locale: "en" or "nl" (default: the current one, which the CLI and the
    daemon set from `--locale` or the config's `locale`)."""
    code = locale or current_locale()
    with use_locale(code):
        pages = _pages(settings, report, store, now or datetime.now(timezone.utc))
    out = Path(out)
    for relative, html in pages.items():
        _write(out / relative, html)
    return out / "index.html"


# -- the model of the pages ------------------------------------------------------------------


@dataclass
class _KPI:
    """What the index and the KPI page show of one KPI."""

    name: str
    title: str
    href: str
    kpi: KPIConfig
    phase: str | None
    total: SeriesResult | None
    last: Judgement | None
    period: pd.Timestamp | None
    alerts: list[Alert] = field(default_factory=list)
    goal: GoalStatus | None = None
    goal_note: str = ""


def _pages(settings: Settings, report: CheckReport, store: Any, now: datetime) -> dict[str, str]:
    env = _environment()
    groups = group_alerts(report.alerts, settings)
    views = [_view(name, settings, report) for name in settings.kpis]
    stored, store_note = _stored(store, settings)
    judged = sorted({v.period for v in views if v.period is not None})
    common = {"t": t, "lang": current_locale(), "built": format_period(pd.Timestamp(now), "h"),
              "judged": ", ".join(format_period(p, "D") for p in judged) or "-"}
    pages = {"index.html": env.get_template("index.html").render(
        **common, root="", phases=_phases(views, settings), footer=_footer(common))}
    for view in views:
        mine = [g for g in groups if view.name in g.kpis]
        pages[view.href] = env.get_template("kpi.html").render(
            **common, root="../", k=_page(view, settings, report, mine),
            stored=[_stored_view(g) for g in stored if any(m.kpi == view.name for m in g["group"].members)],
            store_note=store_note, footer=_footer(common))
    return pages


def _view(name: str, settings: Settings, report: CheckReport) -> _KPI:
    kpi = settings.kpi(name)
    period = report.period.get(name)
    total = next((r for r in report.results if r.series.name == name and not r.series.segment), None)
    last = None
    if total is not None and total.judgements and total.judgements[-1].period == period:
        last = total.judgements[-1]
    view = _KPI(name, kpi_name(name), kpi_page(name), kpi, kpi_phase(name, kpi), total, last, period,
                alerts=[a for a in report.alerts if a.anomaly.kpi == name])
    if kpi.target is not None and total is not None and period is not None:
        try:
            view.goal = target_status(name, kpi, total.series, period, settings.country)
        except BadInputError:
            view.goal_note = t("report.target.passed")
        except (ValueError, RuntimeError):  # too little history to forecast to the deadline
            view.goal_note = t("report.target.unknown")
    return view


def _phases(views: Sequence[_KPI], settings: Settings) -> list[dict[str, Any]]:
    """The index's groups: the four phases in journey order (an empty one says which catalogue
    KPIs belong there), then the KPIs without a phase."""
    catalog = load_catalog()
    out = []
    for phase in PHASES:
        mine = [v for v in views if v.phase == phase]
        examples = [kpi_name(n) for n, entry in catalog.items() if entry.get("phase") == phase][:4]
        out.append({"id": f"phase-{phase}", "title": t(f"phase.{phase}"), "intro": t(f"report.phase_intro.{phase}"),
                    "empty": t("report.phase_empty", examples=", ".join(examples)),
                    "rows": [_row(v) for v in mine]})
    rest = [v for v in views if v.phase is None]
    if rest:
        out.append({"id": "phase-none", "title": t("report.no_phase"), "intro": t("report.phase_intro.none"),
                    "empty": "", "rows": [_row(v) for v in rest]})
    return out


def _row(view: _KPI) -> dict[str, Any]:
    unit = view.kpi.unit
    last = view.last
    spark = ""
    if view.total is not None:
        values = view.total.series.values.iloc[-SPARK_PERIODS:]
        clean = values.dropna()
        if len(clean):
            spark = sparkline(
                f"spark-{_slug(view.name)}", values,
                t("report.spark.title", kpi=view.title, periods=len(values)),
                t("report.spark.desc", first=format_period(values.index[0], view.kpi.freq),
                  last=format_period(values.index[-1], view.kpi.freq), low=format_value(float(clean.min()), unit),
                  high=format_value(float(clean.max()), unit), value=format_value(float(clean.iloc[-1]), unit)))
    return {
        "name": view.name, "title": view.title, "href": view.href, "description": view.kpi.description,
        "latest": format_value(last.actual, unit) if last else t("report.no_value"),
        "expected": format_value(last.expected, unit) if last else "",
        "change": _change(last, unit),
        "target": _target(view), "chance": _chance(view), "at_risk": bool(view.goal and not view.goal.on_track),
        "spark": spark, **_status(view),
    }


def _status(view: _KPI) -> dict[str, str]:
    """The KPI's state in one word and a CSS class (the word carries it; the colour repeats it)."""
    if view.alerts:
        bad = any(a.anomaly.is_bad for a in view.alerts)
        key = "alert" if bad else "good_news"
        return {"status": t(f"report.status.{key}", count=len(view.alerts)), "status_class": key}
    if view.last is None:
        return {"status": t("report.status.not_judged", count=0), "status_class": "none"}
    return {"status": t("report.status.normal", count=0), "status_class": "ok"}


def _change(last: Judgement | None, unit: str) -> str:
    if last is None or _missing(last.actual) or _missing(last.expected):
        return ""
    return format_change(last.actual, last.expected, unit)


def _target(view: _KPI) -> str:
    target = view.kpi.target
    if target is None:
        return t("report.target.none")
    by = format_period(pd.Timestamp(target.by), "D")
    return t("report.target.value", value=format_value(target.value, view.kpi.unit), by=by)


def _chance(view: _KPI) -> str:
    if view.goal is None:
        return view.goal_note
    verdict = t("report.target.on_track") if view.goal.on_track else t("report.target.at_risk")
    return t("report.target.chance", chance=_percent(view.goal.probability), verdict=verdict)


def _page(view: _KPI, settings: Settings, report: CheckReport, groups: Sequence[AlertGroup]) -> dict[str, Any]:
    kpi, unit = view.kpi, view.kpi.unit
    last = view.last
    page: dict[str, Any] = {"row": _row(view), "name": view.name, "title": view.title,
                            "description": kpi.description, "goal": kpi.goal,
                            "phase": t(f"phase.{view.phase}") if view.phase else t("report.no_phase")}
    if last is not None and view.period is not None:
        page["latest"] = t("report.latest.line", value=format_value(last.actual, unit),
                           period=format_period(view.period, kpi.freq), expected=format_value(last.expected, unit),
                           band=_band(last, unit, kpi.level), change=_change(last, unit))
    else:
        page["latest"] = t("report.latest.not_judged", why=view.total.skipped if view.total else
                           next((n for n in report.no_data if n.startswith(f"{view.name}:")), "-"))
    if view.goal is not None:
        g = view.goal
        page["target"] = t("report.target.line", value=format_value(g.target, unit), by=format_period(g.by, "D"),
                           verdict=_chance(view), forecast=format_value(g.forecast, unit),
                           current=format_value(g.current, unit))
    elif kpi.target is not None:
        page["target"] = f"{_target(view)}: {view.goal_note}"
    page["chart"] = _chart(view) if view.total is not None else ""
    page["incidents"] = [_incident(view, group) for group in groups]
    page["segment_charts"] = [_segment_chart(view, report, a) for a in view.alerts if a.anomaly.segment][:3]
    page["segments"] = _segments(view, report)
    page["model"] = _model(view)
    return page


def _chart(view: _KPI, result: SeriesResult | None = None, where: str = "") -> str:
    result = result or view.total
    assert result is not None
    kpi, unit = view.kpi, view.kpi.unit
    values = result.series.values.iloc[-90:]
    judged = [j for j in result.judgements if not _missing(j.expected)]
    flagged = sum(1 for j in judged if j.is_anomaly)
    last = judged[-1] if judged else None
    per = t(f"report.per.{'hour' if kpi.freq == 'h' else 'day'}")
    label = t("report.segment_of", kpi=view.title, where=where) if where else view.title
    description = t(
        "report.chart.desc", kpi=label, per=per,
        first=format_period(values.index[0], kpi.freq) if len(values) else "-",
        last=format_period(values.index[-1], kpi.freq) if len(values) else "-",
        level=_percent(kpi.level), judged=len(judged), flagged=flagged,
        value=format_value(last.actual, unit) if last else "-",
        expected=format_value(last.expected, unit) if last else "-")
    labels = {"actual": t("report.legend.actual"), "expected": t("report.legend.expected"),
              "band": t("report.legend.band", level=_percent(kpi.level)), "anomaly": t("report.legend.anomaly")}
    chart_id = f"chart-{_slug(view.name)}{'-' + _slug(where) if where else ''}"
    return kpi_chart(chart_id, values, judged, unit, t("report.chart.title", kpi=label),
                     description, labels)


def _segment_chart(view: _KPI, report: CheckReport, alert: Alert) -> dict[str, str]:
    where = segment_label(alert.anomaly.segment)
    return {"where": where, "svg": _chart(view, report.result_for(alert.anomaly), where)}


def _incident(view: _KPI, group: AlertGroup) -> dict[str, Any]:
    mine = [a for a in group.members if a.anomaly.kpi == view.name]
    return {
        "headline": root_headline(group),
        "since": format_period(group.first_period, group.root.anomaly.freq),
        "severity": t(f"report.severity.{group.severity.value}"),
        "severity_class": group.severity.value,
        "why": group.why if len(group.members) > 1 else "",
        "root_here": group.root.anomaly.kpi == view.name,
        "members": [{"text": plain_text(a, max_hints=0), "here": a.anomaly.kpi == view.name,
                     "href": kpi_page(a.anomaly.kpi)} for a in group.members],
        "hints": [h.text for h in (mine[0].hints if mine else group.root.hints)][:6],
        "start": format_period(episode_start(mine[0].anomaly if mine else group.root.anomaly),
                               group.root.anomaly.freq),
    }


def _segments(view: _KPI, report: CheckReport) -> list[dict[str, Any]]:
    unit = view.kpi.unit
    rows = []
    for result in report.results:
        if result.series.name != view.name:
            continue
        last = result.judgements[-1] if result.judgements and result.judgements[-1].period == view.period else None
        alerted = result.anomaly is not None and any(a.anomaly is result.anomaly for a in view.alerts)
        anomalous = bool(last and last.is_anomaly)
        rows.append({
            "where": segment_label(result.series.segment) if result.series.segment else t("report.total"),
            "total": not result.series.segment,
            "value": format_value(last.actual, unit) if last else t("report.no_value"),
            "expected": format_value(last.expected, unit) if last and not _missing(last.expected) else "",
            "change": _change(last, unit),
            "anomalous": (t("report.yes_alert") if alerted else t("report.yes") if anomalous else
                          t("report.no") if last else (result.held_back or result.skipped or "-")),
            "flag": "alert" if alerted else "anomalous" if anomalous else "",
        })
    return rows


def _model(view: _KPI) -> dict[str, Any]:
    """Which model judged the window and how well: one-step MAPE of the periods inside the band,
    and the band's coverage (judged periods inside it / judged periods)."""
    result = view.total
    judged = [j for j in (result.judgements if result else ()) if not _missing(j.expected) and not _missing(j.actual)]
    models = Counter(j.model for j in judged if j.model)
    inside = [j for j in judged if j.lower <= j.actual <= j.upper]
    errors = [abs(j.actual - j.expected) / abs(j.actual) for j in inside if j.actual]
    return {
        "models": ", ".join(t("report.model.count", model=m, periods=n) for m, n in models.most_common()) or "-",
        "configured": view.kpi.model,
        "level": _percent(view.kpi.level),
        "mape": _percent(sum(errors) / len(errors)) if errors else "-",
        "mape_periods": len(errors),
        "coverage": t("report.model.coverage_value", inside=len(inside), judged=len(judged),
                      share=_percent(len(inside) / len(judged))) if judged else "-",
        "window": len(judged),
    }


def _band(last: Judgement, unit: str, level: float) -> str:
    return t("report.band", level=_percent(level), lower=format_value(last.lower, unit),
             upper=format_value(last.upper, unit))


def _stored(store: Any, settings: Settings) -> tuple[list[dict[str, Any]], str]:
    """The newest recorded incident groups with their feedback, and a note when there is no store."""
    if store is None:
        return [], t("report.stored.no_store")
    groups = store.groups(limit=STORED_GROUPS)
    return [{"group": g, "feedback": store.feedback_for(g.key)} for g in groups], ""


def _stored_view(item: Mapping[str, Any]) -> dict[str, Any]:
    group = item["group"]
    when = pd.Timestamp(group.first_period)
    closed = group.closed_by.replace(" ", "_") if group.closed_by else ""
    state = t("report.stored.open") if group.state == "open" else t(
        "report.stored.closed", how=t(f"report.closed_by.{closed}") if closed else "-")
    feedback = [t("report.stored.feedback_line", verdict=t(f"report.verdict.{f['verdict']}"), user=f["user"] or "-",
                  when=format_period(pd.Timestamp(f["created_at"]), "D")) for f in item["feedback"]
                if f["verdict"] in ("expected", "false_alarm", "snooze", "resolve")]
    return {"id": group.id, "since": format_period(when, "D"), "state": state, "open": group.state == "open",
            "root": f"{kpi_name(group.root_kpi)}{' [' + group.root_segment + ']' if group.root_segment else ''}",
            "summary": group.summary, "members": len(group.members), "feedback": feedback}


def _footer(common: Mapping[str, Any]) -> str:
    return t("report.footer", built=common["built"], judged=common["judged"])


# -- helpers -----------------------------------------------------------------------------------


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("alerts.report", "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    return env


def _percent(share: float) -> str:
    """A probability or share as a whole percent ("95%"), one decimal under 10% ("2.5%")."""
    if _missing(share):
        return "-"
    return format_percent(share, 1 if 0 < share < 0.1 else 0)


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-") or "x"


def _write(path: Path, text: str) -> None:
    """Write `text` to `path` whole: a temp file beside it, then an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temp, 0o644)  # mkstemp makes it 0600; a web server in front of the folder reads it
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
