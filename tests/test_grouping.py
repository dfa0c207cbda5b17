"""alerts.grouping: one check's alerts into incidents by root cause, on tiny hand-built alerts.

Each case names its alerts as `kpi@segment` (`cpa@device=mobile`, `cr@` for the total) and the
groups it must give, each root first then in cause order.
"""

from __future__ import annotations

import itertools

import pandas as pd
import pytest

from alerts.grouping import (
    AlertGroup,
    episode_start,
    group_alerts,
    incident_text,
    incident_to_dict,
    segments_compatible,
)
from forecaster.settings import Settings, parse_config
from forecaster.types import Alert, Anomaly, Direction, Hint, Severity

CONFIG = """\
sources: {default: {type: demo}}
kpis:
  sessions: {metric: sessions}
  leads: {metric: leads}
  conversion_rate: {ratio: {numerator: conversions, denominator: sessions}, related: [page_load_time, bounce_rate]}
  bounce_rate: {ratio: {numerator: bounces, denominator: sessions}, good: down, related: [page_load_time]}
  page_load_time: {ratio: {numerator: page_load_seconds, denominator: sessions}, good: down}
  cpa: {ratio: {numerator: ad_cost, denominator: conversions}, good: down, related: [cpc, conversion_rate]}
  roas: {ratio: {numerator: revenue, denominator: ad_cost}, related: [cpc, cpa, conversion_rate]}
  cpc: {ratio: {numerator: ad_cost, denominator: clicks}, good: down}
"""
SHORT = {"cr": "conversion_rate", "br": "bounce_rate", "plt": "page_load_time"}
DAY = pd.Timestamp("2025-12-10", tz="UTC")


@pytest.fixture(scope="module")
def settings() -> Settings:
    return parse_config(CONFIG)


def alert(name: str, direction: str = "up", run: int = 1, days_before: int = 0, score: float = 0.999,
          share: float | None = None, freq: str = "D") -> Alert:
    """`name` is `kpi@dim=value,dim=value` (`cr@` = conversion_rate on the total)."""
    kpi, _, where = name.partition("@")
    segment = dict(part.split("=") for part in where.split(",") if part)
    step = pd.tseries.frequencies.to_offset(freq)
    anomaly = Anomaly(SHORT.get(kpi, kpi), segment, DAY - days_before * step, freq, 2.0, 1.0, 0.9, 1.1,
                      Direction(direction), True, Severity.CRITICAL, score, "ets", run_length=run)
    hints = () if share is None else (Hint("segment", f"{where} explains {share:.0%}", anomaly.kpi, segment,
                                           share, {"share": share, "volume_share": 0.4}),)
    return Alert(anomaly, f"{anomaly.kpi} {where} moved", hints)


def names(groups: list[AlertGroup]) -> list[list[str]]:
    short = {v: k for k, v in SHORT.items()}
    return [[f"{short.get(a.anomaly.kpi, a.anomaly.kpi)}@{','.join(f'{k}={v}' for k, v in sorted(a.anomaly.segment.items()))}"
             for a in g.members] for g in groups]


