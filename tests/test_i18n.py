"""Texts in the user's language (issue 20): one catalogue per language, the same keys and fields
in each; the locale is a context setting, numbers and dates follow it."""

from __future__ import annotations

import pytest

from forecaster.i18n import LOCALES, catalogue, catalogue_problems, current_locale, kpi_name, t, use_locale


def test_every_key_is_in_every_language_with_the_same_fields():
    assert catalogue_problems() == []
    assert set(LOCALES) == {"en", "nl"}


def test_the_locale_is_set_for_a_block_and_restored():
    assert current_locale() == "en"
    with use_locale("nl"):
        assert current_locale() == "nl" and t("phase.see") == "See"
        assert kpi_name("conversion_rate") == "conversieratio" and kpi_name("my_kpi") == "my_kpi"
    assert current_locale() == "en" and kpi_name("conversion_rate") == "conversion_rate"


def test_an_unknown_locale_or_key_is_an_error_not_english():
    with pytest.raises(ValueError, match="locale must be one of en, nl. Got: 'de'"):
        with use_locale("de"):
            pass
    with pytest.raises(KeyError):
        t("no.such.key")
    assert "phase.do" in catalogue("nl")


# -- numbers and dates in Dutch (forecaster.units follows the locale) --------------------------

import pandas as pd  # noqa: E402

from forecaster import units  # noqa: E402

DAY = pd.Timestamp("2025-12-10", tz="UTC")


@pytest.mark.parametrize("call, en, nl", [
    (lambda: units.format_number(1234.5, 1), "1,234.5", "1.234,5"),
    (lambda: units.format_number(12345), "12,345", "12.345"),
    (lambda: units.format_value(1234.5), "1,234", "1.234"),
    (lambda: units.format_value(12.5), "12.5", "12,5"),
    (lambda: units.format_money(1234.4, "EUR"), "€1,234", "€ 1.234"),
    (lambda: units.format_money(45.17, "EUR"), "€45.17", "€ 45,17"),
    (lambda: units.format_money(-45.17, "EUR"), "-€45.17", "€ -45,17"),
    (lambda: units.format_money(3812.4, "EUR", whole=True), "€3,812", "€ 3.812"),
    (lambda: units.format_value(0.0241, "%"), "2.41%", "2,41%"),
    (lambda: units.format_value(3.2, "s"), "3.20 s", "3,20 s"),
    (lambda: units.format_value(2.5, "x"), "2.50x", "2,50x"),
    (lambda: units.format_value(float("nan")), "no data", "geen data"),
    (lambda: units.format_percent(0.79), "79%", "79%"),
    (lambda: units.format_percent(0.045, 1, sign=True), "+4.5%", "+4,5%"),
    (lambda: units.format_change(0.0105, 0.0182, "%"), "-42.3% (-0.77 points)", "-42,3% (-0,77 procentpunt)"),
    (lambda: units.format_change(117, 44.58, "€"), "+162.4%", "+162,4%"),
    (lambda: units.format_ordinal(3), "3rd", "3e"),
    (lambda: units.format_period(DAY, "D"), "Wed 10 Dec 2025", "wo 10 dec 2025"),
    (lambda: units.format_period(DAY, "W-MON"), "Wed 10 Dec 2025", "wo 10 dec 2025"),
    (lambda: units.format_period(DAY, "MS"), "Dec 2025", "dec 2025"),
    (lambda: units.format_period(DAY, "QS"), "Q4 2025", "K4 2025"),
    (lambda: units.format_period(DAY + pd.Timedelta(hours=14), "h"), "10 Dec 2025 14:00 UTC", "10 dec 2025 14:00 UTC"),
    (lambda: units.format_day_month(pd.Timestamp("2026-01-31")), "31 Jan 2026", "31 jan 2026"),
])
def test_numbers_and_dates_follow_the_locale(call, en, nl):
    assert call() == en
    with use_locale("nl"):
        assert call() == nl


