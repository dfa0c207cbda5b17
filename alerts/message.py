"""Alerts as data, as text and as Slack Block Kit (pure functions: no I/O).

Slack's limits are kept here, where the message is built: at most 50 blocks, 3,000 characters
per section, 150 per header, 40,000 in the fallback text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import pandas as pd

from alerts.report import kpi_page
from forecaster.i18n import kpi_name, t, tn
from forecaster.types import Alert, Hint, segment_label
from forecaster.units import format_change, format_number, format_ordinal, format_percent, format_value

MAX_BLOCKS = 50
MAX_SECTION_CHARS = 3000
MAX_HEADER_CHARS = 150
MAX_TEXT_CHARS = 40000
BLOCKS_PER_ALERT = 3  # headline section, numbers/hints section, divider
ALERTS_SHOWN = (MAX_BLOCKS - 3) // BLOCKS_PER_ALERT  # per message; a block for "and N more" and one for the footer
SEVERITY_EMOJI = {"critical": ":red_circle:", "warning": ":large_orange_circle:", "good_news": ":large_green_circle:"}

SEVERITY_MARK = {"critical": "[CRITICAL]", "warning": "[WARNING]", "good_news": "[GOOD NEWS]"}
"""The English marks; `severity_mark` gives them in the current locale."""


def severity_mark(severity: str) -> str:
    """The plain-text mark of a severity in the current locale: "[CRITICAL]" ("[KRITIEK]")."""
    return t(f"alert.severity_{severity}")


def alert_to_dict(alert: Alert) -> dict[str, Any]:
    """The JSON shape of one alert (DESIGN.md: `check`/`demo --format json`); hints best first."""
    anomaly = alert.anomaly
    return {
        "kpi": anomaly.kpi,
        "segment": dict(anomaly.segment),
        "period": _iso(anomaly.period),
        "actual": _number(anomaly.actual),
        "expected": _number(anomaly.expected),
        "lower": _number(anomaly.lower),
        "upper": _number(anomaly.upper),
        "direction": anomaly.direction.value,
        "severity": anomaly.severity.value,
        "score": round(anomaly.score, 6),
        "text": alert.text,
        "hints": [hint_to_dict(hint) for hint in alert.hints],
        "good_news": not anomaly.is_bad,
        "deviation": _number(anomaly.deviation),
        "level": anomaly.level,
        "unit": anomaly.unit,
        "model": anomaly.model,
        "run_length": anomaly.run_length,
    }


def hint_to_dict(hint: Hint) -> dict[str, Any]:
    """One hint: kind, kpi, segment, text, plus its evidence and data."""
    return {
        "kind": hint.kind,
        "kpi": hint.kpi,
        "segment": dict(hint.segment),
        "text": hint.text,
        "evidence": round(hint.evidence, 6),
        **{key: _plain(value) for key, value in hint.data.items()},
    }


def plain_text(alert: Alert, max_hints: int = 4) -> str:
    """The alert as a few lines of text: severity and headline, then the top hints."""
    lines = [f"{severity_mark(alert.anomaly.severity.value)} {alert.text}"]
    lines.extend(f"  - {hint.text}" for hint in alert.hints[:max_hints])
    return "\n".join(lines)


def alert_slug(alert: Alert) -> str:
    """A file-name-safe name for the alert's chart: `conversion_rate__device-mobile__2025-12-10`."""
    anomaly = alert.anomaly
    where = segment_label(anomaly.segment).replace("=", "-").replace(", ", "_")
    return f"{anomaly.kpi}__{where}__{anomaly.period.strftime('%Y-%m-%dT%H%M')}".replace("T0000", "")


def _iso(value: pd.Timestamp) -> str:
    return value.isoformat()


