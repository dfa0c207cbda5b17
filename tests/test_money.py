"""Money in the KPI's currency, not always euros (issue 17, #1): from the KPI's `unit` (a symbol
or an ISO code) or the config's `currency`, spelled by `forecaster.units` in every face: the CLI
text, the JSON texts, the Slack blocks and the chart's axis."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from paidshop import AT, check, check_json, write_config

from alerts.chart import _tick
from alerts.message import message_blocks, message_text
from forecaster.cli import cli
from forecaster.pipeline import check as run_check
from forecaster.settings import ConfigError, load_config, parse_config
from forecaster.units import currency_of, format_money, format_value


@pytest.mark.parametrize(
    ("amount", "currency", "whole", "text"),
    [
        (3812.4, "USD", True, "$3,812"),
        (3812.4, "EUR", True, "€3,812"),
        (7259.0, "GBP", True, "£7,259"),
        (45.17, "USD", False, "$45.17"),
        (45.17, "USD", True, "$45"),
        (-3.0, "EUR", False, "-€3.00"),
        (45.17, "JPY", False, "¥45"),  # the yen has no minor unit
        (117.4, "CAD", False, "CA$117"),
        (3812.0, "CHF", True, "CHF3,812"),
    ],
)
def test_format_money_takes_the_currency(amount: float, currency: str, whole: bool, text: str) -> None:
    assert format_money(amount, currency, whole=whole) == text


@pytest.mark.parametrize(
    ("unit", "code"),
    [("$", "USD"), ("USD", "USD"), ("€", "EUR"), ("EUR", "EUR"), ("£", "GBP"), ("GBP", "GBP"), ("CA$", "CAD"),
     ("%", None), ("x", None), ("s", None), ("", None), ("orders", None),
     ("cup", None), ("all", None)],  # lower-case words are counting units, not pesos or leks
)
def test_currency_of_a_unit(unit: str, code: str | None) -> None:
    assert currency_of(unit) == code


@pytest.mark.parametrize(("unit", "text"), [("$", "$45.17"), ("USD", "$45.17"), ("GBP", "£1,204"), ("€", "€45.17")])
def test_a_kpi_in_an_iso_code_is_shown_with_its_symbol(unit: str, text: str) -> None:
    value = 1204.0 if unit == "GBP" else 45.17
    assert format_value(value, unit) == text


def _config(text: str):
    return parse_config("sources: {default: {type: demo}}\n" + text)


def test_currency_defaults_to_eur_follows_the_units_or_is_set() -> None:
    assert _config("kpis: {sessions: {}}").currency == "EUR"
    assert _config("kpis: {cpa: {unit: '$'}, roas: {}}").currency == "USD"  # one currency named: that one
    assert _config("kpis: {cpa: {unit: USD}}").currency == "USD"
    assert _config("kpis: {cpa: {unit: '$'}, cpc: {unit: '£'}}").currency == "EUR"  # two: the default
    assert _config("currency: gbp\nkpis: {cpa: {unit: '$'}}").currency == "GBP"  # set wins; case is forgiven


def test_catalogue_money_kpis_follow_the_config_currency() -> None:
    settings = _config("currency: USD\nkpis: {cpa: {}, aov: {}, roas: {}}")
    assert (settings.kpi("cpa").unit, settings.kpi("aov").unit, settings.kpi("roas").unit) == ("$", "$", "x")
    assert _config("kpis: {cpa: {}}").kpi("cpa").unit == "€"  # the default currency, as before
    assert _config("currency: USD\nkpis: {cpa: {unit: '€'}}").kpi("cpa").unit == "€"  # the KPI's own wins


def test_an_unknown_currency_is_one_line_exit_2(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"currency: unknown currency 'DOLLAR'; use an ISO 4217 code"):
        _config("currency: DOLLAR\nkpis: {sessions: {}}")
    config = tmp_path / "bad.yaml"
    config.write_text("currency: DOLLAR\nsources: {default: {type: demo}}\nkpis: {sessions: {}}\n")
    result = CliRunner().invoke(cli, ["validate", "--config", str(config)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.strip().count("\n") == 0 and "use an ISO 4217 code such as EUR, USD or GBP" in result.stderr


@pytest.fixture(scope="module")
def usd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The paid shop's config with `cpa` in dollars and no `currency:` (so USD, from the unit)."""
    return write_config(tmp_path_factory.mktemp("usd"), money="$")


def test_check_text_prices_in_dollars_never_euros(usd: Path) -> None:
    text = check(usd).stdout
    assert "≈ $" in text and "more ad cost than expected" in text  # cpa's impact
    assert "more ad cost than the day's revenue" in text  # roas (unit x): the config's currency
    assert "€" not in text, text


def test_check_json_texts_price_in_dollars_never_euros(usd: Path) -> None:
    payload = check_json(usd)
    texts = [alert["text"] for alert in payload["alerts"]]
    hints = [hint for alert in payload["alerts"] for hint in alert["hints"]]
    impacts = [hint for hint in hints if hint["kind"] == "impact" and hint["money"]]
    assert {hint["kpi"] for hint in impacts} == {"cpa", "roas"}
    assert all(hint["currency"] == "USD" and hint["text"].startswith("≈ $") for hint in impacts), impacts
    assert "€" not in json.dumps([texts, [hint["text"] for hint in hints], payload["held_back"]], ensure_ascii=False)


def test_slack_blocks_and_chart_axis_price_in_dollars(usd: Path) -> None:
    report = run_check(load_config(usd), at=pd.Timestamp(AT, tz="UTC"), workers=1)
    blocks = json.dumps(message_blocks(report.alerts, "kpiwatch"), ensure_ascii=False)
    assert ":moneybag: ≈ $" in blocks and "€" not in blocks
    assert "€" not in message_text(report.alerts, "kpiwatch")
    assert (_tick(1204.0, "$"), _tick(45.17, "USD"), _tick(-3.0, "€")) == ("$1,204", "$45.17", "-€3.00")
    assert math.isclose(float(_tick(0.5, "x")), 0.5)
