"""Texts made deep in the engine and the pipeline follow the locale where a person reads them:
why a period was not judged, the check's notes, chart titles and legends, event names. The
English (what states, replay CSVs and existing tests hold) stays as it was."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from test_check_completeness import CONFIG, write_export

from alerts.chart import chart_subject, chart_title, render_chart
from forecaster.calendar import Calendar, UserEvent, event_display_name
from forecaster.cli import cli
from forecaster.detect import reasons
from forecaster.detect.reasons import reason_text
from forecaster.i18n import use_locale
from forecaster.pipeline import CheckReport, SeriesResult
from forecaster.types import Anomaly, Direction, Forecast, KPISeries, Severity

EVERY_REASON = [
    reasons.TOO_FEW_VALUES, reasons.CALIBRATING, reasons.NO_DATA, reasons.DAILY_HABIT, reasons.EXPECTED,
    reasons.NEEDS_HISTORY, reasons.NO_JUDGEMENT, reasons.first_event(["black_friday"]),
    reasons.small_change(0.004, 0.01), reasons.small_volume(12, 30),
]


@pytest.mark.parametrize("reason", EVERY_REASON)
def test_every_reason_reads_as_itself_in_english_and_translated_in_dutch(reason):
    assert reason_text(reason) == reason
    with use_locale("nl"):
        dutch = reason_text(reason)
    assert dutch and dutch != reason


def test_the_numbers_and_names_inside_a_reason_survive_the_translation():
    with use_locale("nl"):
        assert reason_text(reasons.small_volume(12, 30)) == "volume 12 is kleiner dan min_volume 30"
        assert reason_text(reasons.small_change(0.004, 0.01)) == "verandering 0.004 is kleiner dan min_abs_change 0.01"
        assert reason_text(reasons.first_event(["Christmas Day", "christmas"]), country="NL") == (
            "eerste Eerste kerstdag, kerstinkopen in de geschiedenis: het effect wordt geleerd, niet beoordeeld")


def test_a_reason_this_version_does_not_know_is_shown_as_it_is():
    with use_locale("nl"):
        assert reason_text("some reason from a newer kpiwatch") == "some reason from a newer kpiwatch"


def test_holidays_and_retail_peaks_by_their_dutch_names_english_unchanged():
    assert event_display_name("Christmas Day", "NL") == "Christmas Day"
    assert event_display_name("black_friday") == "black_friday"
    with use_locale("nl"):
        assert event_display_name("Christmas Day", "NL") == "Eerste kerstdag"
        assert event_display_name("King's Day", "NL") == "Koningsdag"
        assert event_display_name("black_friday") == "Black Friday"
        assert event_display_name("Winter sale", "NL") == "Winter sale"  # the team's own name
        assert event_display_name("Christmas Day", "JP") == "Christmas Day"  # no Dutch names there


def test_the_calendar_hint_names_the_days_in_the_locale():
    calendar = Calendar(country="NL", events=(UserEvent("Winter sale", date(2025, 11, 24), date(2025, 12, 31)),))
    christmas = date(2025, 12, 25)
    assert calendar.describe(christmas) == ["Winter sale (your event) started on 24 Nov", "Christmas Day", "christmas"]
    with use_locale("nl"):
        assert calendar.describe(christmas) == ["Winter sale (jullie evenement) begon op 24 nov", "Eerste kerstdag",
                                                "kerstinkopen"]


def _anomaly(segment: dict[str, str]) -> Anomaly:
    period = pd.Timestamp("2025-12-10", tz="UTC")
    return Anomaly("sessions", segment, period, "D", 50.0, 100.0, 80.0, 120.0, Direction.DOWN, True, Severity.WARNING,
                   0.999, "ets")


def test_chart_titles_say_total_and_the_kpi_in_the_locale():
    assert chart_title(_anomaly({})) == "sessions total (ets)"
    assert chart_subject(_anomaly({"channel": "email"})) == "sessions channel=email"
    with use_locale("nl"):
        assert chart_title(_anomaly({})) == "sessies totaal (ets)"


def test_the_chart_legend_is_in_the_locale(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    legends: list[list[str]] = []
    save = Figure.savefig

    def keep_legend(figure: Figure, *args, **kwargs):
        legends.append([text.get_text() for text in figure.axes[0].get_legend().get_texts()])
        return save(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep_legend)
    days = pd.date_range("2025-11-01", periods=40, freq="D", tz="UTC")
    history = pd.Series(range(40), index=days, dtype=float)
    ahead = days[-5:]
    band = Forecast(pd.Series(35.0, index=ahead), pd.Series(30.0, index=ahead), pd.Series(40.0, index=ahead), 0.95, "ets")
    render_chart(tmp_path / "en.png", history, band)
    with use_locale("nl"):
        render_chart(tmp_path / "nl.png", history, band)
    assert legends == [["actual", "95% band", "expected"], ["werkelijk", "95%-band", "verwacht"]]


def test_a_skipped_series_note_is_in_the_locale():
    series = KPISeries("sessions", pd.Series([1.0], index=pd.DatetimeIndex(["2025-12-10"], tz="UTC")), "D")
    report = CheckReport({}, (), (SeriesResult(series, (), None, skipped=reasons.CALIBRATING),))
    assert report.notes == ["sessions: history: calibrating the band"]
    with use_locale("nl"):
        assert report.notes == ["sessions: geschiedenis: de band wordt nog gekalibreerd"]


def _check(tmp_path: Path, config_tail: str, at: str, *options: str):
    data = tmp_path / "export.csv"
    write_export(data, {"2025-12-05": 0.4})
    config = tmp_path / "kpiwatch.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state.db", tmp=tmp_path, data=data) + config_tail)
    result = CliRunner().invoke(cli, ["check", "--config", str(config), "--at", at, "--dry-run", *options],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_the_incomplete_and_no_data_notes_of_a_check_are_in_dutch(tmp_path):
    incomplete = _check(tmp_path, "", "2025-12-06T06:00", "--locale", "nl")
    assert ("onvolledig: leads: vr 05 dec 2025 heeft 40% van de gebruikelijke rijen (completeness 0.9 nodig): "
            "do 04 dec 2025 beoordeeld, de laatste volledige dag") in incomplete.stderr
    missing = _check(tmp_path, "    completeness: 0\n", "2025-12-09T06:00", "--locale", "nl")
    assert ("geen gegevens: leads: geen waarde voor ma 08 dec 2025 (de laatste waarde is van vr 05 dec 2025): "
            "niet beoordeeld") in missing.stderr
    assert "no value" not in missing.stderr and "incomplete" not in incomplete.stderr


def test_the_english_catalogue_holds_the_reasons_as_the_engine_makes_them():
    """The catalogue's English `reason.*` texts are never shown (English shows the reason
    itself), so only this test keeps them from drifting away from what the engine stores."""
    from forecaster.i18n import t

    for reason, key in reasons._FIXED.items():
        assert t(key) == reason
    assert t("reason.first_event", events="black_friday") == reasons.first_event(["black_friday"])
    assert t("reason.small_change", change="0.004", limit="0.01") == reasons.small_change(0.004, 0.01)
    assert t("reason.small_volume", volume="12", limit="30") == reasons.small_volume(12, 30)
