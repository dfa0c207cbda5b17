"""The other commands in Dutch (`--locale nl`, or the config's `locale: nl`): alerts, snooze,
feedback, validate, sources test, outbox retry, backtest, forecast and replay --csv print their
human texts in the locale, numbers and dates as Dutch readers write them; English stays as it
was, and errors and machine output (JSON, CSV) stay English and unchanged."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from forecaster.cli import cli

CONFIG = """\
timezone: Europe/Amsterdam
country: NL
{locale}state: sqlite:///{state}
sources: {{default: {{type: demo}}}}
alerting: {{routes: [{{channel: "#kpi-alerts"}}]}}
kpis:
  cpa: {{ratio: {{numerator: ad_cost, denominator: conversions}}, good: down, min_volume: 5}}
  sessions: {{metric: sessions, segments: [channel]}}
"""
DUTCH_MOMENT = re.compile(r"\b\d{1,2} (jan|feb|mrt|apr|mei|jun|jul|aug|sep|okt|nov|dec) \d{4} \d{2}:\d{2}\b")
ISO_MOMENT = re.compile(r"\b\d{4}-\d{2}-\d{2} \d{2}:\d{2}\b")


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def write_config(folder: Path, name: str, state: str, locale: str = "") -> Path:
    """A config on the demo source with two KPIs (cpa, sessions by channel), its state in `state`."""
    path = folder / name
    path.write_text(CONFIG.format(state=folder / state, locale=f"locale: {locale}\n" if locale else ""))
    return path


def record_incidents(config: Path) -> dict[str, int]:
    """Two incidents in the config's store (cpa on the total, sessions on channel=email), a false
    alarm on the sessions one an hour ago and a snooze of cpa; their numbers by root KPI."""
    from alerting import alert, report

    from alerts.feedback import apply_feedback
    from alerts.incidents import evaluation_records, plan_cycle
    from alerts.store import Store
    from forecaster.settings import load_config

    settings = load_config(config)
    alerts = [alert("cpa", {}), alert("sessions", {"channel": "email"})]
    now = datetime.now(timezone.utc) - timedelta(hours=2)
    store = Store(settings.state_url)
    try:
        plan = plan_cycle(report(alerts), settings, {}, [], now, charts=False)
        store.record_cycle(evaluation_records(report(alerts)), plan, now)
        numbers = {group.root_kpi: group.id for group in store.open_groups().values()}
        apply_feedback(store, settings, str(numbers["sessions"]), "false_alarm", "ana", now + timedelta(hours=1))
        store.add_snooze("cpa", "", datetime(2099, 1, 1, tzinfo=timezone.utc), "bid test")
    finally:
        store.close()
    return numbers


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A store with two incidents, one config in English and one saying `locale: nl` on it, and
    a daily CSV of 200 days (2025-06-01 to 2025-12-17)."""
    folder = tmp_path_factory.mktemp("i18n-commands")
    config = write_config(folder, "k.yaml", "state.db")
    record_incidents(config)
    days = pd.date_range("2025-06-01", periods=200, freq="D")
    values = 100 + 10 * np.sin(np.arange(200) * 2 * np.pi / 7) + np.random.default_rng(0).normal(0, 2, 200)
    csv = folder / "daily.csv"
    csv.write_text("timestamp,value\n" + "".join(f"{d:%Y-%m-%d},{v:.3f}\n" for d, v in zip(days, values)))
    return {"folder": folder, "config": config, "config_nl": write_config(folder, "k-nl.yaml", "state.db", "nl"),
            "csv": csv}


# -- kpiwatch alerts ---------------------------------------------------------------------------

def test_alerts_in_dutch_names_kpis_states_verdicts_and_dates_in_dutch(world):
    result = run("alerts", "--config", str(world["config"]), "--locale", "nl")
    assert result.exit_code == 0, result.output
    text = result.stdout
    for dutch in ("Incidenten (reageer op een incident met `kpiwatch feedback NUMMER", "geopend", "grondoorzaak",
                  "onderdelen", "gesloten (vals alarm)", "vals alarm door ana", "kosten per acquisitie",
                  "sessies channel=email", "feedback: sessies channel=email: gevoeligheid verlaagd: band ×1,",
                  "wachtend, 0 bezig, 0 verstuurd, 0 opgegeven", "in wachtrij (UTC)", "pogingen", "bericht",
                  "gesluimerd: kosten per acquisitie (alle segmenten) tot 1 jan 2099 01:00 CET - bid test"):
        assert dutch in text, dutch
    # The outbox rows show the stored texts as they were queued (here in English): leave them out.
    own = "\n".join(line for line in text.splitlines() if "@ana" not in line and "kpiwatch incident:" not in line)
    assert DUTCH_MOMENT.search(own) and not ISO_MOMENT.search(own)
    for english in ("Incidents (", "root cause", "opened", "resolved (", "false alarm by", "pending", "snoozed:",
                    "until", "(all segments)", "sensitivity lowered", "queued (UTC)"):
        assert english not in own, english