def _number(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def message_blocks(
    alerts: Sequence[Alert],
    title: str,
    dashboard_url: str = "",
    max_hints: int = 3,
    notes: Sequence[str] = (),
    footer: str = "",
) -> list[dict[str, Any]]:
    """One Slack message for the alerts of one check cycle and channel (Block Kit blocks).

    title: the header ("kpiwatch: 2 anomalies, Wed 10 Dec 2025"). dashboard_url: a template with
    `{kpi}`, `{segment}` and `{period}` (URL-quoted), or "" for no link. notes: context lines
    under an alert by its index, e.g. "still ongoing since ..." for a repeat (`notes[i]`).
    footer: a last context line (e.g. where the charts are when Slack gets none).
    Alerts that do not fit in Slack's 50 blocks are counted in a last line instead.
    """
    blocks: list[dict[str, Any]] = [{"type": "header", "text": _plain_text_object(title, MAX_HEADER_CHARS)}]
    room = ALERTS_SHOWN
    for index, alert in enumerate(alerts[:room]):
        note = notes[index] if index < len(notes) else ""
        blocks.extend(alert_blocks(alert, dashboard_url, max_hints, note))
    if len(alerts) > room:
        rest = len(alerts) - room
        blocks.append(_context(t("card.more_alerts", count=rest)))
    if footer:
        blocks.append(_context(footer))
    return blocks


def alert_blocks(alert: Alert, dashboard_url: str = "", max_hints: int = 3, note: str = "") -> list[dict[str, Any]]:
    """Three blocks for one alert: the headline, the numbers and top hints (with the impact and a
    dashboard link), a divider."""
    anomaly = alert.anomaly
    emoji = SEVERITY_EMOJI[anomaly.severity.value]
    where = f" · {_escape(segment_label(anomaly.segment))}" if anomaly.segment else ""
    arrow = "↑" if anomaly.direction.value == "up" else "↓"
    severity = t(f"card.severity_{anomaly.severity.value}")
    headline = f"{emoji} *{severity}* · *{_escape(kpi_name(anomaly.kpi))}* {arrow}{where}\n{_escape(alert.text)}"
    if note:
        headline += f"\n_{_escape(note)}_"
    unit = anomaly.unit
    numbers = t("card.numbers", actual=format_value(anomaly.actual, unit), expected=format_value(anomaly.expected, unit),
                level=format_percent(anomaly.level), lower=format_value(anomaly.lower, unit),
                upper=format_value(anomaly.upper, unit), change=format_change(anomaly.actual, anomaly.expected, unit))
    lines = [numbers]
    impact = [h for h in alert.hints if h.kind == "impact"]
    if impact:
        lines.append(f":moneybag: {_escape(impact[0].text)}")
    others = [h for h in alert.hints if h.kind != "impact"][:max_hints]
    lines.extend(f"• {_escape(hint.text)}" for hint in others)
    link = dashboard_link(dashboard_url, alert)
    if link:
        lines.append(f"<{link}|{t('card.dashboard')}>")
    return [_section(headline), _section("\n".join(lines)), {"type": "divider"}]


MEMBERS_SHOWN = 20
"""Member lines an incident card lists under its root cause; the rest are counted."""
FEEDBACK_BLOCK = "kpiwatch-feedback"  # the buttons' block_id (`alerts.actions` reads the clicks)
FEEDBACK_LINES_BLOCK = "kpiwatch-feedback-lines"  # "marked false alarm by @ana", under the members
BUTTONS: tuple[str, ...] = ("expected", "false_alarm", "snooze", "resolve")
"""The verdict of each button; its action_id is `kpiwatch_<verdict>`, its value the incident's key, its
label the catalogue's `card.button_<verdict>`."""


def incident_blocks(
    members: Sequence[Alert],
    title: str,
    dashboard_url: str = "",
    max_hints: int = 3,
    note: str = "",
    why: str = "",
    notes: Sequence[str] = (),
    buttons: str = "",
    footer: str = "",
    report_url: str = "",
) -> list[dict[str, Any]]:
    """One Slack card for one incident (Block Kit blocks): why the root is named the root cause,
    the root cause (`members[0]`, with its numbers and hints), one line per other member, what
    feedback changed (`notes`: "sensitivity lowered ..."), and the feedback buttons when
    `buttons` is the incident's key ("" = no buttons: no interactivity is configured).

    note: a context line under the root ("still ongoing since ...", "late: ...").
    report_url: the report's address (`alerting.report_url`): a link to the root KPI's page.
    """
    root, others = members[0], members[1:]
    blocks: list[dict[str, Any]] = [{"type": "header", "text": _plain_text_object(title, MAX_HEADER_CHARS)}]
    if why:  # the answer first: what started it
        blocks.append(_context(t("card.root_cause", why=_escape(why))))
    blocks.extend(alert_blocks(root, dashboard_url, max_hints, note)[:2])
    if report_url:
        blocks.append(_context(f"<{report_url.rstrip('/')}/{kpi_page(root.anomaly.kpi)}|{t('report.card_link')}>"))
    if others:
        lines = [member_line(alert) for alert in others[:MEMBERS_SHOWN]]
        if len(others) > MEMBERS_SHOWN:
            lines.append(t("card.more_members", count=len(others) - MEMBERS_SHOWN))
        blocks.append(_section(t("card.also") + "\n" + "\n".join(lines)))
    if notes:
        blocks.append(_context("\n".join(f":information_source: {_escape(line)}" for line in notes)))
    if buttons:
        blocks.append(feedback_buttons(buttons))
    if footer:
        blocks.append(_context(footer))
    return blocks


def member_line(alert: Alert) -> str:
    """One member of an incident in one line: "• *bounce_rate* ↑ device=mobile: 65.71% vs 51.16%
    expected, +28.4% (+14.55 points), 3rd day in a row"."""
    anomaly = alert.anomaly
    arrow = "↑" if anomaly.direction.value == "up" else "↓"
    where = f" {_escape(segment_label(anomaly.segment))}" if anomaly.segment else f" {t('word.total')}"
    unit = t({"D": "word.day", "h": "word.hour", "W": "word.week", "MS": "word.month"}.get(anomaly.freq, "word.period"))
    days = t("card.member_run", ordinal=format_ordinal(anomaly.run_length), unit=unit) if anomaly.run_length > 1 else ""
    return t("card.member", kpi=_escape(kpi_name(anomaly.kpi)), arrow=arrow, where=where,
             actual=format_value(anomaly.actual, anomaly.unit), expected=format_value(anomaly.expected, anomaly.unit),
             change=format_change(anomaly.actual, anomaly.expected, anomaly.unit), run=days)


def feedback_buttons(incident_key: str) -> dict[str, Any]:
    """The actions block: Expected, False alarm, Snooze 7 days, Resolve (value: the incident's key)."""
    elements = []
    for verdict in BUTTONS:
        button: dict[str, Any] = {"type": "button", "action_id": f"kpiwatch_{verdict}", "value": incident_key[:2000],
                                  "text": _plain_text_object(t(f"card.button_{verdict}"), 75)}
        if verdict == "false_alarm":
            button["confirm"] = {
                "title": _plain_text_object(t("card.confirm_title"), 100),
                "text": {"type": "mrkdwn", "text": t("card.confirm_text")},
                "confirm": _plain_text_object(t("card.confirm_yes"), 30),
                "deny": _plain_text_object(t("card.confirm_no"), 30)}
        elements.append(button)
    return {"type": "actions", "block_id": FEEDBACK_BLOCK, "elements": elements}


def feedback_blocks(blocks: Sequence[dict[str, Any]], lines: Sequence[str]) -> list[dict[str, Any]]:
    """The card's blocks with the feedback lines ("marked false alarm by @ana") just above its
    buttons (for chat.update; rendered from the original blocks on every edit)."""
    kept = [dict(b) for b in blocks if b.get("block_id") != FEEDBACK_LINES_BLOCK][: MAX_BLOCKS - 1]
    if not lines:
        return kept
    block = _context("\n".join(f":speech_balloon: {_escape(line)}" for line in lines))
    block["block_id"] = FEEDBACK_LINES_BLOCK
    at = next((i for i, b in enumerate(kept) if b.get("block_id") == FEEDBACK_BLOCK), len(kept))
    return kept[:at] + [block] + kept[at:]


def card_text(members: Sequence[Alert], title: str, why: str = "", max_hints: int = 3) -> str:
    """The plain-text fallback of an incident card."""
    parts = [title, plain_text(members[0], max_hints)]
    parts.extend(member_line(alert).replace("*", "") for alert in members[1:])
    if why:
        parts.append(t("card.root_cause", why=why))
    return _clip("\n".join(parts), MAX_TEXT_CHARS)


def message_text(alerts: Sequence[Alert], title: str, max_hints: int = 3) -> str:
    """The plain-text fallback of a message (notifications, webhooks without blocks)."""
    parts = [title] + [plain_text(alert, max_hints) for alert in alerts]
    return _clip("\n".join(parts), MAX_TEXT_CHARS)


def resolved_text(kpi: str, segment: str, summary: str, at: str) -> str:
    """The thread reply and update line when an incident is over."""
    return t("card.resolved", kpi=kpi_name(kpi), where=t("word.on_segment", segment=segment) if segment else "",
             at=at, summary=summary)


def incident_resolved_text(root_kpi: str, root_segment: str, members: int, summary: str, at: str) -> str:
    """The thread reply and card line when an incident's last open member is back to normal."""
    if members == 1:
        return resolved_text(root_kpi, root_segment, summary, at)
    where = t("word.on_segment", segment=root_segment) if root_segment else ""
    return t("card.resolved_incident", kpi=kpi_name(root_kpi), where=where, count=members - 1, at=at, summary=summary)


def resolved_blocks(blocks: Sequence[dict[str, Any]], lines: Sequence[str]) -> list[dict[str, Any]]:
    """The original message's blocks with the resolved lines under its header (for chat.update)."""
    kept = [dict(b) for b in blocks if b.get("block_id") != "kpiwatch-resolved"][: MAX_BLOCKS - 1]
    if not lines:
        return kept
    resolved = _context("\n".join(lines))
    resolved["block_id"] = "kpiwatch-resolved"
    return kept[:1] + [resolved] + kept[1:]


def revised_blocks(blocks: Sequence[dict[str, Any]], lines: Sequence[str]) -> list[dict[str, Any]]:
    """The message's blocks with the revised-value lines under its header, below the resolved
    lines if there are any (for chat.update); both survive every later edit because each edit
    renders both from the original blocks."""
    kept = [dict(b) for b in blocks if b.get("block_id") != "kpiwatch-revised"][: MAX_BLOCKS - 1]
    if not lines:
        return kept
    revised = _context("\n".join(f":pencil2: {line}" for line in lines))
    revised["block_id"] = "kpiwatch-revised"
    at = 2 if len(kept) > 1 and kept[1].get("block_id") == "kpiwatch-resolved" else 1
    return kept[:at] + [revised] + kept[at:]


def dashboard_link(template: str, alert: Alert) -> str:
    """The dashboard URL for an alert: `{kpi}`, `{segment}` (`channel=email`) and `{period}`
    (ISO date or time) filled in, URL-quoted; "" when no template is configured."""
    if not template:
        return ""
    anomaly = alert.anomaly
    period = anomaly.period.date().isoformat() if anomaly.freq == "D" else anomaly.period.isoformat()
    segment = ",".join(f"{k}={v}" for k, v in sorted(anomaly.segment.items()))
    return template.format(kpi=quote(anomaly.kpi), segment=quote(segment), period=quote(period))


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, MAX_SECTION_CHARS)}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(text, MAX_SECTION_CHARS - 1000)}]}