# -- an alert and a Slack card in Dutch -------------------------------------------------------

def test_an_incident_card_built_in_dutch_is_dutch():
    from alerting import alert

    from alerts.message import card_text, incident_blocks, severity_mark
    from forecaster.explain import headline_text
    from forecaster.types import Alert

    with use_locale("nl"):
        root, member = alert("conversion_rate"), alert("bounce_rate")
        root = Alert(anomaly=root.anomaly, text=headline_text(root.anomaly), hints=root.hints)
        blocks = incident_blocks([root, member], "titel", why="waarom", buttons="incident-key")
        text = card_text([root, member], "titel", why="waarom")
        assert severity_mark("critical") == "[KRITIEK]"
    shown = " ".join(str(b) for b in blocks)
    assert "conversieratio op device=mobile daalde 40,0% op wo 10 dec 2025: 60 tegen 100 verwacht" in root.text
    assert "*KRITIEK* · *conversieratio*" in shown and "*Werkelijk* 60 · *verwacht* 100 (99%-band 95 tot 105)" in shown
    assert "Grondoorzaak: waarom" in shown and "*Ook in dit incident*" in shown
    assert "• *bouncepercentage* ↓ device=mobile: 60 tegen 100 verwacht, -40,0%" in shown
    labels = [e["text"]["text"] for e in blocks[-1]["elements"]]
    assert labels == ["Verwacht", "Vals alarm", "7 dagen sluimeren", "Opgelost"]
    assert blocks[-1]["elements"][1]["confirm"]["deny"]["text"] == "Annuleren"
    assert "[KRITIEK] conversieratio" in text and "Grondoorzaak: waarom" in text
    # The same card in English is the English one (the locale is per block, not global).
    english = incident_blocks([root, member], "title", why="why", buttons="incident-key")
    assert [e["text"]["text"] for e in english[-1]["elements"]] == ["Expected", "False alarm", "Snooze 7 days", "Resolve"]


# -- `kpiwatch demo --locale nl`: the demo's incidents in Dutch (one demo run) -------------------

