"""A small paid-media shop as a CSV export, with three things on its last day (Wed 3 Dec 2025):

- paid_search: ad cost +70% while revenue -7% and conversions -7% (a bid change that bought
  nothing): ROAS falls because of the spend, CPA rises because of the spend;
- paid_social: CPA triples (ad cost 560 for 12 conversions instead of 600 for 40) while its
  conversions fall below the KPI's `min_volume` 30: a guardrail holds it back;
- organic: no ad cost at all (a few euro of tooling on other days): its ROAS is undefined.

Used by test_money, test_guardrail_notes and test_impact: one check of it takes about a second.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from click.testing import CliRunner, Result

from forecaster.cli import cli

LAST_DAY = pd.Timestamp("2025-12-03")
AT = "2025-12-04T06:00"  # the morning after: the last day is the judged one

CONFIG = """
timezone: UTC
state: sqlite:///{tmp}/state.db
state_dir: {tmp}/state
{currency}
sources:
  export: {{type: csv, path: "{data}", timestamp: day}}
kpis:
  cpa:
    ratio: {{numerator: ad_cost, denominator: conversions}}
    good: down
    unit: "{money}"
    source: export
    segments: [channel]
    min_volume: 30
    model: ets
    completeness: 0
  roas:
    ratio: {{numerator: revenue, denominator: ad_cost}}
    good: up
    unit: x
    source: export
    segments: [channel]
    model: ets
    completeness: 0
"""

# channel: (ad cost, conversions, revenue) on a usual day
USUAL = {"paid_search": (1000.0, 50.0, 4000.0), "paid_social": (600.0, 40.0, 2000.0), "organic": (20.0, 60.0, 5000.0)}
LAST = {"paid_search": (1700.0, 46.5, 3720.0), "paid_social": (560.0, 12.0, 900.0), "organic": (0.0, 60.0, 5000.0)}


def write_export(path: Path) -> None:
    """120 days up to `LAST_DAY`, one row per channel and day, with 2% seeded noise."""
    rng = np.random.default_rng(7)
    rows = []
    for day in pd.date_range(end=LAST_DAY, periods=120, freq="D"):
        for channel, usual in USUAL.items():
            if day == LAST_DAY:
                cost, conversions, revenue = LAST[channel]
            else:
                cost, conversions, revenue = (round(v * (1 + rng.normal(0, 0.02)), 2) for v in usual)
            rows.append((f"{day:%Y-%m-%d}", channel, cost, round(conversions), revenue))
    pd.DataFrame(rows, columns=["day", "channel", "ad_cost", "conversions", "revenue"]).to_csv(path, index=False)


def write_config(tmp: Path, money: str = "$", currency: str | None = None) -> Path:
    """The export and a config over it; `money`: cpa's unit; `currency`: the config's, if any."""
    data = tmp / "export.csv"
    write_export(data)
    config = tmp / "kpiwatch.yaml"
    config.write_text(CONFIG.format(tmp=tmp, data=data, money=money,
                                    currency=f"currency: {currency}" if currency else ""))
    return config


def check(config: Path, *args: str) -> Result:
    """`kpiwatch check --dry-run` of the last day, in-process; exit 0 asserted."""
    result = CliRunner().invoke(cli, ["check", "--config", str(config), "--at", AT, "--dry-run", *args],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def check_json(config: Path) -> dict:
    return json.loads(check(config, "--format", "json").stdout)
