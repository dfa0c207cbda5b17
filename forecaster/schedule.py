"""When the daemon checks a KPI, which periods are due, and what time it is.

Schedules are APScheduler 3.x triggers built from friendly text (`every day at 07:00`, in the
config's timezone) or cron. The periods to judge come from the ledger (the last judged period),
not from the scheduler, so a restart, a missed run or a clock change never skips or repeats one.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from forecaster.sources.frames import local_midnight
from forecaster.types import BadInputError

_DAILY = re.compile(r"^every day at (\d{1,2}):(\d{2})$")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WEEKLY = re.compile(rf"^every ({'|'.join(WEEKDAYS)}) at (\d{{1,2}}):(\d{{2}})$")
_HOURLY = re.compile(r"^every hour at :(\d{2})$")
_INTERVAL = re.compile(r"^every (\d+) (second|minute|hour)s?$")
SCHEDULE_FORMS = ("`every day at 07:00`, `every monday at 09:00`, `every hour at :10`, `every 30 seconds`, "
                  "or a cron line like `0 7 * * *`")

CLOCK_ENV = "KPIWATCH_CLOCK"
"""Simulated time for acceptance tests and demos: `START*SPEED[@ANCHOR]`: the simulated time was
START (ISO 8601) at the real unix time ANCHOR (default: when the process started) and runs SPEED
simulated seconds per real second; e.g. `2025-12-01T00:00:00Z*43200` runs half a day per second.
A fixed ANCHOR keeps the simulated time continuous across restarts."""


def parse_schedule(text: str, timezone: str) -> BaseTrigger:
    """The APScheduler trigger for a schedule text; ValueError names the allowed forms."""
    spec = " ".join(text.strip().lower().split())
    if match := _DAILY.match(spec):
        hour, minute = int(match[1]), int(match[2])
        if hour > 23 or minute > 59:
            raise ValueError(f"schedule {text!r}: no such time of day")
        return CronTrigger(hour=hour, minute=minute, timezone=timezone)
    if match := _WEEKLY.match(spec):  # the weekly digest's form
        hour, minute = int(match[2]), int(match[3])
        if hour > 23 or minute > 59:
            raise ValueError(f"schedule {text!r}: no such time of day")
        return CronTrigger(day_of_week=WEEKDAYS.index(match[1]), hour=hour, minute=minute, timezone=timezone)
    if match := _HOURLY.match(spec):
        if int(match[1]) > 59:
            raise ValueError(f"schedule {text!r}: minutes go from :00 to :59")
        return CronTrigger(minute=int(match[1]), timezone="UTC")
    if match := _INTERVAL.match(spec):
        amount = int(match[1])
        if amount < 1:
            raise ValueError(f"schedule {text!r}: the interval must be at least 1")
        return IntervalTrigger(**{f"{match[2]}s": amount}, timezone="UTC")
    if len(spec.split()) == 5:
        try:
            return CronTrigger.from_crontab(spec, timezone=timezone)
        except ValueError as exc:
            raise ValueError(f"schedule {text!r}: not a valid cron line ({exc})") from None
    raise ValueError(f"schedule {text!r} is not understood; use {SCHEDULE_FORMS}")


def default_schedule(freq: str) -> str:
    """Daily KPIs are checked each morning; hourly ones ten minutes past each hour."""
    return "every day at 07:00" if freq == "D" else "every hour at :10"


def due_periods(last_judged: pd.Timestamp | None, latest_closed: pd.Timestamp, freq: str, cap: int) -> list[pd.Timestamp]:
    """The periods to judge now, oldest first: every period after `last_judged` up to
    `latest_closed`, at most the `cap` latest; only `latest_closed` when nothing was judged yet.

    Daily labels are midnight UTC of the local date, so stepping one calendar day is right even
    across days of 23 or 25 hours.
    """
    if last_judged is not None and last_judged >= latest_closed:
        return []
    if last_judged is None:
        return [latest_closed]
    step = pd.Timedelta(days=1) if freq == "D" else pd.Timedelta(hours=1)
    periods = list(pd.date_range(last_judged + step, latest_closed, freq=step))
    return periods[-cap:]


def moment_after(period: pd.Timestamp, freq: str, timezone: str) -> pd.Timestamp:
    """A time at which `period` is the latest closed one (the `at` a check uses to judge it):
    local midnight after a day, the next hour after an hour."""
    if freq == "D":
        next_day = (period + pd.Timedelta(days=1)).date()
        return local_midnight(next_day, timezone)  # a midnight skipped by DST moves forward
    return period + pd.Timedelta(hours=1)


@dataclass(frozen=True)
class Clock:
    """The daemon's "now": the wall clock, or simulated time (`KPIWATCH_CLOCK`)."""

    start: pd.Timestamp | None = None
    speed: float = 1.0
    anchor: float = 0.0  # real unix time at which the simulated time was `start`

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Clock:
        """The wall clock unless `KPIWATCH_CLOCK` asks for simulated time."""
        spec = (env if env is not None else os.environ).get(CLOCK_ENV, "").strip()
        if not spec:
            return cls()
        start, _, rest = spec.partition("*")
        speed, _, anchor = rest.partition("@")
        try:
            when = pd.Timestamp(start)
            factor = float(speed or 1.0)
            since = float(anchor) if anchor else time.time()
        except ValueError:
            raise BadInputError(f"{CLOCK_ENV}={spec!r}: use START*SPEED[@UNIXTIME], e.g. 2025-12-01T00:00:00Z*3600") from None
        when = when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")
        return cls(when, factor, since)

    @property
    def simulated(self) -> bool:
        return self.start is not None

    def now(self) -> pd.Timestamp:
        """Now, tz-aware UTC."""
        if self.start is None:
            return pd.Timestamp.now(tz="UTC")
        return self.start + pd.Timedelta(seconds=(time.time() - self.anchor) * self.speed)