def test_alerts_follow_the_config_locale_and_locale_en_overrides_it(world):
    dutch = run("alerts", "--config", str(world["config_nl"]))
    assert "Incidenten (" in dutch.stdout and "gesluimerd: kosten per acquisitie" in dutch.stdout
    english = run("alerts", "--config", str(world["config_nl"]), "--locale", "en")
    assert english.stdout == run("alerts", "--config", str(world["config"])).stdout


def test_alerts_in_english_are_as_they_were(world):
    text = run("alerts", "--config", str(world["config"])).stdout
    assert text == run("alerts", "--config", str(world["config"]), "--locale", "en").stdout
    assert text.startswith("Incidents (answer one with `kpiwatch feedback NUMBER expected|false-alarm|snooze|resolve`)\n")
    for english in ("┃ # ┃ opened ", "┃ state ", "┃ root cause ", "resolved (false_alarm)", "false alarm by ana",
                    "sessions channel=email", "feedback: sessions channel=email: sensitivity lowered: band ×1.",
                    "pending, 0 sending, 0 sent, 0 dead", "┃ queued (UTC) ", "│ message ",
                    "snoozed: cpa (all segments) until 2099-01-01 01:00 CET - bid test\n"):
        assert english in text, english
    assert ISO_MOMENT.search(text) and not DUTCH_MOMENT.search(text)


def test_alerts_json_is_machine_output_whatever_the_locale(world):
    english = run("alerts", "--config", str(world["config"]), "--format", "json")
    dutch = run("alerts", "--config", str(world["config_nl"]), "--format", "json", "--locale", "nl")
    assert dutch.stdout == english.stdout
    [note] = json.loads(dutch.stdout)["sensitivity"]
    assert note["note"].startswith("sessions channel=email: sensitivity lowered")


# -- kpiwatch snooze and feedback ---------------------------------------------------------------

def test_snooze_says_what_is_silenced_until_when_in_dutch(tmp_path):
    config = write_config(tmp_path, "k.yaml", "state.db")
    dutch = run("snooze", "cpa", "--until", "2099-02-03T04:05", "--config", str(config), "--locale", "nl")
    assert dutch.exit_code == 0, dutch.output
    assert dutch.stdout == "kosten per acquisitie gesluimerd tot 3 feb 2099 04:05 CET\n"
    segment = run("snooze", "sessions", "--segment", "channel=email", "--until", "2099-02-03", "--config", str(config),
                  "--locale", "nl")
    assert segment.stdout == "sessies channel=email gesluimerd tot 3 feb 2099 00:00 CET\n"
    english = run("snooze", "sessions", "--segment", "channel=email", "--until", "2099-07-03", "--config", str(config))
    assert english.stdout == "snoozed sessions channel=email until 2099-07-03 00:00 CEST\n"
    refused = CliRunner().invoke(cli, ["snooze", "cpa", "--until", "2001-01-01", "--config", str(config),
                                       "--locale", "nl"])
    assert refused.exit_code == 2 and "--until '2001-01-01' is not in the future" in refused.stderr  # errors: English


def test_feedback_in_dutch_and_the_card_edit_in_the_same_language(tmp_path, monkeypatch):
    from alerts.store import Store

    for name in ("SLACK_BOT_TOKEN", "SLACK_WEBHOOK_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KPIWATCH_CLOCK", "2026-12-04T22:00:00Z")
    config = write_config(tmp_path, "k.yaml", "state.db")
    numbers = record_incidents(config)
    sessions, cpa = str(numbers["sessions"]), str(numbers["cpa"])
    done = run("feedback", sessions, "resolve", "--user", "ana", "--config", str(config), "--locale", "nl")
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith(f"incident {sessions} (sessies channel=email): opgelost door @ana (4 dec 2026 22:0")
    again = run("feedback", sessions, "resolve", "--user", "ana", "--config", str(config), "--locale", "nl")
    assert again.stdout == f"incident {sessions} (sessies channel=email): al opgelost; niets veranderd\n"
    alarm = run("feedback", cpa, "false-alarm", "--user", "bob", "--config", str(config), "--locale", "nl")
    assert alarm.stdout.startswith(f"incident {cpa} (kosten per acquisitie): gemarkeerd als vals alarm door @bob")
    repeated = run("feedback", cpa, "false-alarm", "--config", str(config), "--locale", "nl")
    assert repeated.stdout == f"incident {cpa} (kosten per acquisitie): al als vals alarm gemarkeerd; niets veranderd\n"
    english = run("feedback", sessions, "resolve", "--config", str(config))
    assert english.stdout == f"incident {sessions} (sessions channel=email): already resolve; nothing changed\n"
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        edits = [row.text for row in store.rows() if row.kind == "feedback"]
    finally:
        store.close()
    assert any(text.startswith("opgelost door @ana") for text in edits), edits


