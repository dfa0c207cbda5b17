"""Calendar effects the models learn and the alert text names: public holidays and the retail
peaks every marketing team knows (Black Friday, Sinterklaas, Christmas).

Prophet takes them as its `holidays` frame (one effect per day of each event's window).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache

import holidays as holiday_lib
import pandas as pd
from babel.dates import format_date

from forecaster.i18n import current_locale, t
from forecaster.types import BadInputError

HOLIDAY_COLUMNS = ["holiday", "ds", "lower_window", "upper_window"]
RETAIL_EVENTS = ("black_friday", "sinterklaas", "christmas")
NAME_YEARS = range(2000, 2041)
"""The years whose holiday names `event_display_name` knows (names seldom change; a few do)."""


def black_friday(year: int) -> date:
    """The day after the fourth Thursday of November (US Thanksgiving): 29 Nov 2024, 28 Nov 2025."""
    first = date(year, 11, 1)
    first_thursday = first + timedelta(days=(3 - first.weekday()) % 7)
    return first_thursday + timedelta(weeks=3, days=1)


def retail_events(years: Iterable[int]) -> pd.DataFrame:
    """Built-in retail peaks per year, as a Prophet holidays frame.

    black_friday: Friday to Cyber Monday (window 0..+3); sinterklaas: 5 Dec (the Dutch gift
    evening); christmas: shopping from 14 Dec to New Year's Day (window -11..+7). Short windows on
    purpose: every day of a window is one more effect learned from only one or two earlier years.
    """
    rows = []
    for year in years:
        rows.append(("black_friday", black_friday(year), 0, 3))
        rows.append(("sinterklaas", date(year, 12, 5), 0, 0))
        rows.append(("christmas", date(year, 12, 25), -11, 7))
    return _frame(rows)


def public_holidays(country: str, years: Iterable[int]) -> pd.DataFrame:
    """The country's public holidays (the `holidays` package) as single-day events.

    country: ISO 3166 code such as "NL", "BE", "DE", "US".
    """
    try:
        calendar = holiday_lib.country_holidays(country.upper(), years=list(years))
    except NotImplementedError:
        raise BadInputError(
            f"country {country!r} has no holiday calendar; use an ISO 3166 code such as NL, BE, DE, GB, US"
        ) from None
    return _frame([(name, day, 0, 0) for day, name in sorted(calendar.items())])


def events_frame(country: str | None, years: Iterable[int], retail: bool = True) -> pd.DataFrame:
    """Public holidays of `country` (None = none) plus the retail peaks (when `retail`)."""
    years = list(years)
    parts = [public_holidays(country, years)] if country else []
    if retail:
        parts.append(retail_events(years))
    if not parts:
        return _frame([])
    return pd.concat(parts, ignore_index=True)


def events_on(day: date, country: str | None, retail: bool = True) -> list[str]:
    """Names of the events whose window covers `day`, e.g. ["black_friday"] on Cyber Monday."""
    return list(_days_covered(country, retail, day.year).get(day, ()))


@lru_cache(maxsize=128)
def _days_covered(country: str | None, retail: bool, year: int) -> dict[date, tuple[str, ...]]:
    """Every day of `year` inside some event window, with the events' names (sorted).

    Cached: checks ask this for every day of two years of history for every series, and building
    the holiday calendar each time cost ~1.4 s per series.
    """
    frame = events_frame(country, [year - 1, year, year + 1], retail)
    covered: dict[date, set[str]] = {}
    for row in frame.itertuples(index=False):
        for offset in range(int(row.lower_window), int(row.upper_window) + 1):
            day = (row.ds + pd.Timedelta(days=offset)).date()
            if day.year == year:
                covered.setdefault(day, set()).add(str(row.holiday))
    return {day: tuple(sorted(names)) for day, names in covered.items()}


def _frame(rows: list[tuple[str, date, int, int]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=HOLIDAY_COLUMNS)
    frame["ds"] = pd.to_datetime(frame["ds"])
    return frame


@dataclass(frozen=True)
class UserEvent:
    """A team's own event: a campaign launch, a promotion, a site release (days inclusive)."""

    name: str
    start: date
    end: date


@dataclass(frozen=True)
class Calendar:
    """Everything a KPI's days may owe to the calendar: the country's public holidays, the
    retail peaks, and the team's own events. Models learn from it; alerts quote it."""

    country: str | None = None
    retail: bool = True
    events: tuple[UserEvent, ...] = ()

    def frame(self, years: Iterable[int]) -> pd.DataFrame:
        """A Prophet holidays frame: built-in events for `years` plus every user event."""
        built_in = events_frame(self.country, years, self.retail)
        own = _frame([(e.name, e.start, 0, (e.end - e.start).days) for e in self.events])
        return pd.concat([built_in, own], ignore_index=True) if len(own) else built_in

    def events_on(self, day: date) -> list[str]:
        """Names of the built-in and user events covering `day`."""
        own = [e.name for e in self.events if e.start <= day <= e.end]
        return sorted(set(events_on(day, self.country, self.retail)) | set(own))

    def describe(self, day: date) -> list[str]:
        """Sentences for an alert, in the current locale: "Winter sale (your event) started on
        24 Nov", "black_friday" (in Dutch "Winter sale (jullie evenement) begon op 24 nov",
        "Black Friday", and the holidays by their Dutch names)."""
        own = [
            t("event.own_started" if e.start < day else "event.own_starts", name=e.name, day=_day_month(e.start))
            for e in self.events
            if e.start <= day <= e.end
        ]
        return own + [event_display_name(name, self.country) for name in events_on(day, self.country, self.retail)]


def event_display_name(name: str, country: str | None = None) -> str:
    """An event's name as a person reads it in the current locale. In English the name itself
    (as the models and stored states know it: "black_friday", "Christmas Day"). Otherwise the
    retail peaks from the catalogue, a public holiday of `country` by its name in the language
    when the `holidays` package has one, and anything else (the team's own events) as named."""
    language = current_locale()
    if language == "en":
        return name
    if name in RETAIL_EVENTS:
        return t(f"event.{name}")
    return _holiday_names(country.upper(), language).get(name, name) if country else name


@lru_cache(maxsize=16)
def _holiday_names(country: str, language: str) -> dict[str, str]:
    """Each public holiday's name as `public_holidays` gives it -> its name in `language` ({}
    when the package has no such translation for the country)."""
    try:
        default = holiday_lib.country_holidays(country, years=NAME_YEARS)
        if language not in (default.supported_languages or ()):
            return {}
        local = holiday_lib.country_holidays(country, years=NAME_YEARS, language=language)
    except NotImplementedError:
        return {}
    return {default[day]: local[day] for day in default if day in local}


def _day_month(day: date) -> str:
    """"24 Nov" ("24 nov" in Dutch)."""
    language = current_locale()
    return f"{day:%d %b}" if language == "en" else format_date(day, "d MMM", locale=language)
