"""Every text a person reads, in their language: one catalogue per language (`en.yaml`,
`nl.yaml` beside this module), numbers and dates in that language's conventions (Babel's CLDR).

    with use_locale("nl"):
        t("incident.title", kpi=kpi_name("conversion_rate"), more=3)   # "conversieratio en 3 gerelateerde"
        format_day(day)                                                 # "wo 10 dec 2025"

The locale is a context variable, set once where work enters (the CLI's `--locale` or the
config's `locale:`, the daemon's job), so the functions that build texts deep in the pipeline need
no locale parameter; a thread or process that builds texts sets it again (`use_locale`).

A catalogue maps a dotted key (`section.name`) to a `str.format` template with named fields; both
catalogues hold the same keys with the same fields (`catalogue_problems`, checked by a test). A
key missing from the catalogue is a programming error (KeyError), never a silent English fallback.
"""

from __future__ import annotations

import contextvars
import string
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

LOCALES = ("en", "nl")
DEFAULT_LOCALE = "en"
_CURRENT: contextvars.ContextVar[str] = contextvars.ContextVar("kpiwatch_locale", default=DEFAULT_LOCALE)


def current_locale() -> str:
    """The locale texts are built in now ("en" unless `use_locale` says otherwise)."""
    return _CURRENT.get()


@contextmanager
def use_locale(code: str) -> Iterator[None]:
    """Build texts in `code` ("en" or "nl") inside the block; ValueError for another code."""
    if code not in LOCALES:
        raise ValueError(f"locale must be one of {', '.join(LOCALES)}. Got: {code!r}")
    token = _CURRENT.set(code)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def set_locale(code: str) -> None:
    """Set the locale for the rest of this context (a process's entry point, a worker's start)."""
    if code not in LOCALES:
        raise ValueError(f"locale must be one of {', '.join(LOCALES)}. Got: {code!r}")
    _CURRENT.set(code)


def t(key: str, **fields: Any) -> str:
    """The text of `key` in the current locale, its `{fields}` filled in (numbers formatted by
    the caller: `forecaster.units`)."""
    return catalogue(current_locale())[key].format(**fields)


@lru_cache(maxsize=len(LOCALES))
def catalogue(code: str) -> Mapping[str, str]:
    """The flat catalogue of `code`: dotted key -> template."""
    text = (resources.files("forecaster.i18n") / f"{code}.yaml").read_text(encoding="utf-8")
    return _flatten(yaml.safe_load(text) or {})


def kpi_name(name: str) -> str:
    """A KPI's display name in the current locale: the catalogue's `kpi.<name>` when it has one
    (conversion_rate -> "conversieratio" in Dutch), else the configured name itself (English
    keeps the names people configured and grep for)."""
    return catalogue(current_locale()).get(f"kpi.{name}", name)


def metric_name(name: str) -> str:
    """A metric's (or a KPI's) name inside a sentence: the catalogue's `kpi.<name>` when it has
    one (ad_cost -> "advertentiekosten" in Dutch), else the name with spaces for underscores
    (English: "ad cost", "page load seconds")."""
    return catalogue(current_locale()).get(f"kpi.{name}", name.replace("_", " "))


def tn(key: str, count: int, **fields: Any) -> str:
    """`t` for a text that depends on a count: `key_one` when count is 1, else `key_other`
    ("1 anomaly", "2 anomalies"); `count` is a field of both."""
    return t(f"{key}_one" if count == 1 else f"{key}_other", count=count, **fields)


def catalogue_problems() -> list[str]:
    """What differs between the catalogues: keys missing in one, or templates whose fields differ
    ("nl: incident.title: fields {kpi} vs en {kpi, more}"); [] when they agree."""
    problems = []
    base = catalogue(DEFAULT_LOCALE)
    for code in LOCALES:
        other = catalogue(code)
        problems.extend(f"{code}: missing {key}" for key in sorted(set(base) - set(other)) if not key.startswith("kpi."))
        problems.extend(f"{code}: {key} is not in {DEFAULT_LOCALE}" for key in sorted(set(other) - set(base))
                        if not key.startswith("kpi."))
        for key in sorted(set(base) & set(other)):
            if _fields(base[key]) != _fields(other[key]):
                problems.append(f"{code}: {key}: fields {sorted(_fields(other[key]))} vs {DEFAULT_LOCALE} "
                                f"{sorted(_fields(base[key]))}")
    return problems


def _fields(template: str) -> set[str]:
    return {name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(template) if name}


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat
