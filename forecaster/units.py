"""Numbers as people read them: 2.41%, €1,204, $3,812, 3.20 s, 12,345.

Every number a person reads is formatted here. Money takes its currency as a parameter (an ISO
4217 code) and is spelled by Babel's CLDR data for `LOCALE`, so a later locale setting changes
one constant, not every message.
"""

from __future__ import annotations

import math
from functools import lru_cache

import pandas as pd
from babel.numbers import format_currency, get_currency_precision, get_currency_symbol, list_currencies

DEFAULT_CURRENCY = "EUR"
LOCALE = "en"  # the messages are English; symbols and digit grouping follow it
CURRENCY_UNIT = "currency"  # a KPI `unit` meaning "money in the config's `currency`"
# Metrics whose sums are money, so an impact or a volume can be priced (in the KPI's currency).
MONEY_METRICS = frozenset({"revenue", "ad_cost", "cost", "spend", "ad_spend"})


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


def format_money(amount: float, currency: str, whole: bool = False) -> str:
    """An amount of `currency` (ISO 4217 code): "€1,204", "-$45.17", "£0.93".

    whole: no minor units (an estimate: "≈ €3,812"). Otherwise amounts from 100 up are whole and
    smaller ones keep the currency's minor units (cents; none for JPY)."""
    digits = 0 if whole or abs(amount) >= 100 else get_currency_precision(currency)
    pattern = "¤#,##0" + ("." + "0" * digits if digits else "")
    return format_currency(amount, currency, format=pattern, locale=LOCALE, currency_digits=False)


def format_value(value: float, unit: str = "") -> str:
    """A KPI value in its unit: "%" shows a share (0.0241) as 2.41%, currencies (symbol or ISO
    code, see `currency_of`) lead with their symbol."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "no data"
    if unit == "%":
        return f"{value * 100:.2f}%"
    currency = currency_of(unit)
    if currency is not None:
        return format_money(value, currency)
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "x":
        return f"{value:.2f}x"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}"
    return f"{text} {unit}".rstrip()


def format_change(actual: float, expected: float, unit: str = "") -> str:
    """The change against expected in percent, plus points for shares: "-45.2% (-0.87 points)"."""
    points = f" ({(actual - expected) * 100:+.2f} points)" if unit == "%" else ""
    if expected == 0:
        return f"{'+' if actual >= 0 else '-'}{format_value(abs(actual - expected), unit)}{points}"
    return f"{(actual - expected) / abs(expected) * 100:+.1f}%{points}"


def format_period(period: pd.Timestamp, freq: str) -> str:
    """A period as a person names it: "Wed 10 Dec 2025" for days and weeks, "Dec 2025" for months,
    "Q4 2025" for quarters, "10 Dec 2025 14:00 UTC" for hours and finer."""
    code = freq.upper()
    if code in {"MS", "M", "ME", "BMS", "BME"}:
        return period.strftime("%b %Y")
    if code.startswith("Q"):
        return f"Q{period.quarter} {period.year}"
    if freq.lower() in {"d", "w"} or code.startswith("W"):
        return period.strftime("%a %d %b %Y")
    return period.strftime("%d %b %Y %H:%M UTC")