MOBILE = "device=mobile"
PAID = "channel=paid_search"
CASES = {
    "same segment, related: one group, the cause first": (
        [alert(f"cr@{MOBILE}", "down"), alert(f"plt@{MOBILE}")],
        [[f"plt@{MOBILE}", f"cr@{MOBILE}"]]),
    "the root is the member furthest upstream, the rest in cause order": (
        [alert(f"cr@{MOBILE}", "down"), alert(f"cpa@{MOBILE}"), alert(f"br@{MOBILE}"), alert(f"plt@{MOBILE}")],
        [[f"plt@{MOBILE}", f"br@{MOBILE}", f"cr@{MOBILE}", f"cpa@{MOBILE}"]]),
    "a shared metric links (cpa and cpc share ad_cost)": (
        [alert(f"cpc@{PAID}"), alert(f"roas@{PAID}", "down"), alert(f"cpa@{PAID}")],
        [[f"cpc@{PAID}", f"cpa@{PAID}", f"roas@{PAID}"]]),
    "no related KPI and no shared metric: apart": (
        [alert(f"leads@{MOBILE}"), alert(f"cpc@{MOBILE}")],
        [[f"leads@{MOBILE}"], [f"cpc@{MOBILE}"]]),
    "the total and a segment: one group": (
        [alert("cr@", "down"), alert(f"plt@{MOBILE}")],
        [[f"plt@{MOBILE}", "cr@"]]),
    "a segment inside another: one group": (
        [alert(f"cpa@{PAID},{MOBILE}"), alert(f"cpc@{PAID}")],
        [[f"cpc@{PAID}", f"cpa@{PAID},{MOBILE}"]]),
    "same root KPI and direction in another dimension: merged, the larger share leads": (
        [alert("cpc@device=desktop", share=0.51), alert(f"cpc@{PAID}", share=0.98), alert(f"cpa@{PAID}")],
        [[f"cpc@{PAID}", f"cpa@{PAID}", "cpc@device=desktop"]]),
    "the larger share leads whichever cut it is": (
        [alert("cpc@device=desktop", share=0.9), alert(f"cpc@{PAID}", share=0.6)],
        [["cpc@device=desktop", f"cpc@{PAID}"]]),
    "same KPI in another dimension but opposite ways: apart": (
        [alert("cpc@device=desktop", "down", score=0.99), alert(f"cpc@{PAID}", score=0.999)],
        [[f"cpc@{PAID}"], ["cpc@device=desktop"]]),
    "same KPI in two dimensions, not the roots: apart (cpa on mobile vs cpa on paid search)": (
        [alert(f"cpa@{MOBILE}", score=0.99), alert(f"cr@{MOBILE}", "down", score=0.99), alert(f"cpa@{PAID}"),
         alert(f"cpc@{PAID}")],
        [[f"cpc@{PAID}", f"cpa@{PAID}"], [f"cr@{MOBILE}", f"cpa@{MOBILE}"]]),
    "starts 2 days apart: together": (
        [alert(f"plt@{MOBILE}", run=3), alert(f"cr@{MOBILE}", "down", run=1)],
        [[f"plt@{MOBILE}", f"cr@{MOBILE}"]]),
    "starts 4 days apart (run lengths 5 and 1 on the same day): apart": (
        [alert(f"plt@{MOBILE}", run=5), alert(f"cr@{MOBILE}", "down", run=1, score=0.99)],
        [[f"plt@{MOBILE}"], [f"cr@{MOBILE}"]]),
    "starts 3 periods apart on earlier days: apart": (
        [alert(f"plt@{MOBILE}", days_before=3), alert(f"cr@{MOBILE}", "down", score=0.99)],
        [[f"plt@{MOBILE}"], [f"cr@{MOBILE}"]]),
    "hourly KPIs: periods are hours": (
        [alert(f"plt@{MOBILE}", run=3, freq="h"), alert(f"cr@{MOBILE}", "down", freq="h")],
        [[f"plt@{MOBILE}", f"cr@{MOBILE}"]]),
    "among roots that are the same KPI on nested segments, the one that moved first": (
        [alert("plt@", run=1), alert(f"plt@{MOBILE}", run=2)],
        [[f"plt@{MOBILE}", "plt@"]]),
}


@pytest.mark.parametrize(("alerts", "expected"), CASES.values(), ids=CASES.keys())
def test_groups(settings: Settings, alerts: list[Alert], expected: list[list[str]]) -> None:
    assert names(group_alerts(alerts, settings)) == expected


@pytest.mark.parametrize(("alerts", "expected"), CASES.values(), ids=CASES.keys())
def test_any_input_order_gives_the_same_groups(settings: Settings, alerts: list[Alert],
                                               expected: list[list[str]]) -> None:
    for order in itertools.islice(itertools.permutations(alerts), 24):
        assert sorted(names(group_alerts(list(order), settings))) == sorted(expected)


def test_groups_of_equal_roots_keep_the_order_the_alerts_came_in(settings: Settings) -> None:
    mobile, paid = alert(f"plt@{MOBILE}"), alert(f"cpc@{PAID}")
    assert names(group_alerts([mobile, paid], settings)) == [[f"plt@{MOBILE}"], [f"cpc@{PAID}"]]
    assert names(group_alerts([paid, mobile], settings)) == [[f"cpc@{PAID}"], [f"plt@{MOBILE}"]]


