"""`kpiwatch replay KPI`: the daemon itself, on a simulated clock, with a throw-away store.

Every period from `--from` to `--to` is judged as the daemon would judge it the moment it is
due: the same ledger, completeness and no-data handling, the same detector stepping from its
stored state, the same incident planning (new, repeat, resolve) queueing the same messages. Only
nothing is sent: the messages stay in the throw-away store and are counted. So "you would have
had 6 messages, 9 alerts" is what the daemon would have sent.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from alerts.daemon import Daemon
from alerts.store import EvaluationRecord, Store
from forecaster.detect.feedback import SeriesFeedback
from forecaster.pipeline import spelled, values_seen
from forecaster.replay import COLUMNS
from forecaster.schedule import Clock, moment_after
from forecaster.settings import Settings
from forecaster.sources import make_source
from forecaster.timegrid import last_closed_period
from forecaster.types import BadInputError, segment_key
from forecaster.i18n import t
from forecaster.units import format_number, format_period

DEFAULT_DAYS = 90  # replayed when --from is not given
Progress = Callable[[int, int], None]


class _Unsent:
    """A Slack that is never called: the daemon plans and queues its messages, delivery is off."""

    supports_files = False  # no chart uploads: they would only be counted
    supports_threads = True  # as a bot: resolves and joins go into threads (counted, never sent)


@dataclass(frozen=True)
class Rehearsal:
    """What the daemon would have done over the replayed periods, for one KPI.

    frame: the chosen series' judged periods (replay's COLUMNS; anomaly 1 where a message
    announced it). alerts: alerts announced in messages (new and repeats, every series of the
    KPI); messages: Slack messages (one per channel and cycle that had alerts); resolves: thread
    replies saying an incident is over; periods: periods judged. records: every series'
    stored evaluations; texts: the queued messages' texts, in the order they were queued;
    announced: (kpi, segment key, period) of every alert a message carried; first_announced: the
    same for the alerts that started an episode (no repeats).
    """

    label: str
    frame: pd.DataFrame
    alerts: int
    messages: int
    resolves: int
    periods: int
    first: pd.Timestamp
    last: pd.Timestamp
    freq: str
    records: tuple[EvaluationRecord, ...] = ()
    texts: tuple[str, ...] = ()
    announced: frozenset[tuple[str, str, pd.Timestamp]] = frozenset()
    first_announced: frozenset[tuple[str, str, pd.Timestamp]] = frozenset()

    @property
    def summary(self) -> str:
        """One line: the periods, the alerts, the Slack messages and the resolves."""
        return t("cli.replay_summary", periods=format_number(self.periods), first=format_period(self.first, self.freq),
                 last=format_period(self.last, self.freq), messages=format_number(self.messages),
                 alerts=format_number(self.alerts), resolves=format_number(self.resolves),
                 announced=format_number(int(self.frame["anomaly"].sum())))


def replay_kpi(settings: Settings, name: str, segment: Mapping[str, str] | None = None,
               start: pd.Timestamp | None = None, end: pd.Timestamp | None = None,
               progress: Progress | None = None,
               feedback: Mapping[tuple[str, str], SeriesFeedback] | None = None) -> Rehearsal:
    """Run the daemon over the KPI's periods from `start` (default: `DEFAULT_DAYS` before the
    end) to the last period closed at `end` (default: now by the source's clock, less its data
    delay); `segment` picks the series whose rows `frame` holds (default: the total).
    feedback: verdicts to apply by (kpi, segment) (`alerts.feedback.series_feedback`; default none)."""
    kpi = settings.kpi(name)
    wanted = dict(segment or {})
    unknown = sorted(set(wanted) - set(kpi.segments))
    if unknown:
        raise BadInputError(f"{name} is not split by {', '.join(unknown)}; its segments are "
                            f"{', '.join(kpi.segments) or 'none (only the total)'}")
    source = make_source(settings.sources[kpi.source], settings.timezone, kpi.source)
    delay = max(pd.Timedelta(hours=kpi.data_delay_hours), source.data_delay)
    last = last_closed_period((end if end is not None else source.now()) - delay, kpi.freq, settings.timezone)
    if wanted:  # an unknown value would replay an empty series without a word
        frame = source.fetch(kpi.metrics[:1], sorted(wanted), kpi.freq, end=last)
        if not all((frame[dim].astype(str) == value).any() for dim, value in wanted.items()):
            raise BadInputError(f"{name}: no data for segment {spelled(wanted)}; {values_seen(frame, wanted)}")
    step = pd.tseries.frequencies.to_offset(kpi.freq)
    first = (last_closed_period(start, kpi.freq, settings.timezone) + step if start is not None
             else last - pd.Timedelta(days=DEFAULT_DAYS) + step)
    if first > last:
        raise BadInputError(f"--from {start} is after the last closed period {format_period(last, kpi.freq)}; "
                            "give an earlier --from")
    periods = pd.date_range(first, last, freq=step)
    with tempfile.TemporaryDirectory(prefix="kpiwatch-replay-") as folder:
        store = Store(f"sqlite:///{Path(folder) / 'replay.db'}")
        try:
            daemon = _rehearsal_daemon(settings, store)
            daemon.feedback_override = dict(feedback or {})
            store.set_judged(name, "", (first - step).to_pydatetime())
            for done, period in enumerate(periods, start=1):
                daemon.clock = Clock(moment_after(period, kpi.freq, settings.timezone) + delay, speed=0.0)
                daemon.judge_due(name)
                if progress:
                    progress(done, len(periods))
            return _rehearsal(store, name, wanted, periods, kpi.freq)
        finally:
            store.close()


def _rehearsal_daemon(settings: Settings, store: Store) -> Daemon:
    """A daemon that judges in this process and queues without sending, on `store`."""
    daemon = Daemon(None, settings=settings, rehearsal=True)
    daemon.store = store
    daemon.notifier = _Unsent()  # type: ignore[assignment]
    return daemon


def _rehearsal(store: Store, name: str, segment: dict[str, str], periods: pd.DatetimeIndex, freq: str) -> Rehearsal:
    """Read what the rehearsal stored: the series' evaluations and the queued messages."""
    where = segment_key(segment)
    rows = store.rows(limit=10**9)[::-1]  # oldest first
    # Cards, and replies that add alerts to an open incident's thread: both announce alerts.
    messages = [row for row in rows if row.kind in ("message", "reply") and row.payload.get("alert_keys")]
    keys = [key for row in messages for key in row.payload["alert_keys"]]
    everywhere = frozenset((key.split("|")[0], key.split("|")[1], _announced_period(key)) for key in keys)
    first = frozenset((key.split("|")[0], key.split("|")[1], _announced_period(key)) for key in keys
                      if "|repeat|" not in key)
    announced = {period for kpi, segment, period in everywhere if (kpi, segment) == (name, where)}
    records = {pd.Timestamp(r.period): r for r in store.evaluations_of(name, where)}
    frame = pd.DataFrame({
        "timestamp": periods,
        "value": [_value(records, p, "actual") for p in periods],
        "expected": [_value(records, p, "expected") for p in periods],
        "lower": [_value(records, p, "lower") for p in periods],
        "upper": [_value(records, p, "upper") for p in periods],
        "score": [_value(records, p, "score") for p in periods],
        "anomaly": [int(p in announced) for p in periods],
    })[COLUMNS]
    label = name + (f"[{where}]" if where else "")
    resolves = sum(1 for row in rows if row.kind == "resolve")
    segments = sorted({segment for kpi, segment in store.judged_series() if kpi == name})
    records = tuple(r for segment in segments for r in store.evaluations_of(name, segment))
    texts = tuple(row.text for row in rows if row.kind == "message")
    return Rehearsal(label, frame, len(keys), len(messages), resolves, len(periods), periods[0], periods[-1], freq,
                     records, texts, everywhere, first)


def _announced_period(key: str) -> pd.Timestamp:
    """The period an alert key announces: `kpi|segment|period|direction`, or for a repeat
    `kpi|segment|first period|direction|repeat|period`."""
    parts = key.split("|")
    return pd.Timestamp(parts[5] if len(parts) > 5 else parts[2])


def _value(records: Mapping[pd.Timestamp, object], period: pd.Timestamp, column: str) -> float:
    record = records.get(period)
    value = getattr(record, column) if record is not None else None
    return float(value) if value is not None and not (isinstance(value, float) and math.isnan(value)) else np.nan
