"""The team's own calendar events: validated in config, learned by Prophet, quoted in alerts."""

from __future__ import annotations

from datetime import date

import pytest

from forecaster.calendar import Calendar, UserEvent
from forecaster.settings import ConfigError, parse_config

BASE = "sources: {default: {type: demo}}\nkpis:\n  s: {metric: sessions}\ncountry: NL\n"


def test_events_from_config_reach_the_calendar() -> None:
    settings = parse_config(BASE + "events:\n  - {name: Winter sale, start: 2025-11-24, end: 2025-11-30}\n"
                                   "  - {name: Site release, start: 2025-10-02}\n")
    calendar = settings.calendar
    assert calendar.events == (
        UserEvent("Winter sale", date(2025, 11, 24), date(2025, 11, 30)),
        UserEvent("Site release", date(2025, 10, 2), date(2025, 10, 2)),
    )
    assert "Winter sale" in calendar.events_on(date(2025, 11, 30))
    assert calendar.events_on(date(2025, 12, 3)) == []
    assert calendar.describe(date(2025, 11, 26))[0] == "Winter sale (your event) started on 24 Nov"


def test_prophet_frame_holds_user_events_as_windows() -> None:
    calendar = Calendar("NL", True, (UserEvent("Winter sale", date(2025, 11, 24), date(2025, 11, 30)),))
    frame = calendar.frame([2025])
    row = frame[frame["holiday"] == "Winter sale"].iloc[0]
    assert (row["lower_window"], row["upper_window"]) == (0, 6)
    assert {"black_friday", "christmas"} <= set(frame["holiday"])


@pytest.mark.parametrize(
    "events,message",
    [
        ("  - {name: Sale, start: 2025-11-24, end: 2025-11-20}\n", "ends (2025-11-20) before it starts (2025-11-24)"),
        ("  - {name: Sale, start: someday}\n", "events.0.start:"),
        ("  - {start: 2025-11-24}\n", "events.0.name: required key is missing"),
        ("  - {name: Sale, start: 2025-11-24, kind: promo}\n", "events.0.kind: unknown key; allowed here: name, start, end"),
    ],
)
def test_bad_events_are_one_line(events: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + "events:\n" + events, origin="c.yaml")
    assert message in str(info.value) and "\n" not in str(info.value)