def test_within_is_the_allowed_gap_in_periods(settings: Settings) -> None:
    alerts = [alert(f"plt@{MOBILE}", days_before=3), alert(f"cr@{MOBILE}", "down")]
    assert len(group_alerts(alerts, settings, within=3)) == 1
    assert len(group_alerts(alerts, settings, within=0)) == 2
    with pytest.raises(ValueError, match="`within` must be 0 or more periods. Got: -1"):
        group_alerts(alerts, settings, within=-1)


@pytest.mark.parametrize(("a", "b", "compatible"), [
    ({}, {}, True),
    ({}, {"device": "mobile"}, True),
    ({"device": "mobile"}, {"device": "mobile"}, True),
    ({"channel": "paid_search"}, {"channel": "paid_search", "device": "mobile"}, True),
    ({"device": "mobile"}, {"device": "desktop"}, False),
    ({"device": "mobile"}, {"channel": "paid_search"}, False),
    ({"channel": "email", "device": "mobile"}, {"channel": "paid_search", "device": "mobile"}, False),
])
def test_segments_compatible(a: dict[str, str], b: dict[str, str], compatible: bool) -> None:
    assert segments_compatible(a, b) is compatible and segments_compatible(b, a) is compatible


@pytest.mark.parametrize(("run", "freq", "start"), [
    (1, "D", "2025-12-10"), (3, "D", "2025-12-08"), (4, "h", "2025-12-09T21:00"),
])
def test_episode_start(run: int, freq: str, start: str) -> None:
    assert episode_start(alert("cr@", run=run, freq=freq).anomaly) == pd.Timestamp(start, tz="UTC")


def test_the_incident_as_json_and_text(settings: Settings) -> None:
    alerts = [alert(f"cr@{MOBILE}", "down", run=2), alert(f"plt@{MOBILE}", run=3, share=1.0)]
    (group,) = group_alerts(alerts, settings)
    assert group.kpis == ("page_load_time", "conversion_rate") and group.segments == ({"device": "mobile"},)
    assert group.first_period == pd.Timestamp("2025-12-08", tz="UTC") and group.severity is Severity.CRITICAL
    assert group.why == ("page_load_time moved first on device=mobile (from Mon 08 Dec 2025) and is upstream of "
                         "conversion_rate in the catalogue")
    payload = incident_to_dict(group, 1)
    assert payload["root_cause"] == {"kpi": "page_load_time", "segment": {"device": "mobile"}, "direction": "up",
                                     "period": "2025-12-10T00:00:00+00:00", "why": group.why}
    assert [m["kpi"] for m in payload["members"]] == ["page_load_time", "conversion_rate"]
    assert payload["members"][0]["hints"][0]["share"] == 1.0  # the alert's own JSON shape
    assert payload["first_period"] == "2025-12-08T00:00:00+00:00" and payload["severity"] == "critical"
    lines = incident_text(group, 1).splitlines()
    assert lines[0] == ("Incident 1: page_load_time on device=mobile rose 100.0% since Mon 08 Dec 2025 (root cause) "
                        "— 2 alerts")
    assert lines[1] == f"  why: {group.why}"
    assert lines[2:4] == ["  [CRITICAL] page_load_time device=mobile moved", "  [CRITICAL] conversion_rate device=mobile moved"]
    assert lines[4] == "  - device=mobile explains 100%"


def test_a_merged_group_says_why_its_cut_leads(settings: Settings) -> None:
    (group,) = group_alerts([alert("cpc@device=desktop", share=0.51), alert(f"cpc@{PAID}", share=0.98)], settings)
    assert group.why == ("cpc moved first on channel=paid_search (from Wed 10 Dec 2025); cpc on device=desktop is the "
                         "same movement in another cut, channel=paid_search explains more of the change (98% vs 51%)")
    (alone,) = group_alerts([alert(f"cpc@{PAID}")], settings)
    assert alone.why == "cpc on channel=paid_search moved from Wed 10 Dec 2025; no other alert of this check is linked to it"
    assert incident_text(alone, 3).splitlines() == [
        "Incident 3: cpc on channel=paid_search rose 100.0% since Wed 10 Dec 2025 (root cause) — 1 alert",
        "  [CRITICAL] cpc channel=paid_search moved"]


def test_no_alerts_no_groups(settings: Settings) -> None:
    assert group_alerts([], settings) == []
