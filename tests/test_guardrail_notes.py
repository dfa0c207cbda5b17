"""A guardrail must not swallow an incident without a word (issue 17, #6): a period outside its
band the way the KPI alerts, kept from alerting by `min_volume`, `min_abs_change` or
`for_periods`, gets a "held back" note with the numbers, and so does a segment whose ratio is
undefined (a zero denominator). A move the good way (without `good_news`) is not listed: the
config asked not to hear of it."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from paidshop import check, check_json, write_config

from forecaster.cli import MAX_HELD_BACK, _print_held_back
from forecaster.detect.rules import Rules, guardrail, held_back
from forecaster.types import Direction, Judgement

DAY = pd.Timestamp("2025-12-03", tz="UTC")
nan = math.nan
UP, DOWN = Direction.UP, Direction.DOWN


def judged(actual: float, expected: float, rules: Rules, volume: float = nan, *, anomaly: bool = False,
           alert: bool = False, reason: str | None = None) -> Judgement:
    """A judged period with a band of ±1 around `expected`; `reason` None = the guardrail's own."""
    outside = abs(actual - expected) > 1
    why = guardrail(actual, expected, volume, rules) if reason is None and outside and not anomaly else (reason or "")
    return Judgement(DAY, actual, expected, expected - 1, expected + 1, 0.999 if outside else 0.5, anomaly, why,
                     alert=alert, direction="up" if actual > expected else "down")


CPA = Rules(good=DOWN, min_volume=30)
CASES = [
    # (judgement, run, volume, rules, unit, volume name, currency, note)
    (judged(46.67, 15.0, CPA, 12), 0, 12, CPA, "$", "conversions", "USD",
     "3.1x expected ($46.67 vs $15.00) on Wed 03 Dec 2025, not alerted: 12 conversions < min_volume 30"),
    # the good way (CPA fell) without good_news: not an incident, not listed
    (judged(5.0, 15.0, CPA, 12), 0, 12, CPA, "$", "conversions", "USD", ""),
    # ... with good_news it would have alerted (as good news): listed
    (judged(5.0, 15.0, Rules(good=DOWN, good_news=True, min_volume=30), 12), 0, 12,
     Rules(good=DOWN, good_news=True, min_volume=30), "$", "conversions", "USD",
     "-66.7% against expected ($5.00 vs $15.00) on Wed 03 Dec 2025, not alerted: 12 conversions < min_volume 30"),
    (judged(16.5, 15.0, Rules(good=DOWN, min_abs_change=2)), 0, nan, Rules(good=DOWN, min_abs_change=2), "€", "", "EUR",
     "+10.0% against expected (€16.50 vs €15.00) on Wed 03 Dec 2025, not alerted: change 1.5 < min_abs_change 2"),
    # ROAS over ad cost: the volume is money
    (judged(1.2, 2.5, Rules(good=UP, min_volume=100), 40), 0, 40, Rules(good=UP, min_volume=100), "x", "ad_cost",
     "USD", "-52.0% against expected (1.20x vs 2.50x) on Wed 03 Dec 2025, not alerted: $40 ad cost < min_volume 100"),
    # a count: its volume is the larger of value and expected
    (judged(80.0, 40.0, Rules(min_volume=100)), 0, nan, Rules(min_volume=100), "", "", "EUR",
     "2.0x expected (80 vs 40) on Wed 03 Dec 2025, not alerted: 80 < min_volume 100"),
    # for_periods: anomalous, alertable, not yet an alert
    (judged(30.0, 15.0, Rules(good=DOWN, for_periods=3), anomaly=True), 1, nan, Rules(good=DOWN, for_periods=3), "€",
     "", "EUR", "2.0x expected (€30.00 vs €15.00) on Wed 03 Dec 2025, not alerted: 1st period in a row; for_periods is 3"),
    # alerted, inside the band, a daily habit, not judged: nothing to say
    (judged(30.0, 15.0, CPA, 50, anomaly=True, alert=True), 1, 50, CPA, "€", "conversions", "EUR", ""),
    (judged(15.5, 15.0, CPA, 12), 0, 12, CPA, "€", "conversions", "EUR", ""),
    (judged(30.0, 15.0, CPA, 50, reason="a daily habit: outside the band at this time yesterday too"), 0, 50, CPA,
     "€", "conversions", "EUR", ""),
    (Judgement(DAY, nan, 15.0, nan, nan, nan, False, "no data"), 0, 0, CPA, "€", "conversions", "EUR", ""),
]


@pytest.mark.parametrize(("judgement", "run", "volume", "rules", "unit", "name", "currency", "note"), CASES)
def test_held_back_note(judgement: Judgement, run: int, volume: float, rules: Rules, unit: str, name: str,
                        currency: str, note: str) -> None:
    assert held_back(judgement, run, volume, rules, unit, name, currency, when="Wed 03 Dec 2025") == note


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_config(tmp_path_factory.mktemp("shop"), money="$")


def test_check_json_lists_what_was_held_back(shop: Path) -> None:
    payload = check_json(shop)
    held = payload["held_back"]
    assert len(held) == 2, held
    assert held[0].startswith("cpa[channel=paid_social] 3.1x expected ($46.67 vs $")
    assert held[0].endswith(" on Wed 03 Dec 2025, not alerted: 12 conversions < min_volume 30")
    assert held[1] == "roas[channel=organic]: no ad cost on Wed 03 Dec 2025, ratio undefined"
    assert {"alerts", "judged", "series", "skipped", "incomplete", "no_data"} <= set(payload)  # kept as they were
    assert not any("organic" in note for note in payload["skipped"])  # said once, in its own words
    assert not any(alert["segment"] == {"channel": "paid_social"} and alert["kpi"] == "cpa" for alert in payload["alerts"])


def test_check_text_prints_them_after_the_alerts(shop: Path) -> None:
    result = check(shop)
    lines = result.stdout.splitlines()
    start = lines.index("Held back (2): outside the band but not alerted, or not judgeable")
    assert any(line.startswith("[CRITICAL]") for line in lines[:start])  # after the alerts
    assert not any(line.startswith("[") for line in lines[start:])
    assert lines[start + 1].startswith("  - cpa[channel=paid_social] 3.1x expected")
    assert lines[start + 2] == "  - roas[channel=organic]: no ad cost on Wed 03 Dec 2025, ratio undefined"
    assert " from 2 alert(s) " in lines[-1]
    assert "organic" not in result.stderr


def test_many_held_back_lines_are_capped_with_a_count(capsys: pytest.CaptureFixture[str]) -> None:
    _print_held_back([f"kpi[segment={n}] held back" for n in range(MAX_HELD_BACK + 4)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"Held back ({MAX_HELD_BACK + 4})")
    assert sum(line.startswith("  - ") for line in lines) == MAX_HELD_BACK
    assert "  and 4 more (--format json lists them all)" in lines
    _print_held_back([])
    assert capsys.readouterr().out == ""


def test_a_total_over_no_denominator_says_so_instead_of_a_gap(tmp_path: Path) -> None:
    config = write_config(tmp_path, money="$")
    config.write_text(config.read_text() + "  organic_roas:\n    ratio: {numerator: revenue, denominator: ad_cost}\n"
                      "    source: export\n    filter: {channel: [organic]}\n    model: ets\n    completeness: 0\n")
    payload = check_json(config)
    assert "organic_roas: no ad cost on Wed 03 Dec 2025, ratio undefined: not judged" in payload["no_data"]
