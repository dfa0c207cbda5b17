"""The whole pipeline on the demo shop against its ground truth (forecaster.demo.INCIDENTS).

Each incident, checked the morning after its last day, must alert on the right KPI, segment and
direction; the holiday peaks that have an earlier year to learn from must stay quiet.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from alerts.message import hint_to_dict
from forecaster.goals import ON_TRACK
from forecaster.pipeline import CheckReport, check
from forecaster.settings import Settings, load_config
from forecaster.demo import DEMO_TIMEZONE, INCIDENTS, QUIET_DAYS, Incident
from forecaster.types import Severity

pytestmark = pytest.mark.slow

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "config" / "kpiwatch.yaml"


@pytest.fixture(scope="module")
def demo_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    state = tmp_path_factory.mktemp("state")  # auto's model choices, shared by this module's checks
    return load_config(DEMO_CONFIG).model_copy(update={"state_dir": str(state)})


def morning_after(day: date) -> pd.Timestamp:
    """08:00 local on the day after `day`: that day is then the last closed period."""
    return pd.Timestamp(day + timedelta(days=1)).tz_localize(DEMO_TIMEZONE) + pd.Timedelta(hours=8)


def found(report: CheckReport, kpi: str, segment: dict[str, str], direction: str):
    return [
        a for a in report.alerts
        if a.anomaly.kpi == kpi and dict(a.anomaly.segment) == segment and a.anomaly.direction.value == direction
    ]


@pytest.mark.parametrize("incident", INCIDENTS, ids=lambda i: f"{i.number}-{i.name}")
def test_each_incident_alerts_on_the_right_kpi_segment_and_direction(demo_settings: Settings, incident: Incident) -> None:
    kpis = sorted({expected.kpi for expected in incident.expected})
    report = check(demo_settings, at=morning_after(incident.end), kpis=kpis)
    for expected in incident.expected:
        alerts = found(report, expected.kpi, dict(expected.segment), expected.direction)
        assert alerts, f"incident {incident.number}: no {expected} among {[a.text for a in report.alerts]}"
        severity = alerts[0].anomaly.severity
        assert (severity is Severity.GOOD_NEWS) == incident.good_news, alerts[0].text


def test_good_news_is_not_reported_as_an_incident(demo_settings: Settings) -> None:
    (press,) = [i for i in INCIDENTS if i.good_news]
    report = check(demo_settings, at=morning_after(press.end), kpis=["sessions"])
    (alert,) = found(report, "sessions", dict(press.segment), "up")
    assert not alert.anomaly.is_bad
    assert alert.text.startswith("Good news:")


LEARNABLE_QUIET_DAYS = [(day, label) for day, label in QUIET_DAYS if day.year >= 2024]


@pytest.mark.parametrize("day,label", LEARNABLE_QUIET_DAYS, ids=[label for _, label in LEARNABLE_QUIET_DAYS])
def test_holiday_peaks_with_an_earlier_year_stay_quiet(demo_settings: Settings, day: date, label: str) -> None:
    report = check(demo_settings, at=morning_after(day))
    assert report.alerts == (), f"{label}: {[a.text for a in report.alerts]}"


def test_the_quiet_day_list_covers_the_peaks() -> None:
    labels = " ".join(label for _, label in LEARNABLE_QUIET_DAYS)
    assert "Black Friday 2024" in labels and "Black Friday 2025" in labels and "Christmas" in labels


def _kinds(alert, kind: str):
    return [hint for hint in alert.hints if hint.kind == kind]


@pytest.fixture(scope="module")
def slowdown_report(demo_settings: Settings) -> CheckReport:
    """The full check (every KPI) the morning after incident 1, shared by the tests that read it."""
    (slowdown,) = [i for i in INCIDENTS if i.number == 1]
    return check(demo_settings, at=morning_after(slowdown.end))


def test_mobile_slowdown_points_at_page_load_and_bounce_rate_on_mobile(slowdown_report: CheckReport) -> None:
    (alert,) = found(slowdown_report, "conversion_rate", {"device": "mobile"}, "down")
    related = _kinds(alert, "related")
    assert {(h.kpi, tuple(h.segment.items())) for h in related[:2]} == {
        ("page_load_time", (("device", "mobile"),)),
        ("bounce_rate", (("device", "mobile"),)),
    }, [h.text for h in related]
    assert all(h.data["anomalous"] for h in related[:2])
    (component,) = _kinds(alert, "component")  # conversions fell, sessions did not
    assert component.data["driver"] == "numerator" and component.data["changes"]["conversions"] < -0.3
    (mix,) = [h for h in _kinds(alert, "segment") if "rate_effect" in h.data]
    assert mix.text.startswith("rate effect") and abs(mix.data["rate_effect"]) > 10 * abs(mix.data["mix_effect"])
    segments = [h for h in _kinds(alert, "segment") if "share" in h.data]
    assert segments[0].segment == {"device": "mobile"}
    assert segments[0].data["share"] == max(h.data.get("share", 0) for h in segments)


def test_email_outage_is_named_a_likely_tracking_problem(demo_settings: Settings) -> None:
    (outage,) = [i for i in INCIDENTS if i.number == 2]
    report = check(demo_settings, at=morning_after(outage.end), kpis=["sessions"])
    (alert,) = found(report, "sessions", {"channel": "email"}, "down")
    assert alert.hints[0].kind == "context" and "tracking" in alert.hints[0].text, [h.text for h in alert.hints]


def test_cpc_spike_names_cpc_as_the_driver_of_cpa_and_roas(demo_settings: Settings) -> None:
    (spike,) = [i for i in INCIDENTS if i.number == 3]
    report = check(demo_settings, at=morning_after(spike.end), kpis=["cpa", "roas", "cpc", "conversion_rate"])
    for kpi, direction in (("cpa", "up"), ("roas", "down")):
        (alert,) = found(report, kpi, {"channel": "paid_search"}, direction)
        first = _kinds(alert, "related")[0]
        assert first.kpi == "cpc" and first.data["anomalous"], [h.text for h in alert.hints]
    (cpa,) = found(report, "cpa", {"channel": "paid_search"}, "up")
    (impact,) = _kinds(cpa, "impact")
    assert impact.data["money"] and impact.data["amount"] > 0 and impact.text.startswith("≈ €")
    (component,) = _kinds(cpa, "component")
    assert component.data["driver"] == "numerator" and component.data["changes"]["ad_cost"] > 0.3


def test_mobile_slowdown_says_the_conversion_target_is_at_risk(
    demo_settings: Settings, slowdown_report: CheckReport
) -> None:
    (alert,) = found(slowdown_report, "conversion_rate", {"device": "mobile"}, "down")
    (hint,) = [h for h in _kinds(alert, "context") if h.data.get("status") == "at risk"]
    target = demo_settings.kpi("conversion_rate").target
    assert target is not None and hint.data["target"] == target.value and hint.data["by"] == "2026-01-31"
    assert 0.0 <= hint.data["probability"] < ON_TRACK
    assert hint.text.startswith("Target 2.70% conversion rate (on the total, not only device=mobile) by 31 Jan 2026")
    assert hint in alert.hints[:4], [h.text for h in alert.hints]  # shown in the text output too
    assert hint_to_dict(hint)["status"] == "at risk"  # and in --format json
    # Only bad news on a KPI with a target at risk says so: no other KPI's alert carries it.
    others = [a for a in slowdown_report.alerts if a.anomaly.kpi != "conversion_rate" or not a.anomaly.is_bad]
    assert others and not any(h.data.get("status") == "at risk" for a in others for h in a.hints)
