"""The KPI catalogue and SMART targets (`kpiwatch goals`)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from forecaster.catalog import load_catalog
from forecaster.cli import cli
from forecaster.settings import ConfigError, parse_config

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
