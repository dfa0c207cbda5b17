"""Why a period was not judged, or judged and not alerted: each reason's canonical English text
and its display in the current locale.

The English text is what `Judgement.reason` holds: it is packed into detector states and
compared (`held_back` knows a guardrail's reason by it, feedback an expected period). So it never
changes with the locale; `reason_text` translates it where a person reads it. Every reason the
engine and the pipeline give is made here, so the two cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from forecaster.i18n import current_locale, t

TOO_FEW_VALUES = "history: too few values for a first fit yet"
CALIBRATING = "history: calibrating the band"
NO_DATA = "no data"
DAILY_HABIT = "a daily habit: outside the band at this time yesterday too"
EXPECTED = "marked expected"
NEEDS_HISTORY = "needs its whole history"
NO_JUDGEMENT = "no judgement for this period"

_FIXED = {
    TOO_FEW_VALUES: "reason.too_few_values",
    CALIBRATING: "reason.calibrating",
    NO_DATA: "reason.no_data",
    DAILY_HABIT: "reason.daily_habit",
    EXPECTED: "reason.expected",
    NEEDS_HISTORY: "reason.needs_history",
    NO_JUDGEMENT: "reason.no_judgement",
}
_FIRST_EVENT = re.compile(r"first (?P<events>.+) in the history: its effect is learned, not judged")
_SMALL_CHANGE = re.compile(r"change (?P<change>\S+) is below min_abs_change (?P<limit>\S+)")
_SMALL_VOLUME = re.compile(r"volume (?P<volume>\S+) is below min_volume (?P<limit>\S+)")


def first_event(names: Sequence[str]) -> str:
    """The reason of an event day seen for the first time (its effect is learned from it)."""
    return f"first {', '.join(names)} in the history: its effect is learned, not judged"


def small_change(change: float, limit: float) -> str:
    """The reason of a move smaller than `min_abs_change` (both in the KPI's units)."""
    return f"change {change:g} is below min_abs_change {limit:g}"


def small_volume(volume: float, limit: float) -> str:
    """The reason of a period whose volume is under `min_volume`."""
    return f"volume {volume:g} is below min_volume {limit:g}"


def reason_text(reason: str, country: str | None = None) -> str:
    """`reason` as a person reads it in the current locale: itself in English; in another
    language the catalogue's `reason.*` text (a reason this version does not know, say from a
    store another version wrote, is shown as it is). country: the config's, whose public
    holidays an event day's reason names (None: they keep their English names)."""
    if current_locale() == "en" or not reason:
        return reason
    if reason in _FIXED:
        return t(_FIXED[reason])
    if found := _FIRST_EVENT.fullmatch(reason):
        from forecaster.calendar import event_display_name

        names = ", ".join(event_display_name(name, country) for name in found["events"].split(", "))
        return t("reason.first_event", events=names)
    if found := _SMALL_CHANGE.fullmatch(reason):
        return t("reason.small_change", change=found["change"], limit=found["limit"])
    if found := _SMALL_VOLUME.fullmatch(reason):
        return t("reason.small_volume", volume=found["volume"], limit=found["limit"])
    return reason