# -- validate, sources test, outbox retry ------------------------------------------------------

def test_validate_in_dutch_and_from_the_config_locale(world):
    config, config_nl = world["config"], world["config_nl"]
    assert run("validate", "--config", str(config), "--locale", "nl").stdout == \
        f"{config}: OK: 2 KPI('s) (cpa, sessions), 1 bron(nen) (default)\n"
    assert run("validate", "--config", str(config_nl)).stdout == \
        f"{config_nl}: OK: 2 KPI('s) (cpa, sessions), 1 bron(nen) (default)\n"
    assert run("validate", "--config", str(config)).stdout == \
        f"{config}: OK: 2 KPI(s) (cpa, sessions), 1 source(s) (default)\n"


def test_sources_test_table_in_dutch(world):
    dutch = run("sources", "test", "--config", str(world["config"]), "--at", "2025-12-11T09:00", "--locale", "nl")
    assert dutch.exit_code == 0, dutch.output
    for word in ("Bronnen (", "┃ bron ", "┃ rijen ", "laatste periode", "vertraging", "datavertraging",
                 "10 dec 2025 00:00", "│ ok "):
        assert word in dutch.stdout, word
    assert re.search(r"│ \d+,\d u\s", dutch.stdout) and re.search(r"│ \d+,\d\d │", dutch.stdout)
    for english in ("Sources (", "last period", "data delay", "2025-12-10 00:00", " h "):
        assert english not in dutch.stdout, english
    english = run("sources", "test", "--config", str(world["config"]), "--at", "2025-12-11T09:00")
    assert "Sources (" in english.stdout and "2025-12-10 00:00" in english.stdout
    assert re.search(r"│ \d+\.\d h\s", english.stdout)


def test_a_failing_source_is_mislukt_in_the_table_and_english_in_the_error(tmp_path):
    config = tmp_path / "k.yaml"
    config.write_text("sources:\n  files: {type: csv, path: '" + str(tmp_path / "missing-*.csv") + "'}\n"
                      "  default: {type: demo}\nkpis:\n  leads: {metric: leads, source: files}\n"
                      "  sessions: {metric: sessions}\n")
    result = CliRunner().invoke(cli, ["sources", "test", "--config", str(config), "--locale", "nl"])
    assert result.exit_code == 3
    assert "MISLUKT: source 'files'" in result.stdout and "FAILED" not in result.stdout
    assert result.stderr.strip().splitlines()[-1].startswith("kpiwatch: error: 1 of 2 KPI source(s) failed; first: leads:")


def test_outbox_retry_summary_in_dutch(tmp_path, monkeypatch):
    from fakeslack import FakeSlack

    monkeypatch.delenv("SLACK_WEBHOOK_URL", raising=False)
    config = write_config(tmp_path, "k.yaml", "state.db")
    with FakeSlack() as fake:
        monkeypatch.setenv("SLACK_API_URL", fake.url)
        monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
        dutch = run("outbox", "retry", "--config", str(config), "--locale", "nl")
        english = run("outbox", "retry", "--config", str(config))
    assert dutch.exit_code == 0, dutch.output
    assert dutch.stdout == "0 opgegeven bericht(en) opnieuw in de wachtrij; 0 verstuurd; outbox: 0 wachtend, 0 opgegeven\n"
    assert english.stdout == "0 dead letter(s) queued again; 0 sent; outbox: 0 waiting, 0 dead\n"


# -- backtest, forecast, replay --csv ----------------------------------------------------------

