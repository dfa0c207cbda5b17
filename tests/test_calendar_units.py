"""Tests of the event calendar (Black Friday, retail windows, public holidays) and of the number,
change and period formatting people read in alerts.
"""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from forecaster.calendar import HOLIDAY_COLUMNS, black_friday, events_frame, events_on, public_holidays, retail_events
from forecaster.types import BadInputError
from forecaster.units import format_change, format_period, format_value

nan = float("nan")

# --------------------------------------------------------------------------- calendar


@pytest.mark.parametrize(
    ("year", "day"),
    [(2018, date(2018, 11, 23)),  # 1 Nov is a Thursday: Thanksgiving on the 22nd
     (2023, date(2023, 11, 24)), (2024, date(2024, 11, 29)), (2025, date(2025, 11, 28)),
     (2026, date(2026, 11, 27))],
)
def test_black_friday(year: int, day: date) -> None:
    assert black_friday(year) == day
    assert black_friday(year).weekday() == 4  # a Friday


@pytest.mark.parametrize(
    ("day", "country", "events"),
    [
        (date(2025, 12, 1), "NL", ["black_friday"]),  # Cyber Monday 2025
        (date(2025, 11, 28), None, ["black_friday"]),  # the Friday itself
        (date(2025, 11, 27), None, []),  # Thanksgiving is not in the window
        (date(2025, 12, 2), None, []),  # the Tuesday after Cyber Monday
        (date(2025, 12, 5), "NL", ["sinterklaas"]),
        (date(2025, 12, 13), None, []),
        (date(2025, 12, 14), None, ["christmas"]),  # christmas shopping: 14 Dec ...
        (date(2026, 1, 1), None, ["christmas"]),  # ... to New Year's Day of the next year
        (date(2026, 1, 1), "NL", ["New Year's Day", "christmas"]),
        (date(2026, 1, 2), None, []),
        (date(2025, 12, 25), "NL", ["Christmas Day", "christmas"]),
        (date(2025, 4, 26), "NL", ["King's Day"]),
        (date(2025, 4, 27), "NL", []),  # 27 April 2025 is a Sunday: King's Day moved to the 26th
        (date(2025, 4, 26), None, []),
    ],
)
def test_events_on(day: date, country: str | None, events: list[str]) -> None:
    assert events_on(day, country) == events


def test_events_on_without_retail() -> None:
    assert events_on(date(2025, 12, 1), "NL", retail=False) == []
    assert events_on(date(2025, 12, 25), "NL", retail=False) == ["Christmas Day"]


@pytest.mark.parametrize(("year", "kings_day"), [(2023, date(2023, 4, 27)), (2025, date(2025, 4, 26))])
def test_dutch_kings_day_is_a_public_holiday(year: int, kings_day: date) -> None:
    frame = public_holidays("NL", [year])
    assert list(frame.columns) == HOLIDAY_COLUMNS
    row = frame[frame["ds"] == pd.Timestamp(kings_day)]
    assert row["holiday"].tolist() == ["King's Day"]
    assert (row["lower_window"].tolist(), row["upper_window"].tolist()) == ([0], [0])


def test_country_code_is_case_insensitive() -> None:
    pd.testing.assert_frame_equal(public_holidays("nl", [2025]), public_holidays("NL", [2025]))


@pytest.mark.parametrize("country", ["XX", "Netherlands", "ZZZ"])
def test_unknown_country(country: str) -> None:
    with pytest.raises(BadInputError) as info:
        public_holidays(country, [2025])
    assert str(info.value) == (
        f"country {country!r} has no holiday calendar; use an ISO 3166 code such as NL, BE, DE, GB, US"
    )


def test_unknown_country_through_events_on() -> None:
    with pytest.raises(BadInputError):
        events_on(date(2025, 12, 1), "XX")


def test_retail_events_frame() -> None:
    frame = retail_events([2025])
    assert frame.to_dict("list") == {
        "holiday": ["black_friday", "sinterklaas", "christmas"],
        "ds": [pd.Timestamp("2025-11-28"), pd.Timestamp("2025-12-05"), pd.Timestamp("2025-12-25")],
        "lower_window": [0, 0, -11],
        "upper_window": [3, 0, 7],
    }


@pytest.mark.parametrize(
    ("country", "retail", "rows"),
    [(None, False, 0), (None, True, 6), ("NL", False, 21), ("NL", True, 27)],
)
def test_events_frame(country: str | None, retail: bool, rows: int) -> None:
    # NL: 10 public holidays in 2024, 11 in 2025 (Liberation Day counts every fifth year only);
    # 3 retail events per year.
    frame = events_frame(country, [2024, 2025], retail=retail)
    assert list(frame.columns) == HOLIDAY_COLUMNS
    assert len(frame) == rows


# --------------------------------------------------------------------------- units


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (0.0241, "%", "2.41%"),
        (0.5, "%", "50.00%"),
        (1204, "€", "€1,204"),
        (1204.4, "$", "$1,204"),
        (12.5, "€", "€12.50"),
        (99.994, "£", "£99.99"),
        (3.2, "s", "3.20 s"),
        (2.5, "x", "2.50x"),
        (12345, "", "12,345"),
        (1234567.8, "orders", "1,234,568 orders"),
        (150, "sessions", "150 sessions"),
        (100, "", "100"),
        (12.345, "", "12.3"),
        (7, "orders", "7 orders"),
        (0.5, "", "0.5"),
        (-0.5, "", "-0.5"),
        (0, "", "0"),
        (nan, "%", "no data"),
        (nan, "", "no data"),
        (None, "€", "no data"),
    ],
)
def test_format_value(value: float, unit: str, text: str) -> None:
    assert format_value(value, unit) == text


@pytest.mark.parametrize(
    ("actual", "expected", "unit", "text"),
    [
        (55, 100, "", "-45.0%"),
        (110, 100, "", "+10.0%"),
        (100, 100, "", "+0.0%"),
        (12, 10, "€", "+20.0%"),
        (-50, -100, "", "+50.0%"),  # relative to |expected|: up is +
        (0.0133, 0.0241, "%", "-44.8% (-1.08 points)"),
        (0.03, 0.02, "%", "+50.0% (+1.00 points)"),
        (5, 0, "", "+5"),  # no percentage of zero: the absolute change
        (-3, 0, "€", "-€3.00"),
        (0, 0, "", "+0"),
    ],
)
def test_format_change(actual: float, expected: float, unit: str, text: str) -> None:
    assert format_change(actual, expected, unit) == text


@pytest.mark.parametrize(
    ("stamp", "freq", "text"),
    [
        ("2025-12-10", "D", "Wed 10 Dec 2025"),
        ("2025-12-10", "d", "Wed 10 Dec 2025"),
        ("2025-12-07", "W", "Sun 07 Dec 2025"),
        ("2025-12-07", "W-SUN", "Sun 07 Dec 2025"),
        ("2025-12-10 14:00", "h", "10 Dec 2025 14:00 UTC"),
        ("2025-12-10 14:05", "5min", "10 Dec 2025 14:05 UTC"),
        ("2025-12-01", "MS", "Dec 2025"),
        ("2025-12-31", "ME", "Dec 2025"),
        ("2025-10-01", "QS", "Q4 2025"),
    ],
)
def test_format_period(stamp: str, freq: str, text: str) -> None:
    assert format_period(pd.Timestamp(stamp, tz="UTC"), freq) == text
