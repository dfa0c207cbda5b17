"""Numbers as people read them: 2.41%, €1,204, $3,812, 3.20 s, 12,345 in English; 2,41%,
€ 1.204, 3,20 s, 12.345 in Dutch.

Every number and date a person reads is formatted here, in the current locale
(`forecaster.i18n.current_locale`). English keeps the formats kpiwatch always printed (the
tests hold them byte for byte); another locale is spelled by Babel's CLDR data: its digit
grouping and decimal sign, its own currency pattern ("€ 1.234", "€ 45,17" in Dutch), its day
and month names ("wo 10 dec 2025"). Money takes its currency as a parameter (an ISO 4217 code).
"""

from __future__ import annotations

import math
from functools import lru_cache

import pandas as pd
from babel import Locale
from babel.dates import format_date
from babel.numbers import format_currency, format_decimal, get_currency_precision, get_currency_symbol, list_currencies

from forecaster.i18n import current_locale, t

DEFAULT_CURRENCY = "EUR"
LOCALE = "en"  # the locale currency symbols in a KPI's `unit` are read in ("$" -> USD, "CA$" -> CAD)
CURRENCY_UNIT = "currency"  # a KPI `unit` meaning "money in the config's `currency`"
# Metrics whose sums are money, so an impact or a volume can be priced (in the KPI's currency).
MONEY_METRICS = frozenset({"revenue", "ad_cost", "cost", "spend", "ad_spend"})
NBSP = "\xa0"  # CLDR patterns put one between "€" and the amount; texts carry a plain space (typed, grepped)


@lru_cache(maxsize=1)
def _known_codes() -> frozenset[str]:
    return frozenset(list_currencies())


@lru_cache(maxsize=1)
def _code_of_symbol() -> dict[str, str]:
    """Symbol -> ISO code in `LOCALE` ("$" -> USD, "CA$" -> CAD); a symbol that is its own code
    (CHF) is found as a code. Built once: CLDR gives each code its own symbol in English."""
    symbols: dict[str, str] = {}
    for code in sorted(_known_codes()):
        symbols.setdefault(get_currency_symbol(code, LOCALE), code)
    return symbols


def is_currency_code(code: str) -> bool:
    """Whether `code` is an ISO 4217 currency code Babel knows ("USD", "EUR"; upper case)."""
    return code in _known_codes()


def currency_of(unit: str) -> str | None:
    """The ISO 4217 code a KPI unit names, or None when the unit is not money: a symbol of
    `LOCALE` ("€" -> EUR, "$" -> USD, "£" -> GBP, "CA$" -> CAD) or an upper-case code ("USD").
    Codes are upper case only: "cup", "top" or "all" are units of counting, not pesos or leks."""
    if not unit:
        return None
    if unit in _known_codes():
        return unit
    return _code_of_symbol().get(unit)


def currency_symbol(code: str) -> str:
    """The symbol of an ISO 4217 code in `LOCALE`: EUR -> "€", USD -> "$", CHF -> "CHF"."""
    return get_currency_symbol(code, LOCALE)


def _english() -> bool:
    return current_locale() == "en"


def _plain(text: str) -> str:
    return text.replace(NBSP, " ").replace("\u202f", " ")


@lru_cache(maxsize=16)
def _money_pattern(locale: str, digits: int) -> str:
    """The locale's own currency pattern with `digits` minor digits: nl "¤ #,##0.00;¤ -#,##0.00"."""
    pattern = Locale.parse(locale).currency_formats["standard"].pattern
    return pattern.replace(".00", "." + "0" * digits if digits else "")


def format_money(amount: float, currency: str, whole: bool = False) -> str:
    """An amount of `currency` (ISO 4217 code): "€1,204", "-$45.17", "£0.93"; in Dutch
    "€ 1.204", "€ -45,17".

    whole: no minor units (an estimate: "≈ €3,812"). Otherwise amounts from 100 up are whole and
    smaller ones keep the currency's minor units (cents; none for JPY)."""
    digits = 0 if whole or abs(amount) >= 100 else get_currency_precision(currency)
    if _english():
        pattern = "¤#,##0" + ("." + "0" * digits if digits else "")
        return format_currency(amount, currency, format=pattern, locale=LOCALE, currency_digits=False)
    locale = current_locale()
    return _plain(format_currency(amount, currency, format=_money_pattern(locale, digits), locale=locale,
                                  currency_digits=False))


