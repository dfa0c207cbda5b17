"""The KPI catalogue and SMART targets (`kpiwatch goals`)."""

from __future__ import annotations

import json
from dataclasses import replace

import pandas as pd
import pytest
from click.testing import CliRunner

from forecaster import goals as goals_module
from forecaster.catalog import load_catalog
from forecaster.cli import cli
from forecaster.goals import GoalStatus, add_target_hints, target_hint
from forecaster.settings import ConfigError, parse_config
from forecaster.types import Alert, Anomaly, Direction, Severity

SOURCE = "country: NL\nsources: {default: {type: demo}}\n"


def test_the_catalogue_covers_the_domain_kpis_completely() -> None:
    catalog = load_catalog()
    assert len(catalog) >= 25
    for name, entry in catalog.items():
        assert ("metric" in entry) != ("ratio" in entry), name
        assert entry["phase"] in {"see", "think", "do", "care"} and entry["good"] in {"up", "down"}, name
        assert all(other in catalog for other in entry.get("related", [])), name
    assert catalog["conversion_rate"]["related"] == ["page_load_time", "bounce_rate"]
    assert catalog["cpc"]["related"] == ["quality_score", "ctr"]


def test_a_config_refers_to_catalogue_kpis_and_overrides_fields() -> None:
    settings = parse_config(SOURCE + "kpis:\n  conversion_rate: {segments: [device], level: 0.995}\n"
                                     "  mobile_bounce: {catalog: bounce_rate, filter: {device: [mobile]}}\n"
                                     "  page_load_time: {}\n")
    rate = settings.kpi("conversion_rate")
    assert rate.ratio is not None and rate.ratio.numerator == "conversions" and rate.unit == "%"
    assert rate.level == 0.995 and rate.phase == "do"
    assert rate.related == ["page_load_time"]  # bounce_rate is not configured here: dropped
    assert settings.kpi("mobile_bounce").good.value == "down"


def test_unknown_catalogue_name_and_unknown_related_are_one_line() -> None:
    with pytest.raises(ConfigError, match="kpis.x.catalog: no KPI 'conversion' in the catalogue; known: aov"):
        parse_config(SOURCE + "kpis:\n  x: {catalog: conversion}\n", origin="c.yaml")
    with pytest.raises(ConfigError, match="kpis.s.related names 'cpc', which is not a configured KPI"):
        parse_config(SOURCE + "kpis:\n  s: {metric: sessions, related: [cpc]}\n", origin="c.yaml")


def test_goals_on_the_demo_show_one_on_track_and_one_at_risk() -> None:
    result = CliRunner().invoke(cli, ["goals", "--at", "2025-12-11T08:00", "--format", "json"])
    assert result.exit_code == 0, result.output
    statuses = {item["kpi"]: item for item in json.loads(result.stdout)}
    assert len(statuses) >= 2
    assert statuses["sessions"]["on_track"] and statuses["sessions"]["probability"] > 0.5
    assert not statuses["conversion_rate"]["on_track"] and statuses["conversion_rate"]["probability"] < 0.5
    for item in statuses.values():
        assert 0.0 <= item["probability"] <= 1.0 and item["lower"] <= item["forecast"] <= item["upper"]


def test_goals_after_the_deadline_is_a_clear_error() -> None:
    result = CliRunner().invoke(cli, ["goals", "--at", "2026-03-01T08:00"])
    assert result.exit_code == 2
    assert "target.by: 2026-01-31 has passed" in result.stderr


# ---------------------------------------------------------------- target hints on alerts

def _status(probability: float) -> GoalStatus:
    return GoalStatus(kpi="conversion_rate", unit="%", target=0.027, by=pd.Timestamp("2026-01-31", tz="UTC"),
                      current=0.021, forecast=0.022, lower=0.019, upper=0.025, probability=probability, model="ets")


def _anomaly(is_bad: bool, segment: dict[str, str] | None = None) -> Anomaly:
    return Anomaly(kpi="conversion_rate", segment=segment or {}, period=pd.Timestamp("2025-12-10", tz="UTC"),
                   freq="D", actual=0.0105 if is_bad else 0.03, expected=0.0192, lower=0.0161, upper=0.0228,
                   direction=Direction.DOWN if is_bad else Direction.UP, is_bad=is_bad,
                   severity=Severity.CRITICAL if is_bad else Severity.GOOD_NEWS, score=0.999, model="ets", unit="%")


@pytest.mark.parametrize(
    ("probability", "is_bad", "hinted"),
    [(0.18, True, True), (0.499, True, True), (0.5, True, False), (0.9, True, False), (0.18, False, False)],
    ids=["at-risk-bad", "just-below-line-bad", "on-the-line", "on-track", "at-risk-good-news"],
)
def test_target_hint_only_for_bad_news_on_an_at_risk_target(probability: float, is_bad: bool, hinted: bool) -> None:
    hint = target_hint(_anomaly(is_bad), _status(probability))
    assert (hint is not None) is hinted
    assert target_hint(_anomaly(is_bad), None) is None  # no target, or its deadline passed


def test_target_hint_text_and_data() -> None:
    hint = target_hint(_anomaly(True), _status(0.18))
    assert hint is not None and hint.kind == "context" and hint.kpi == "conversion_rate"
    assert hint.text == ("Target 2.70% conversion rate by 31 Jan 2026 is at risk: 18% likely on the current "
                         "forecast (on track = ≥50%)")
    assert dict(hint.data) == {"target": 0.027, "by": "2026-01-31", "probability": 0.18, "status": "at risk",
                               "forecast": 0.022}
    on_segment = target_hint(_anomaly(True, {"device": "mobile"}), _status(0.18))
    assert on_segment is not None and on_segment.segment == {}
    assert on_segment.text.startswith("Target 2.70% conversion rate (on the total, not only device=mobile) by 31 Jan")


def test_add_target_hints_computes_each_status_once_and_skips_good_news(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fake_status(name: str, kpi, series, last, country=None) -> GoalStatus:
        calls.append(name)
        return _status(0.18)

    monkeypatch.setattr(goals_module, "target_status", fake_status)
    settings = parse_config(SOURCE + "kpis:\n  conversion_rate: {target: {value: 0.027, by: 2026-01-31}}\n"
                                     "  sessions: {}\n")
    bad = [Alert(_anomaly(True, segment), "t") for segment in ({}, {"device": "mobile"}, {"channel": "email"})]
    good = Alert(_anomaly(False, {"channel": "referral"}), "t")
    other = Alert(replace(_anomaly(True), kpi="sessions", unit=""), "t")  # no target: untouched
    totals = {name: object() for name in ("conversion_rate", "sessions")}
    periods = {name: pd.Timestamp("2025-12-10", tz="UTC") for name in totals}
    out = add_target_hints([*bad, good, other], settings.kpis, totals, periods)  # type: ignore[arg-type]
    assert calls == ["conversion_rate"]
    assert [any(h.data.get("status") == "at risk" for h in a.hints) for a in out] == [True, True, True, False, False]
    assert out[3] is good and out[4] is other