@pytest.fixture(scope="module")
def demo_nl(tmp_path_factory: pytest.TempPathFactory) -> str:
    from click.testing import CliRunner

    from forecaster.cli import cli

    out = tmp_path_factory.mktemp("demo-nl")
    result = CliRunner().invoke(cli, ["demo", "--locale", "nl", "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_demo_in_dutch_prints_its_incidents_in_dutch_with_dutch_numbers(demo_nl: str):
    lines = demo_nl.splitlines()
    assert lines[0].startswith("kpiwatch demo: 7 KPI's, 62 reeksen, beoordeeld wo 10 dec 2025 ")
    incidents = [line for line in lines if line.startswith("Incident ")]
    assert incidents == [
        "Incident 1: laadtijd op device=mobile steeg 149,7% sinds ma 08 dec 2025 (grondoorzaak) — 4 alerts",
        "Incident 2: kosten per klik op channel=paid_search steeg 55,2% sinds zo 07 dec 2025 (grondoorzaak) — 4 alerts",
    ]
    assert "  waarom: laadtijd bewoog als eerste op device=mobile (vanaf ma 08 dec 2025)" in demo_nl
    assert ("[WAARSCHUWING] conversieratio op device=mobile daalde 42,3% (-0,77 procentpunt) op wo 10 dec 2025: "
            "1,05% tegen 1,82% verwacht (99%-band 1,36% tot 2,28%); 3e dag op rij") in demo_nl
    assert "€ 117 tegen € 44,58 verwacht" in demo_nl and "≈ € 2.695 meer advertentiekosten" in demo_nl
    assert "Doel 2,70% conversieratio (op het totaal, niet alleen device=mobile) op 31 jan 2026 is in gevaar" in demo_nl
    assert lines[-1] == "2 incident(en) uit 8 alert(s) (8 slecht, 0 goed nieuws); 62 reeksen beoordeeld."
    for english in (" rose ", " fell ", " expected", "root cause", "Wed ", " band "):
        assert english not in demo_nl, english
    assert current_locale() == "en"  # the command's locale ended with it


def test_a_config_locale_is_validated():
    from forecaster.settings import parse_config
    from forecaster.types import BadInputError

    text = "locale: {locale}\nsources: {{shop: {{type: demo}}}}\nkpis: {{sessions: {{source: shop, metric: sessions}}}}\n"
    assert parse_config(text.format(locale="nl")).locale == "nl"
    assert parse_config(text.format(locale="en").replace("locale: en\n", "")).locale == "en"
    with pytest.raises(BadInputError, match=r"locale: unknown locale 'de'; choose one of: en, nl"):
        parse_config(text.format(locale="de"))


def test_a_daemon_job_builds_its_texts_in_the_config_locale_in_any_thread():
    import threading
    from types import SimpleNamespace

    from alerts.daemon import _in_config_locale
    from alerts.message import late_text

    class Job:
        settings = SimpleNamespace(locale="nl")

        @_in_config_locale
        def text(self) -> str:
            return late_text(DAY, DAY + pd.Timedelta(days=2), "D")

    said: list[str] = []
    thread = threading.Thread(target=lambda: said.append(Job().text()))  # a fresh context, as APScheduler's
    thread.start()
    thread.join()
    assert said == ["Laat: 2 dagen na afloop beoordeeld (kpiwatch lag eruit of de data kwam laat)."]
    assert late_text(DAY, DAY + pd.Timedelta(days=1), "D") == (
        "Late: judged 1 day after it closed (kpiwatch was down or the data was late).")


def test_what_feedback_changed_is_said_in_the_locale():
    """The note on the next card after a false alarm (issue 19's "sensitivity lowered ...")."""
    import pandas as pd

    from alerts.feedback import feedback_notes
    from forecaster.detect.feedback import SeriesFeedback

    given = pd.Timestamp("2025-12-03 09:00", tz="UTC")
    feedback = {("conversion_rate", "device=mobile"): SeriesFeedback((given,))}
    at = given + pd.Timedelta(seconds=1)
    assert feedback_notes(feedback, at.to_pydatetime()) == {("conversion_rate", "device=mobile"): (
        "conversion_rate device=mobile: sensitivity lowered: band ×1.25 after 1 false alarm (last 2025-12-03)")}
    with use_locale("nl"):
        assert feedback_notes(feedback, at.to_pydatetime()) == {("conversion_rate", "device=mobile"): (
            "conversieratio device=mobile: gevoeligheid verlaagd: band ×1,25 na 1 vals alarm (laatste 2025-12-03)")}


def test_goals_and_the_replay_summary_follow_the_locale():
    """Two verdicts an analyst reads at the terminal: `kpiwatch goals` and `kpiwatch replay KPI`."""
    import numpy as np
    import pandas as pd

    from alerts.rehearsal import Rehearsal

    frame = pd.DataFrame({"anomaly": np.array([0, 1, 1])})
    first, last = pd.Timestamp("2025-09-12", tz="UTC"), pd.Timestamp("2025-12-10", tz="UTC")
    rehearsal = Rehearsal("sessions", frame, 1234, 17, 14, 90, first, last, "D")
    assert rehearsal.summary == (
        "90 period(s) judged (Fri 12 Sep 2025 to Wed 10 Dec 2025): the daemon would have sent 17 Slack message(s) "
        "with 1,234 alert(s) and 14 resolve(s) for every segment of the KPI; 2 announced for this series")
    with use_locale("nl"):
        assert rehearsal.summary.startswith("90 periode(s) beoordeeld (vr 12 sep 2025 tot wo 10 dec 2025): de daemon "
                                            "had 17 Slack-bericht(en) gestuurd met 1.234 alert(s)")
        assert t("cli.goals_at_risk") == "IN GEVAAR" and t("cli.goals_columns").split("|")[1] == "doel"