def format_number(value: float, digits: int = 0, sign: bool = False, grouping: bool = True) -> str:
    """A plain number with grouping and `digits` decimals: "12,345", "+0.87" ("12.345", "+0,87"
    in Dutch); sign: always show + or -; grouping False: no thousands separator ("1234.5",
    "1234,5": a measurement in a table column)."""
    if _english():
        return f"{value:{'+' if sign else ''}{',' if grouping else ''}.{digits}f}"
    body = ("#,##0" if grouping else "0") + ("." + "0" * digits if digits else "")
    pattern = f"+{body};-{body}" if sign else body
    return _plain(format_decimal(value, pattern, locale=current_locale()))


def format_percent(share: float, digits: int = 0, sign: bool = False) -> str:
    """A share (0.79) as a percentage: "79%", "+4.5%" with sign ("79%", "+4,5%" in Dutch)."""
    if _english():
        return f"{share:{'+' if sign else ''}.{digits}%}"
    return f"{format_number(share * 100, digits, sign)}%"


def format_points(change: float) -> str:
    """A change of a share (0.0087) in percentage points: "+0.87 points" ("+0,87 procentpunt")."""
    return t("units.points", value=format_number(change * 100, 2, sign=True))


def format_ordinal(n: int) -> str:
    """3 -> "3rd" ("3e" in Dutch)."""
    if _english():
        suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
        return f"{n}{suffix}"
    return t("units.ordinal", n=n)


def format_value(value: float, unit: str = "") -> str:
    """A KPI value in its unit: "%" shows a share (0.0241) as 2.41%, currencies (symbol or ISO
    code, see `currency_of`) lead with their symbol."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return t("units.no_data")
    if unit == "%":
        return format_percent(value, 2)
    currency = currency_of(unit)
    if currency is not None:
        return format_money(value, currency)
    if unit == "s":
        return f"{format_number(value, 2)} s"
    if unit == "x":
        return f"{format_number(value, 2)}x"
    if _english():
        text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}"
    else:  # three significant digits below 100, as English's "g"
        text = format_number(value) if abs(value) >= 100 else _plain(format_decimal(value, "@##", locale=current_locale()))
    return f"{text} {unit}".rstrip()


def format_change(actual: float, expected: float, unit: str = "") -> str:
    """The change against expected in percent, plus points for shares: "-45.2% (-0.87 points)"."""
    points = f" ({format_points(actual - expected)})" if unit == "%" else ""
    if expected == 0:
        return f"{'+' if actual >= 0 else '-'}{format_value(abs(actual - expected), unit)}{points}"
    return f"{format_percent((actual - expected) / abs(expected), 1, sign=True)}{points}"


def format_day_month(day: pd.Timestamp) -> str:
    """A date without its weekday: "31 Jan 2026" ("31 jan 2026" in Dutch)."""
    if _english():
        return f"{day.day} {day:%b %Y}"
    return format_date(day.date(), "d MMM y", locale=current_locale())


def format_moment(moment: pd.Timestamp, zone: bool = False) -> str:
    """A date and time to the minute, in the stamp's own timezone: "2026-01-31 09:00" in English
    (as the CLI always printed it), "31 jan 2026 09:00" in Dutch; zone: with its abbreviation
    ("2026-01-31 09:00 CET")."""
    suffix = f" {moment:%Z}" if zone else ""
    if _english():
        return f"{moment:%Y-%m-%d %H:%M}{suffix}"
    return f"{format_date(moment.date(), 'd MMM y', locale=current_locale())} {moment:%H:%M}{suffix}"


def format_period(period: pd.Timestamp, freq: str) -> str:
    """A period as a person names it: "Wed 10 Dec 2025" for days and weeks, "Dec 2025" for months,
    "Q4 2025" for quarters, "10 Dec 2025 14:00 UTC" for hours and finer (Dutch: "wo 10 dec
    2025", "dec 2025", "K4 2025", "10 dec 2025 14:00 UTC")."""
    code = freq.upper()
    english = _english()
    day = period.date()
    if code in {"MS", "M", "ME", "BMS", "BME"}:
        return period.strftime("%b %Y") if english else format_date(day, "LLL y", locale=current_locale())
    if code.startswith("Q"):
        return f"Q{period.quarter} {period.year}" if english else t("units.quarter", quarter=period.quarter,
                                                                      year=period.year)
    if freq.lower() in {"d", "w"} or code.startswith("W"):
        return period.strftime("%a %d %b %Y") if english else format_date(day, "EEE dd MMM y", locale=current_locale())
    if english:
        return period.strftime("%d %b %Y %H:%M UTC")
    return f"{format_date(day, 'dd MMM y', locale=current_locale())} {period:%H:%M} UTC"
