"""The impact sentence names the part of a ratio that moved (issue 17, #8): "≈ €7,259 less
revenue ... given the day's ad cost" when revenue fell 7% and ad cost rose 70% blamed revenue.

Hand-computed: ROAS = revenue / ad cost, usually 10,000 / 4,000 = 2.50x every day. A ratio N / D
that should be r deviates by N - r * D in revenue, or D - N / r in ad cost: one deviation
(times -r), told in the part that moved most against its usual weekday."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from paidshop import check_json, write_config

from forecaster.explain import Evaluated, build_alerts
from forecaster.types import Anomaly, Direction, Hint, KPISeries, Severity

DAY = pd.Timestamp("2025-12-03", tz="UTC")


def ratio(name: str, usual: tuple[float, float], now: tuple[float, float], expected: float, unit: str,
          parts: tuple[str, str], days: int = 35, currency: str = "USD") -> Evaluated:
    """A daily ratio numerator / denominator at `usual` every day and `now` on DAY, judged against
    `expected`; `parts`: the (numerator, denominator) metric names."""
    index = pd.date_range(end=DAY, periods=days, freq="D", tz="UTC")
    numerator = pd.Series(usual[0], index=index)
    denominator = pd.Series(usual[1], index=index)
    numerator.iloc[-1], denominator.iloc[-1] = now
    values = numerator / denominator
    actual = now[0] / now[1]
    up = actual > expected
    anomaly = Anomaly(name, {}, DAY, "D", actual, expected, expected * 0.9, expected * 1.1,
                      Direction.UP if up else Direction.DOWN, True, Severity.CRITICAL, 0.9999, "ets", unit=unit)
    return Evaluated(KPISeries(name, values, "D", {}, denominator), actual, expected, anomaly, flagged=True,
                     score=0.9999, unit=unit, numerator=parts[0], denominator_name=parts[1], currency=currency)


def impact(evaluated: Evaluated) -> Hint:
    (alert,) = build_alerts([evaluated])
    (hint,) = [h for h in alert.hints if h.kind == "impact"]
    return hint


ROAS = ("revenue", "ad_cost")


def test_roas_down_because_ad_cost_rose_says_so_with_both_numbers() -> None:
    # revenue 10,000 -> 9,300 (-7%), ad cost 4,000 -> 6,800 (+70%): ROAS 1.37x against 2.50x.
    # In ad cost: 6,800 - 9,300 / 2.5 = 3,080 more than the day's revenue called for.
    hint = impact(ratio("roas", (10_000, 4_000), (9_300, 6_800), 2.5, "x", ROAS))
    assert hint.text == ("≈ $3,080 more ad cost than the day's revenue called for at the expected 2.50x; the roas "
                         "drop is mostly the rise in ad cost: ad cost +70%, revenue -7% against the usual weekday")
    assert math.isclose(hint.data["amount"], 3_080.0)
    assert (hint.data["metric"], hint.data["money"], hint.data["currency"], hint.data["driver"]) == \
        ("ad_cost", True, "USD", "denominator")
    assert math.isclose(hint.data["changes"]["ad_cost"], 0.70) and math.isclose(hint.data["changes"]["revenue"], -0.07)
    # the same deviation in revenue: 2.5 * 6,800 - 9,300 = 7,700 = 2.5 * 3,080
    assert math.isclose(2.5 * hint.data["amount"], 2.5 * 6_800 - 9_300)
    assert "less revenue" not in hint.text


def test_roas_down_because_revenue_fell_is_told_in_revenue() -> None:
    # revenue 10,000 -> 7,000 (-30%), ad cost 4,000 -> 4,080 (+2%): 7,000 - 2.5 * 4,080 = -3,200.
    hint = impact(ratio("roas", (10_000, 4_000), (7_000, 4_080), 2.5, "x", ROAS))
    assert hint.text == "≈ $3,200 less revenue than expected, given the day's ad cost"
    assert math.isclose(hint.data["amount"], -3_200.0)
    assert (hint.data["metric"], hint.data["driver"]) == ("revenue", "numerator")


def test_cpa_up_because_conversions_fell_is_told_in_conversions() -> None:
    # ad cost 1,000 -> 1,300 (+30%), conversions 50 -> 25 (-50%): CPA 52 against 20.
    # In conversions: 25 - 1,300 / 20 = -40.
    hint = impact(ratio("cpa", (1_000, 50), (1_300, 25), 20.0, "€", ("ad_cost", "conversions"), currency="EUR"))
    assert hint.text == ("≈ 40 fewer conversions than the day's ad cost called for at the expected €20.00; the cpa "
                         "rise is mostly the drop in conversions: conversions -50%, ad cost +30% against the usual weekday")
    assert math.isclose(hint.data["amount"], -40.0) and not hint.data["money"]


def test_without_a_usual_weekday_the_impact_is_told_in_the_numerator() -> None:
    # 5 days: no same weekday in the weeks before, so no part can be named: 9,300 - 2.5 * 6,800.
    hint = impact(ratio("roas", (10_000, 4_000), (9_300, 6_800), 2.5, "x", ROAS, days=5))
    assert hint.text == "≈ $7,700 less revenue than expected, given the day's ad cost"
    assert "driver" not in hint.data


def test_a_count_is_its_own_impact() -> None:
    index = pd.date_range(end=DAY, periods=35, freq="D", tz="UTC")
    values = pd.Series(1_000.0, index=index)
    values.iloc[-1] = 800.0
    anomaly = Anomaly("sessions", {}, DAY, "D", 800.0, 1_000.0, 950.0, 1_050.0, Direction.DOWN, True,
                      Severity.CRITICAL, 0.9999, "ets")
    hint = impact(Evaluated(KPISeries("sessions", values, "D"), 800.0, 1_000.0, anomaly, flagged=True,
                            numerator="sessions"))
    assert hint.text == "≈ 200 fewer sessions than expected that day"


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return check_json(write_config(tmp_path_factory.mktemp("impact"), money="$"))


def test_check_names_the_ad_cost_rise_behind_the_roas_drop(payload: dict) -> None:
    """The paid shop's last day: paid search ad cost +70% for revenue -7% (tests/paidshop.py)."""
    (roas,) = [a for a in payload["alerts"] if a["kpi"] == "roas"]
    (hint,) = [h for h in roas["hints"] if h["kind"] == "impact"]
    assert hint["driver"] == "denominator" and hint["metric"] == "ad_cost", hint
    assert "the roas drop is mostly the rise in ad cost: ad cost +" in hint["text"]
    assert "less revenue" not in hint["text"]