def _plain_text_object(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": _clip(text, limit), "emoji": True}


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _escape(text: str) -> str:
    """Slack's three control characters in mrkdwn (a KPI or segment name may hold them)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# -- the daemon's own messages (it only schedules and calls; every text it sends is built here) --


def no_data_text(kpi: str, period: str, found: str, hours: float) -> str:
    """A period still incomplete `hours` after it ended: not judged, and said so.

    period: the period as people read it (`format_period`); found: what it has, e.g. "has 40% of
    its usual rows" or "has no value".
    """
    return t("card.no_data", kpi=kpi_name(kpi), period=period, found=found, hours=format_number(hours))


def failing_text(kpi: str, kind: str, cycles: int, since: pd.Timestamp, error: str) -> str:
    """A KPI that failed `cycles` cycles in a row since `since` (UTC): kind "source" (its source
    could not be read) or "job" (the data or a fit fails every time, e.g. a time-out)."""
    key = "card.failing_source" if kind == "source" else "card.failing_job"
    return t(key, kpi=kpi_name(kpi), cycles=cycles, since=f"{since:%Y-%m-%d %H:%M}", error=error)


def back_text(kpi: str, kind: str) -> str:
    """The reply in a failing alert's thread once the KPI is judged again (kind as `failing_text`)."""
    return t("card.back_source" if kind == "source" else "card.back_job", kpi=kpi_name(kpi))


def late_text(period: pd.Timestamp, latest: pd.Timestamp, freq: str) -> str:
    """The note on an alert about a period older than the latest closed one ("" when it is the
    latest): how many days (freq "D") or hours after it closed it was judged."""
    if period >= latest:
        return ""
    step = pd.Timedelta(days=1) if freq == "D" else pd.Timedelta(hours=1)
    behind = int((latest - period) / step)
    return tn("card.late_day" if freq == "D" else "card.late_hour", behind)