def test_backtest_table_in_dutch(world):
    args = ["backtest", "--csv", str(world["csv"]), "--models", "seasonal_naive", "--horizon", "7", "--origins", "3"]
    dutch = run(*args, "--locale", "nl")
    assert dutch.exit_code == 0, dutch.output
    assert dutch.stdout.startswith("daily.csv:value: 3 startpunten x 7 perioden, 95%-band\n")
    for word in ("┃ dekking ", "┃ terugvallen ", "┃ alertband ", "dekking: van de voorspellingen"):
        assert word in dutch.stdout, word
    assert re.search(r"│ seasonal_naive │\s+\d,\d{3} │\s+\d+,\d\d │\s+\d,\d{3} │", dutch.stdout), dutch.stdout
    assert "coverage" not in dutch.stdout and "origins" not in dutch.stdout
    english = run(*args)
    assert english.stdout.startswith("daily.csv:value: 3 origins x 7 periods, 95% band\n")
    assert re.search(r"│ seasonal_naive │\s+\d\.\d{3} │\s+\d+\.\d\d │\s+\d\.\d{3} │", english.stdout)
    assert "\ncoverage: of the multi-step forecasts from each origin; alert band: " in english.stdout


def test_forecast_table_and_chart_line_in_dutch_its_csv_unchanged(world, tmp_path):
    args = ["forecast", "--csv", str(world["csv"]), "--model", "seasonal_naive", "--horizon", "5"]
    dutch = CliRunner().invoke(cli, [*args, "--locale", "nl", "--plot", str(tmp_path / "nl.png")])
    assert dutch.exit_code == 0, dutch.output
    assert dutch.stdout.startswith("daily.csv:value: 5 perioden vooruit, 95%-band, model seasonal_naive\n")
    for word in ("┃ periode ", "┃ voorspelling ┃ ondergrens ┃ bovengrens ┃", "│ do 18 dec 2025 │", "│ ma 22 dec 2025 │"):
        assert word in dutch.stdout, word
    assert re.search(r"│\s+\d+,\d │", dutch.stdout)
    assert dutch.stderr == f"grafiek geschreven naar {tmp_path / 'nl.png'}\n" and (tmp_path / "nl.png").exists()
    assert "1 periode vooruit" in run("forecast", "--csv", str(world["csv"]), "--model", "seasonal_naive",
                                      "--horizon", "1", "--locale", "nl").stdout
    english = CliRunner().invoke(cli, [*args, "--plot", str(tmp_path / "en.png")])
    assert english.stdout.startswith("daily.csv:value: 5 periods ahead, 95% band, model seasonal_naive\n")
    assert "│ Thu 18 Dec 2025 │" in english.stdout and re.search(r"│\s+\d+\.\d │", english.stdout)
    assert english.stderr == f"chart written to {tmp_path / 'en.png'}\n"
    assert run(*args, "--format", "csv", "--locale", "nl").stdout == run(*args, "--format", "csv").stdout


def test_replay_csv_with_a_kpis_settings_in_dutch_writes_the_same_file(world, tmp_path):
    args = ["replay", "--csv", str(world["csv"]), "--config", str(world["config"]), "--kpi", "cpa", "--level", "0.99"]
    dutch = CliRunner().invoke(cli, [*args, "--output", str(tmp_path / "nl.csv"), "--locale", "nl"])
    assert dutch.exit_code == 0, dutch.output
    settings_line, summary_line = dutch.stdout.splitlines()
    assert settings_line.startswith(f"instellingen van KPI kosten per acquisitie ({world['config']}): ")
    assert settings_line.endswith("(feestdagen van NL, retailpieken; dagen in Europe/Amsterdam) (--level opgegeven)")
    assert summary_line.startswith(f"{world['csv']}: 0 alert(s) in 101 beoordeelde perioden (101,0 dagen): "
                                   "0,0 per 30 dagen; de eerste 90 waarden alleen als historie gebruikt. Geschreven naar ")
    assert dutch.stderr == "let op: min_volume van ratio-KPI kosten per acquisitie niet toegepast: het bestand heeft " \
                           "geen noemer\n"
    english = CliRunner().invoke(cli, [*args, "--output", str(tmp_path / "en.csv")])
    assert english.stdout.splitlines()[0].startswith(f"settings of KPI cpa ({world['config']}): ")
    assert "(holidays of NL, retail peaks; days in Europe/Amsterdam) (--level given)" in english.stdout
    assert f"{world['csv']}: 0 alert(s) over 101 judged periods (101.0 days): 0.0 per 30 days; first 90 values used " \
           f"as history only. Written to {tmp_path / 'en.csv'}\n" in english.stdout
    assert english.stderr.startswith("note: min_volume of ratio KPI cpa not applied")
    assert (tmp_path / "nl.csv").read_bytes() == (tmp_path / "en.csv").read_bytes()
