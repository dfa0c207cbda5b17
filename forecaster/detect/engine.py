"""The one detection engine: warm up on a history, then step one closed period at a time.

Every face judges through it: the daemon (stepping a state kept in the store), `check` and
`check --at` (walking forward over the history), `replay` and the benchmarks. The same periods
with the same values and settings get the same verdicts, whether the state was kept or rebuilt.

How a period is judged (defaults in brackets):
- forecast: the KPI's model [ets: additive error, no trend, a weekly season for daily data and
  a daily one for finer data] gives the one-step mean from what came before; its parameters are
  re-estimated every `refit_every` periods [100 for daily data] on the last `train_window`
  cleaned periods [200] and in between it only takes the new values in (`Model.update`), so a
  forecast never uses the value it judges. A daily series refits at its own phase of that
  cadence (from a hash of its name and segment), so a daemon's series do not all refit on the
  same cycle. Until two seasonal cycles exist a non-seasonal fit
  judges (after `min_fit` values [60; 30 for data coarser than daily]). Sub-daily data with
  three weeks of history also try a weekly season and keep the one with the smaller one-step
  errors over the last week. `auto` picks its model by the same one-step errors.
- band: conformal, for every model: the 99% quantile of the last `train_window` one-step errors
  (a large error remembered as at most `MEMORY_CAP` times that quantile) sets a normal-equivalent
  sigma; the band is that sigma at the per-period level. Daily data use the KPI's level [0.99];
  finer data a tighter one, so the expected false alarms per day stay the same. A share (a ratio
  within 0..1) over a small denominator widens by its binomial noise.
- calendar (daily data with a calendar): an event day's expected value is the forecast times
  the effect the same event day had the last time (its value over the median of the same weekday
  in the four weeks before); its band is that of two days (today's noise and the noise in the
  effect measured once), scaled by the effect, plus `event_margin`. The first occurrence of an event
  is learned, not judged. Event days never size the band and reach the model with their effect
  taken out.
- robust to the past: an anomalous value reaches the model pulled back to the band's edge (Huber
  cleaning), so a spike barely drags the forecast while a lasting shift is followed; after
  `accept_after` anomalous periods in a row [a day, at least 3] values are taken as they are.
- change of behaviour (sub-daily data): the mean size of the last 10 standardised errors against
  its own long-run distribution (`BehaviourShift`, after Numenta's anomaly likelihood) flags
  denser spikes or a noisier stretch even when no single value leaves the band.
- daily habits (sub-daily data): a period outside the band is not news when one within an hour
  of this time yesterday was outside too, by at least half its error, the same way.
- feedback (`forecaster.detect.feedback`, per series, not part of the settings): false alarms
  given before a period ends widen its band (x1.25 per fresh one, halving with a 30-day
  half-life, at most x1.95); a period marked expected is normal: not judged, its raw value
  trains the model and its error does not size the band.
- rules (`Rules`): guardrails, direction, "for N periods" decide `alert`; an episode of alerts
  is announced when it starts and again every `repeat_hours` while it lasts (`notice`), as the
  incident planner does; it ends after half that interval without an anomaly (a day for daily
  data), when the planner resolves its incident.
"""

from __future__ import annotations

import functools
import hashlib
import math
import pickle
import struct
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from forecaster.calendar import Calendar
from forecaster.detect import codec
from forecaster.detect.calibration import NORMAL_Q99, ErrorTail
from forecaster.detect import reasons
from forecaster.detect.feedback import SeriesFeedback
from forecaster.detect.rules import Rules, guardrail, sampling_sigma
from forecaster.models.base import make_model, z_value
from forecaster.models.fallback import FALLBACK_MODEL, FIT_ERRORS
from forecaster.timegrid import periods_in, periods_per_day, season_length
from forecaster.types import Direction, Judgement, KPISeries

if TYPE_CHECKING:
    from forecaster.settings import KPIConfig

MIN_CALIBRATION = 30  # one-step errors needed before any period is judged
MIN_FIT = 60  # values needed for the first (non-seasonal) fit: rough parameters from fewer cost early judgements
# Data coarser than daily (weekly, monthly): 60 values would be 5 years of months before the first
# fit. The first fit is a non-seasonal ETS with two parameters, which 30 values estimate well; the
# band still waits for MIN_CALIBRATION out-of-sample errors, so a monthly file is judged from its 61st value.
MIN_FIT_COARSE = MIN_CALIBRATION
MIN_SPREAD = 0.1  # of the band's sigma: the least spread BehaviourShift reads its short mean against
MEAN_ABS_NORMAL = math.sqrt(2 / math.pi)  # E|z| of a standard normal: an ordinary period's standardised error
RECURRENCE_SHARE = 0.5  # of an error: one outside the band yesterday at least this large makes today's a habit
MEMORY_CAP = 1.5  # of the band's 99% error quantile: the largest |error| the band remembers as it was
MIN_RELATIVE_SCALE = 1e-3  # of the series' typical size: a flat stretch must not give a zero band
RECENT = 90  # judgements kept in the state (a check window is at most 90 periods)
EVENT_BASELINE_CYCLES = 4  # same-weekday values before an event day that its effect is measured against
EVENT_KEY_CACHE = 100_000  # periods whose event key a detector remembers
STATE_VERSION = 3  # bump when State changes shape: an older stored state is rebuilt, not misread
PACK_MAGIC = b"KWst"  # the first bytes of a packed state (`pack_state`)
PACK_HEADER = struct.Struct("<4sHBI")  # magic, STATE_VERSION, flags, crc32 of the rest
PACK_ZLIB = 1  # flag: the rest is zlib-compressed
COMPRESS_FROM = 16_384  # bytes: a packed state from this size is compressed when that pays (Prophet's JSON)
# The engine's ETS: no trend on purpose (one step ahead the level tracks any trend, and a fitted
# trend with a high smoothing weight makes the filter swing on noisy data); heuristic initial
# states (only the smoothing weights are estimated: milliseconds even for a 288-period season).
ONE_STEP_ETS = {"trend": None, "initialization": "heuristic"}
SEASONED_MODELS = ("ets", "seasonal_naive")  # models that take a `season` parameter


@dataclass(frozen=True)
class Plan:
    """The cadences and windows of one frequency (see the module docstring for the defaults)."""

    freq: str
    season: int
    week: int  # a weekly season for sub-daily data (0 = none): tried beside the daily one
    day: int  # periods per day (0 for daily and coarser data)
    jitter: int  # periods in an hour: how far a daily habit may wander (sub-daily data)
    per_day: float
    level: float  # per period
    refit_every: int
    train_window: int
    accept_after: int
    repeat_after: int
    calm_after: int
    min_fit: int
    fit_window: int  # values a refit reads: train_window, or two years for Prophet's yearly season

    @property
    def memory(self) -> int:
        """Periods of history the state keeps: enough for any refit, the weekly trial (its
        window ends a week ago) and habits."""
        weekly = max(self.train_window, seasonal_history(self.week)) + self.week if self.week else 0
        return max(self.fit_window, seasonal_history(self.season), weekly, EVENT_BASELINE_CYCLES * self.season) + 1

    @property
    def habits(self) -> bool:
        """Sub-daily data: daily habits and changes of behaviour are read, so the state keeps
        what they need (`State.outside`, `State.signed`, `State.behaviour`)."""
        return self.day > 1

    def __reduce__(self) -> tuple[type[Plan], tuple[Any, ...]]:
        # Pickled as its values (not a dict of field names): it is in every stored state.
        return Plan, tuple(getattr(self, f.name) for f in fields(self))


def make_plan(freq: str, rules: Rules, refit_every: int | None = None, train_window: int | None = None,
              accept_after: int | None = None, model: str = "ets") -> Plan:
    """The plan of `freq` under `rules`; None = derived from the frequency. Prophet (daily and
    coarser data) is fitted on the last two years, not `train_window`: its yearly season needs a
    year of history and its holiday effects an earlier occurrence."""
    per_day = periods_per_day(freq)
    season = season_length(freq)
    day = max(int(round(per_day)), 1)
    return Plan(
        freq=freq,
        season=season,
        week=7 * season if per_day > 1 and season > 1 else 0,
        day=int(round(per_day)) if per_day > 1 else 0,
        jitter=int(round(per_day / 24)),
        per_day=per_day,
        # Same expected false alarms per day whatever the sampling: 1 - level per day in all.
        level=1.0 - (1.0 - rules.level) / max(per_day, 1.0),
        refit_every=refit_every or min(max(7 * day, 4 * season, 100), 2016),
        train_window=train_window or min(max(4 * season, 7 * day, 200), 4032),
        accept_after=accept_after or max(day, 3),
        repeat_after=periods_in(rules.repeat_hours, freq),
        calm_after=max(1, periods_in(rules.repeat_hours, freq) // 2),
        min_fit=MIN_FIT if per_day >= 1 else MIN_FIT_COARSE,
        fit_window=(max(train_window or 0, int(round(730 * per_day))) if model == "prophet" and per_day <= 1
                    else train_window or min(max(4 * season, 7 * day, 200), 4032)),
    )


def seasonal_history(season: int) -> int:
    """Values needed before a seasonal model is fitted: two full cycles and a few more."""
    return 2 * season + 10 if season > 1 else 0


def history_needed(freq: str) -> int:
    """Values a series needs before its first judged period: the first fit's, then the band's
    calibration errors (one per value after the fit), then the value judged."""
    return (MIN_FIT if periods_per_day(freq) >= 1 else MIN_FIT_COARSE) + MIN_CALIBRATION + 1


class BehaviourShift:
    """Is the recent size of the errors unusual? A change-of-behaviour test beside the band.

    Like Numenta's anomaly likelihood: each judged period gives a raw score, its standardised
    |one-step error| capped at `cap` [4 sigma, about the band]; the mean of the last `short` raw
    scores [10 periods] is compared with the mean and spread of that short mean over the last
    `long` periods [8,000]. A short mean more than `threshold` [4] spreads above its long-run
    mean says the series has started behaving differently. Silent until `min_history` [300]
    short means exist.
    """

    def __init__(self, short: int = 10, long: int = 8000, cap: float = 4.0, threshold: float = 4.0,
                 min_history: int = 300) -> None:
        self.short, self.long, self.cap, self.threshold, self.min_history = short, long, cap, threshold, min_history
        self.recent: deque[float] = deque(maxlen=short)
        self.means: deque[float] = deque()
        self.total = 0.0
        self.total_sq = 0.0

    def update(self, z: float) -> bool:
        """Take the next period's |error| / sigma; True if the recent errors are unusually large."""
        self.recent.append(min(z, self.cap))
        mean = sum(self.recent) / len(self.recent)
        shifted = False
        if len(self.means) >= self.min_history:
            centre = self.total / len(self.means)
            spread = math.sqrt(max(self.total_sq / len(self.means) - centre * centre, 0.0))
            # A spread under MIN_SPREAD sigmas is a flat stretch, not a precise estimate.
            shifted = (mean - centre) / max(spread, MIN_SPREAD) > self.threshold
        self.means.append(mean)
        self.total += mean
        self.total_sq += mean * mean
        if len(self.means) > self.long:
            old = self.means.popleft()
            self.total -= old
            self.total_sq -= old * old
        return shifted

    def untouched(self) -> bool:
        """As made with the default settings and never updated (daily data never update it)."""
        return not self.means and not self.recent and self.__dict__.keys() == _UNTOUCHED.__dict__.keys() and all(
            type(v) is deque or v == getattr(_UNTOUCHED, k) for k, v in self.__dict__.items())

    def __getstate__(self) -> dict[str, Any]:
        """Pickled with its deques as float64 bytes (`long` short means are 64 KB as python floats)."""
        return {**self.__dict__, "recent": codec.pack_floats(self.recent), "means": codec.pack_floats(self.means)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if not isinstance(state["recent"], deque):
            self.recent = deque(codec.unpack_floats(state["recent"]), maxlen=self.short)
            self.means = deque(codec.unpack_floats(state["means"]))


_UNTOUCHED = BehaviourShift()


@dataclass
class State:
    """Everything the detector knows about one series after its last period. `step` changes it
    in place. The daemon keeps it in the store as `pack_state` bytes (a plain pickle is compact
    too: its lists and judgements are pickled as packed arrays, `forecaster.detect.codec`)."""

    fingerprint: str
    plan: Plan
    proportion: bool  # a ratio within 0..1: a small denominator widens the band
    first_period: pd.Timestamp
    next_period: pd.Timestamp
    position: int = 0  # periods stepped since `first_period`
    observed: int = 0  # of them with a value
    raw: list[float] = field(default_factory=list)  # the last `plan.memory` values, oldest first
    clean: list[float] = field(default_factory=list)  # the same, as the model saw them
    # Outside the band, and the one-step errors (0 where not judged): sub-daily data only
    # (`Plan.habits`: daily habits read them), empty otherwise.
    outside: list[bool] = field(default_factory=list)
    signed: list[float] = field(default_factory=list)
    on_event: list[bool] = field(default_factory=list)
    model: Any = None
    model_label: str = ""
    seasonal: bool | None = None  # the form of the current model
    next_refit: int = 0
    refit_phase: int | None = None  # in [0, plan.refit_every): where its scheduled refits fall (`Detector._next_refit`)
    errors: list[float] = field(default_factory=list)  # one-step errors sizing the band, oldest first
    stale: int = 0  # errors[:stale] came from a model of another form
    behaviour: BehaviourShift = field(default_factory=BehaviourShift)  # updated for sub-daily data only
    run: int = 0  # periods outside the band in a row (either way)
    run_sigma: float = 0.0  # the band's sigma when the current run began (caps its errors)
    alert_run: int = 0  # alertable periods in a row the same way
    alert_up: bool = False
    last_alertable: int = -2  # position of the last alertable period
    episode: bool = False  # an announced episode is going on
    calm: int = 0  # judged periods in a row without an anomaly
    since_notice: int = 0
    volumes: deque[float] = field(default_factory=lambda: deque(maxlen=28))
    effects: dict[tuple[tuple[str, ...], int], tuple[str, float]] = field(default_factory=dict)
    recent: deque[Judgement] = field(default_factory=lambda: deque(maxlen=RECENT))
    version: int = STATE_VERSION

    @property
    def last_period(self) -> pd.Timestamp | None:
        """The latest period stepped (None before the first)."""
        return self.next_period - _offset(self.plan.freq) if self.position else None

    def __getstate__(self) -> tuple[Any, ...]:
        """STATE_VERSION and the fields in their order, with the lists of floats and flags as
        packed arrays, the cleaned values as their differences from the raw ones, the recent
        judgements as columns and the model without the values it shares with the cleaned ones
        (`forecaster.detect.codec`): a quarter of the bytes of the fields as they are, in a
        fraction of the time. An untouched BehaviourShift (daily data) is None."""
        raw = np.asarray(self.raw, codec.FLOAT)
        clean = np.asarray(self.clean, codec.FLOAT)
        fields = dict(self.__dict__)
        fields.update(
            first_period=codec.pack_stamp(self.first_period),
            next_period=codec.pack_stamp(self.next_period),
            raw=raw.tobytes(),
            clean=codec.pack_like(clean, raw),
            outside=codec.pack_flags(self.outside),
            signed=codec.pack_floats(self.signed),
            on_event=codec.pack_flags(self.on_event),
            errors=codec.pack_floats(self.errors),
            model=codec.pack_model(self.model, clean),
            behaviour=None if self.behaviour.untouched() else self.behaviour,
            volumes=(codec.pack_floats(self.volumes), self.volumes.maxlen),
            recent=codec.pack_judgements(self.recent, raw),
        )
        values = tuple(fields.pop(name) for name in STATE_FIELDS)
        return (STATE_VERSION, *values, fields)  # (fields: attributes set beyond the dataclass's, if any)

    def __setstate__(self, packed: tuple[Any, ...] | dict[str, Any]) -> None:
        if type(packed) is not tuple or not packed or packed[0] != STATE_VERSION:
            # Pickled by another version: its fields as they are; `advance` sees the old
            # `version` (or none) and rebuilds the state by walking forward.
            self.__dict__.update(packed if isinstance(packed, dict) else {"version": None})
            return
        self._unpack(packed)

    def _unpack(self, packed: tuple[Any, ...]) -> None:
        """Set the fields from their packed form (`__getstate__`)."""
        if len(packed) != len(STATE_FIELDS) + 2:
            raise ValueError(f"a packed state has {len(STATE_FIELDS) + 2} parts, got {len(packed)}")
        fields = dict(zip(STATE_FIELDS, packed[1:-1], strict=True))
        raw = np.frombuffer(fields["raw"], codec.FLOAT)
        clean = codec.unpack_like(fields["clean"], raw)
        volumes, maxlen = fields["volumes"]
        fields.update(
            first_period=codec.unpack_stamp(fields["first_period"]),
            next_period=codec.unpack_stamp(fields["next_period"]),
            raw=raw.tolist(),
            clean=clean.tolist(),
            outside=codec.unpack_flags(fields["outside"]),
            signed=codec.unpack_floats(fields["signed"]),
            on_event=codec.unpack_flags(fields["on_event"]),
            errors=codec.unpack_floats(fields["errors"]),
            model=codec.unpack_model(fields["model"], clean),
            behaviour=fields["behaviour"] or BehaviourShift(),
            volumes=deque(codec.unpack_floats(volumes), maxlen=maxlen),
            recent=codec.unpack_judgements(fields["recent"], raw),
        )
        fields.update(packed[-1])
        self.__dict__.update(fields)


STATE_FIELDS = tuple(f.name for f in fields(State))


class StateFormatError(ValueError):
    """A stored state that `unpack_state` cannot read (not a packed state, cut short, damaged, or
    packed by another STATE_VERSION): the caller walks the series forward again."""


def pack_state(state: State) -> bytes:
    """`state` as compact bytes for the store (`unpack_state` reads them back): its packed
    fields (`State.__getstate__`) pickled (protocol 5), after a header of PACK_MAGIC,
    STATE_VERSION, flags and the crc32 of the rest. The rest is zlib-compressed (level 1) from
    COMPRESS_FROM bytes when that saves a tenth: a Prophet model's JSON. A daily state is mostly
    floats, which zlib does not shrink (noise in their low bits) at 70 us for 8 KB, and is
    left as it is: a daily series with two years of history packs into about 9 KB.
    """
    body = pickle.dumps(state.__getstate__(), protocol=5)
    flags = 0
    if len(body) >= COMPRESS_FROM:
        squeezed = zlib.compress(body, 1)
        if len(squeezed) < 0.9 * len(body):
            body, flags = squeezed, PACK_ZLIB
    return PACK_HEADER.pack(PACK_MAGIC, STATE_VERSION, flags, zlib.crc32(body)) + body


def unpack_state(blob: bytes) -> State:
    """The State `pack_state` packed, usable exactly as the original (the same lists, deques and
    judgements: stepping it gives the same verdicts).

    Raises StateFormatError for bytes it cannot read: not a packed state, truncated, damaged
    (the crc32 differs) or packed by another STATE_VERSION.
    """
    if bytes(blob[:len(PACK_MAGIC)]) != PACK_MAGIC:
        raise StateFormatError(f"not a packed detector state: it starts {bytes(blob[:4])!r}, not {PACK_MAGIC!r}")
    if len(blob) < PACK_HEADER.size:
        raise StateFormatError(f"a packed state has at least {PACK_HEADER.size} bytes, got {len(blob)}")
    _, version, flags, crc = PACK_HEADER.unpack_from(blob)
    if version != STATE_VERSION:
        raise StateFormatError(f"a state packed as version {version}; this version reads {STATE_VERSION}")
    body = memoryview(blob)[PACK_HEADER.size:]
    if zlib.crc32(body) != crc:
        raise StateFormatError("the packed state is truncated or damaged (its crc32 differs)")
    try:
        packed = pickle.loads(zlib.decompress(body) if flags & PACK_ZLIB else body)
        state = State.__new__(State)
        state._unpack(packed)
    except (pickle.UnpicklingError, zlib.error, EOFError, AttributeError, ImportError, IndexError, KeyError,
            TypeError, ValueError) as exc:
        raise StateFormatError(f"the packed state cannot be read: {type(exc).__name__}: {exc}") from exc
    return state


class Detector:
    """The one engine. Settings in, verdicts out; holds no series state itself (that is `State`).

    rules: the KPI's rules [Rules()]. freq: the series' pandas alias. model: a registered model
    name [ets]; model_params its parameters. calendar: event days for daily data [None = none].
    timezone: whose dates daily stamps other than midnight UTC fall on ["UTC"].
    refit_every, train_window, accept_after: None = from the frequency (`make_plan`).
    share: the series is a share of its denominator (a conversion rate: conversions are some of
        the sessions), so a period with a small denominator widens the band by its binomial
        noise [False]. Decided by the KPI's definition, never by the values seen so far.
    """

    def __init__(self, rules: Rules = Rules(), freq: str = "D", model: str = "ets",
                 model_params: dict[str, Any] | None = None, calendar: Calendar | None = None,
                 timezone: str = "UTC", refit_every: int | None = None, train_window: int | None = None,
                 accept_after: int | None = None, share: bool = False) -> None:
        self.rules = rules
        self.freq = freq
        self.model = model
        self.model_params = dict(model_params or {})
        self.calendar = calendar if freq == "D" else None  # event days are days
        self.timezone = timezone
        self.share = share
        self.plan = make_plan(freq, rules, refit_every, train_window, accept_after, model)
        self.z = z_value(self.plan.level)
        settings = (rules, freq, model, sorted(self.model_params.items(), key=str), self.calendar, timezone, self.plan,
                    share)
        self.fingerprint = hashlib.sha256(repr(settings).encode()).hexdigest()[:16]
        self._event_keys: dict[tuple[int, Any], tuple[tuple[str, ...], int] | None] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Shipped to workers (Dask) without its cache of event days.
        return {**self.__dict__, "_event_keys": {}}

    @classmethod
    def for_kpi(cls, kpi: KPIConfig, freq: str, calendar: Calendar | None, timezone: str,
                repeat_hours: float = 24.0) -> Detector:
        """The detector of a configured KPI: its rules, model and parameters, the config's calendar.
        A ratio KPI in percent (`unit: "%"`: a conversion rate, a bounce rate) is a share of its
        denominator; a ratio in money or times (CPC, ROAS) is not."""
        return cls(Rules.from_kpi(kpi, repeat_hours), freq, kpi.model, kpi.model_params, calendar, timezone,
                   share=kpi.ratio is not None and kpi.unit == "%")

    # -- the contract ----------------------------------------------------------------------

    def new_state(self, series: KPISeries) -> State:
        """An empty state for `series`, starting at its first period. Daily and coarser data
        get the refit phase of the series' identity (`refit_phase`); sub-daily data keep
        refitting a week after the weekly trial, as before (None): which hour of the week a
        refit falls on moves the weekly season's fit, and spreading it is not tested yet."""
        first = series.values.index[0]
        phase = refit_phase(series, self.plan.refit_every) if not self.plan.day else None
        return State(self.fingerprint, self.plan, self.share and series.denominator is not None, first, first,
                     refit_phase=phase)

    def warm_up(self, history: KPISeries) -> State:
        """The state after walking forward over all of `history`."""
        state, _ = self.advance(None, history, history.values.index[-1])
        return state

    def step(self, state: State, period: pd.Timestamp, value: float, volume: float = math.nan,
             feedback: SeriesFeedback | None = None) -> tuple[State, Judgement]:
        """Judge `period` (the state's next period) from what came before, then take it in.

        volume: the period's denominator for a ratio KPI (NaN for counts).
        feedback: what was said about this series' alerts (`forecaster.detect.feedback`): false
            alarms given before the period ends widen its band; a period marked expected is not
            judged and reaches the model as it is. None = none.
        """
        if period != state.next_period:
            raise ValueError(f"step: expected the period {state.next_period}, got {period}")
        self._refit_if_due(state)
        if state.model is None:
            judgement = self._history_only(state, period, value, reasons.TOO_FEW_VALUES)
        else:
            judgement = self._judge(state, period, value, volume, feedback)
        state.recent.append(judgement)
        state.position += 1
        state.next_period = period + _offset(self.plan.freq)
        _trim(state)
        return state, judgement

    def advance(self, state: State | None, series: KPISeries, until: pd.Timestamp,
                feedback: SeriesFeedback | None = None) -> tuple[State, list[Judgement]]:
        """Step every period after the state's last one up to `until` (a new state from the
        series' first period when `state` is None or was made with other settings, or judged a
        recent period otherwise than `feedback` now marks it: `feedback_changed`); returns
        the state and the new judgements. A period missing from the series is a gap."""
        if (state is None or state.fingerprint != self.fingerprint or state.version != STATE_VERSION
                or feedback_changed(state, feedback)):
            state = self.new_state(series)
        if state.next_period > until:
            return state, []
        periods, values = _span(series.values, state.next_period, until, _offset(self.plan.freq))
        volumes = ([math.nan] * len(values) if series.denominator is None
                   else _span(series.denominator, state.next_period, until, _offset(self.plan.freq))[1])
        judgements = []
        for period, value, volume in zip(periods, values, volumes, strict=True):
            state, judgement = self.step(state, period, value, volume, feedback)
            judgements.append(judgement)
        return state, judgements

    # -- fitting -----------------------------------------------------------------------------

    def _refit_if_due(self, state: State) -> None:
        plan = self.plan
        if state.model is None and state.observed < plan.min_fit:
            return
        if state.model is not None and state.position < state.next_refit:
            return
        season_ready = plan.season > 1 and state.position >= seasonal_history(plan.season)
        if state.seasonal is False and season_ready:
            # The warm-up model could not see the season, so it masked seasonal swings as
            # anomalies: the first seasonal fit reads the history as it was.
            state.clean[:] = [c if e else r for r, c, e in zip(state.raw, state.clean, state.on_event, strict=True)]
        model, label = self._fit(state)
        seasonal = bool(getattr(model, "seasonal_", True))
        if state.seasonal is not None and seasonal != state.seasonal:
            # The non-seasonal warm-up model's errors overstate a seasonal model's: they size
            # the band only until the new model has MIN_CALIBRATION errors of its own.
            state.stale = len(state.errors)
        state.model, state.model_label, state.seasonal = model, label, seasonal
        state.next_refit = self._next_refit(state.position, state.refit_phase)

    def _next_refit(self, start: int, phase: int | None = None) -> int:
        """The position of the refit after the one at `start`. While the history is short,
        whenever it has doubled (parameters from 60 values are rough), and at the period where
        two seasonal cycles exist, so the seasonal model takes over as soon as it can. Once it
        is long, every `refit_every` periods: at the positions congruent to `phase` (the state's
        `refit_phase`; None: `refit_every` after `start`), so that series that start on the same
        day (a daemon's 10,000) refit on different cycles, about one in `refit_every` per cycle,
        not all on the same one (the first of them comes up to `refit_every` early)."""
        plan = self.plan
        ready = seasonal_history(plan.season) if plan.season > 1 else math.inf
        if phase is not None and start >= plan.train_window and start >= ready:
            return start + plan.refit_every - (start - phase) % plan.refit_every
        end = start + plan.refit_every
        if start < plan.train_window:
            end = min(end, start + max(start, MIN_CALIBRATION))
        if start < ready:
            end = min(end, int(ready))
        return max(end, start + 1)

    def _fit(self, state: State) -> tuple[Any, str]:
        """The model for the periods from now on, fitted on the last `train_window` clean values.
        Sub-daily data with three weeks of history also try a weekly season (hourly traffic
        differs between weekdays and weekends, a machine metric may not): both forms are fitted
        up to a week ago and stepped over the last week; the one with the smaller one-step
        errors there is refitted up to now."""
        plan = self.plan
        season = plan.season
        if plan.week and self.model in SEASONED_MODELS and len(state.clean) >= seasonal_history(plan.week) + plan.week:
            window = max(plan.train_window, seasonal_history(plan.week))
            history = self._history(state, window, skip=plan.week)
            recent = state.clean[-plan.week:]
            daily, _ = self._fit_on(history, plan.season)
            weekly, _ = self._fit_on(history, plan.week)
            if getattr(weekly, "seasonal_", False) and _run_over(weekly, recent) < _run_over(daily, recent):
                return self._fit_on(self._history(state, window), plan.week)
        return self._fit_on(self._history(state, plan.fit_window), season)

    def _history(self, state: State, window: int, skip: int = 0) -> pd.Series:
        """The last `window` clean values before the last `skip`, on their periods."""
        end = len(state.clean) - skip
        values = state.clean[max(0, end - window):end]
        last = state.next_period - (skip + 1) * _offset(self.plan.freq)
        index = pd.date_range(end=last, periods=len(values), freq=self.plan.freq)
        return pd.Series(values, index=index, dtype="float64")

    def _fit_on(self, history: pd.Series, season: int) -> tuple[Any, str]:
        """The configured model fitted on `history`; seasonal naive when it fails (the label says)."""
        try:
            return self._new_model(season).fit(history), self.model
        except FIT_ERRORS as exc:
            note = str(exc).strip().splitlines()[0][:80] if str(exc).strip() else type(exc).__name__
            return make_model(FALLBACK_MODEL, season=max(season, 2)).fit(history), f"{FALLBACK_MODEL} ({self.model} failed: {note})"

    def _new_model(self, season: int) -> Any:
        params = dict(self.model_params)
        if self.model == "ets":
            params = {**ONE_STEP_ETS, **params}
        if self.model in SEASONED_MODELS:
            params.setdefault("season", season if season > 1 else None)
        if self.model in ("prophet", "auto") and self.calendar is not None:
            params.setdefault("calendar", self.calendar)
        if self.model == "auto":
            params.setdefault("selection", "one_step")
            params.setdefault("candidates", ["ets", "seasonal_naive"])
            params.setdefault("candidate_params", {"ets": {**ONE_STEP_ETS, "season": season if season > 1 else None},
                                                   "seasonal_naive": {"season": max(season, 2)}})
        return make_model(self.model, **params)

    # -- judging -----------------------------------------------------------------------------

    def _history_only(self, state: State, period: pd.Timestamp, value: float, reason: str) -> Judgement:
        """A period kept as history: no band yet (or an event seen for the first time)."""
        if not math.isnan(value):
            state.observed += 1
        on_event = self._learn_event(state, period, value)
        # An event day trains nothing (a gap, interpolated by the fit): its effect is the event's.
        _remember(state, value, math.nan if on_event else value, False, 0.0, on_event)
        return Judgement(period, value, math.nan, math.nan, math.nan, math.nan, False, reason)

    def _judge(self, state: State, period: pd.Timestamp, value: float, volume: float,
               feedback: SeriesFeedback | None = None) -> Judgement:
        plan, rules = self.plan, self.rules
        forecast = state.model.next_value()
        event, effect = self._event_of(state, period)
        tail = ErrorTail.from_errors(np.abs(np.asarray(state.errors[-plan.train_window:])),
                                     MIN_RELATIVE_SCALE * max(abs(forecast), 1e-9))
        if math.isnan(value):  # a gap: the model carries on from its forecast; no judgement
            _remember(state, value, forecast, False, 0.0, event is not None)
            state.model.push(math.nan)
            return Judgement(period, value, forecast, math.nan, math.nan, math.nan, False, reasons.NO_DATA,
                             model=state.model_label)
        state.observed += 1
        if feedback is not None and feedback.expected and feedback.is_expected(period):
            return self._expected(state, period, value, volume, forecast, event, effect)
        if event is not None and effect is None:
            # The first time this event day is seen: its effect is learned, not judged.
            self._learn_event(state, period, value)
            _remember(state, value, forecast, False, 0.0, True)
            state.model.push(forecast)
            return Judgement(period, value, forecast, math.nan, math.nan, math.nan, False,
                             reasons.first_event(event[0]),
                             model=state.model_label)
        expected = _apply(effect, forecast) if effect is not None else forecast
        error = value - expected
        if len(state.errors) < MIN_CALIBRATION:  # still learning the size of normal errors
            if event is None:
                state.errors.append(value - forecast)
            self._learn_event(state, period, value)
            _remember(state, value, forecast if event is not None else value, False, 0.0, event is not None)
            state.model.push(forecast if event is not None else value)
            return Judgement(period, value, math.nan, math.nan, math.nan, math.nan, False,
                             reasons.CALIBRATING, model=state.model_label)
        sigma = tail.sigma
        if state.proportion and volume > 0:
            typical = float(np.median(state.volumes)) if state.volumes else math.nan
            extra, least = sampling_sigma(expected, volume, typical, self.z)
            sigma = max(math.hypot(sigma, extra), least)
        if effect is not None:
            # The effect was measured on one earlier occurrence, as noisy as today's value: two
            # errors of the day's size (scaled by the effect: a day twice as big varies twice as
            # much), plus the margin for how the event itself changes from year to year.
            sigma *= math.sqrt(2.0) * (max(abs(effect[1]), 1.0) if effect[0] == "ratio" else 1.0)
        half = self.z * max(sigma, 1e-12)
        if event is not None:
            half += rules.event_margin * abs(expected)
        if feedback is not None and feedback.false_alarms:
            # False alarms given before this period ends: a less sensitive band (at most x1.95).
            half *= feedback.band_scale(period + _offset(plan.freq))
        # A hair of tolerance: a true zero must not read as below a band clipped at zero.
        outside = abs(error) > half * (1 + 1e-9)
        score = math.erf(abs(error) / (half / self.z) / math.sqrt(2.0))
        habit = outside and self._seen_yesterday(state, value, forecast, error)
        # The change-of-behaviour test is for sub-daily data (denser spikes on a machine metric);
        # on a daily KPI "noisier lately" inside the band is not news, and event days are their own.
        ordinary = MEAN_ABS_NORMAL if habit or event is not None else abs(error) / tail.sigma
        shifted = plan.habits and state.behaviour.update(ordinary)
        state.run = state.run + 1 if outside else 0
        flagged = (outside and not habit) or shifted
        reason = guardrail(value, expected, volume, rules) if flagged else ""
        if habit and not shifted:
            reason = reasons.DAILY_HABIT
        is_anomaly = flagged and not reason
        direction = Direction.UP if error > 0 else Direction.DOWN
        alert = self._alert(state, is_anomaly and rules.alerts_when(direction), error > 0)
        notice = self._notice(state, alert, is_anomaly)
        # The model sees an anomalous value pulled back to the band's edge (Huber cleaning, as in
        # robust Holt-Winters, Gelper, Fried & Croux 2010): a lone spike moves the level by at most
        # alpha * half a band; a lasting shift drags the forecast after it within periods.
        kept = max(-half, min(half, error)) if outside and state.run < plan.accept_after else error
        model_value = forecast + kept  # an event day's effect is taken out, the rest passed on
        state.model.push(model_value)
        self._learn_event(state, period, value)
        _remember(state, value, model_value, outside, error, event is not None)
        if state.proportion and volume > 0:
            state.volumes.append(volume)
        if event is None:
            # Every ordinary judged period sizes the band, large errors capped at MEMORY_CAP times
            # the 99% quantile the band read (or its edge, if wider): rare anomalies barely move
            # that quantile, errors that come back often are this series' normal and widen it
            # step by step; a run of huge ones (an incident, a shift) widens it by at most that
            # factor, since during a run the cap is the one from before it (capped at the current
            # quantile, three capped errors would raise it and the next cap with it, compounding).
            # (Capped at the edge itself, a band that became too narrow could never widen.)
            if state.run <= 1 or not state.run_sigma:
                state.run_sigma = tail.sigma
            cap = max(self.z * state.run_sigma, MEMORY_CAP * state.run_sigma * NORMAL_Q99)
            self._remember_error(state, max(-cap, min(cap, value - forecast)))
        return Judgement(period, value, expected, expected - half, expected + half, score, is_anomaly, reason,
                         alert=alert, direction=direction.value, run_length=state.alert_run if alert else 0,
                         model=state.model_label, notice=notice, episode=state.episode)

    def _expected(self, state: State, period: pd.Timestamp, value: float, volume: float, forecast: float,
                  event: tuple[tuple[str, ...], int] | None, effect: tuple[str, float] | None) -> Judgement:
        """A period marked expected (a known campaign or event): normal, so not judged and not
        alerted; it ends an alert run (a calm period for the episode), and, as on a calendar
        event day, the model carries on from its forecast over it and its error does not size
        the band: an explained movement is neither noise nor the series' new level.

        (Training on its raw value instead, the issue's first idea, was measured on the demo's
        press mention marked expected: 10 false alerts in the 28 days after it instead of 0, as
        the x3 days lifted the level and the weekly pattern. A lasting change needs no mark: a
        shift is taken as it is after `accept_after` periods.)"""
        expected = _apply(effect, forecast) if effect is not None else forecast
        model_value = forecast
        state.run = 0
        self._alert(state, False, False)
        self._notice(state, False, False)
        state.model.push(model_value)
        self._learn_event(state, period, value)
        _remember(state, value, model_value, False, 0.0, event is not None)
        if state.proportion and volume > 0:
            state.volumes.append(volume)
        return Judgement(period, value, expected, math.nan, math.nan, math.nan, False, reasons.EXPECTED,
                         model=state.model_label, episode=state.episode)

    def _alert(self, state: State, alertable: bool, up: bool) -> bool:
        """"For N periods": alertable periods in a row the same way (a gap, an unjudged or a quiet
        period ends the run)."""
        if not alertable:
            state.alert_run = 0
        elif state.alert_run and up == state.alert_up and state.last_alertable == state.position - 1:
            state.alert_run += 1
        else:
            state.alert_run, state.alert_up = 1, up
        if alertable:
            state.last_alertable = state.position
        return alertable and state.alert_run >= self.rules.for_periods

    def _notice(self, state: State, alert: bool, is_anomaly: bool) -> str:
        """"new" when an alert starts an episode, "repeat" every `repeat_after` periods while it
        lasts, "" otherwise. An episode ends after `calm_after` judged periods in a row without an
        anomaly (half the repeat interval, at least one period: a day for daily data), so a
        flapping series is one episode, not an alert every other period. The incident planner
        resolves an incident when its episode has ended (`Judgement.episode`)."""
        state.since_notice += 1
        state.calm = 0 if is_anomaly else state.calm + 1
        if state.calm >= self.plan.calm_after:
            state.episode = False
        if not alert:
            return ""
        if not state.episode:
            state.episode, state.since_notice = True, 0
            return "new"
        if state.since_notice >= self.plan.repeat_after:
            state.since_notice = 0
            return "repeat"
        return ""

    def _seen_yesterday(self, state: State, value: float, forecast: float, error: float) -> bool:
        """Is this deviation a daily habit? True when a period within an hour of this time
        yesterday was outside the band by at least RECURRENCE_SHARE of this error, either the same
        way, or the other way while the forecast itself is the odd one out (it sits that far from
        yesterday's median value there, on the side of yesterday's deviation). A drop the day
        after a spike is still news. Sub-daily data only."""
        day, jitter = self.plan.day, self.plan.jitter
        n = len(state.raw)
        if day <= 1 or n < day + jitter:
            return False
        lo, hi = n - day - jitter, min(n - day + jitter + 1, n)
        outside = np.asarray(state.outside[lo:hi])
        signed = np.asarray(state.signed[lo:hi])
        large = outside & (np.abs(signed) >= RECURRENCE_SHARE * abs(error))
        if np.any(large & (np.sign(signed) == np.sign(error))):
            return True
        if not np.any(large):
            return False
        usual = np.nanmedian(np.asarray(state.raw[lo:hi]))
        return bool(abs(forecast - usual) >= RECURRENCE_SHARE * abs(error) and np.sign(forecast - usual) == -np.sign(error))

    def _remember_error(self, state: State, error: float) -> None:
        """Keep a judged period's one-step error for the band: the last `train_window` of the
        current model's form (older forms' errors only until it has MIN_CALIBRATION of its own)."""
        state.errors.append(error)
        drop = len(state.errors) - self.plan.train_window
        if state.stale and len(state.errors) - state.stale >= MIN_CALIBRATION:
            drop = max(drop, state.stale)
        if drop > 0:
            del state.errors[:drop]
            state.stale = max(state.stale - drop, 0)

    # -- calendar events -------------------------------------------------------------------------

    def _event_of(self, state: State, period: pd.Timestamp) -> tuple[tuple[tuple[str, ...], int] | None, tuple[str, float] | None]:
        """The event key of `period` (names, day within the event) and its learned effect."""
        key = self._event_key(period)
        return key, (state.effects.get(key) if key is not None else None)

    def _event_key(self, period: pd.Timestamp) -> tuple[tuple[str, ...], int] | None:
        """The event key of `period`, looked up once per detector: a period is judged for
        every series of a KPI, and asked twice per step."""
        if self.calendar is None:
            return None
        cache = self._event_keys
        found = cache.get((period.value, period.tz), cache)
        if found is not cache:
            return found  # type: ignore[return-value]
        if len(cache) >= EVENT_KEY_CACHE:
            cache.clear()
        key = cache[period.value, period.tz] = self._find_event_key(self.calendar, period)
        return key

    def _find_event_key(self, calendar: Calendar, period: pd.Timestamp) -> tuple[tuple[str, ...], int] | None:
        day = _local_date(period, self.timezone)
        names = tuple(calendar.events_on(day))
        if not names:
            return None
        offset = 0  # which day of the event this is: Black Friday and Cyber Monday differ
        while offset < 31 and tuple(calendar.events_on(day - timedelta(days=offset + 1))) == names:
            offset += 1
        return names, offset

    def _learn_event(self, state: State, period: pd.Timestamp, value: float) -> bool:
        """On an event day with a value: remember its effect, the value against the median of the
        same weekday over the `EVENT_BASELINE_CYCLES` cycles before (event days left out); a
        ratio when both are positive, a difference otherwise (a zero day is no factor for next
        year). True on an event day."""
        key = self._event_key(period)
        if key is None:
            return False
        season, n = self.plan.season, len(state.raw)
        earlier = [state.raw[n - k * season] for k in range(1, EVENT_BASELINE_CYCLES + 1)
                   if n - k * season >= 0 and not state.on_event[n - k * season]]
        earlier = [v for v in earlier if not math.isnan(v)]
        if math.isnan(value) or not earlier:
            return True
        baseline = float(np.median(earlier))
        state.effects[key] = ("ratio", value / baseline) if baseline > 0 and value > 0 else ("shift", value - baseline)
        return True


def walk_forward(detector: Detector, series: KPISeries, start: pd.Timestamp | None = None,
                 end: pd.Timestamp | None = None, feedback: SeriesFeedback | None = None) -> list[Judgement]:
    """Judge `series` causally from its first period, each period only from the ones before;
    returns the judgements of the periods from `start` to `end` (default: all). feedback: as
    `Detector.step` takes it [None]."""
    if not len(series.values):
        return []
    _, judgements = detector.advance(None, series, end if end is not None else series.values.index[-1], feedback)
    return [j for j in judgements if start is None or j.period >= start]


def feedback_changed(state: State, feedback: SeriesFeedback | None) -> bool:
    """Whether `state` judged one of its recent periods (`RECENT`) otherwise than `feedback`
    marks it now: a period marked expected after it was judged (or a mark taken back). Such a
    state is rebuilt by walking forward, so a stored state and a fresh walk keep giving the same
    verdicts. Gaps and periods before the first fit are the same either way and not compared.
    (False alarms never apply to periods that ended before they were given: no rebuild.)"""
    marked = feedback is not None and bool(feedback.expected)
    for judgement in state.recent:
        if not judgement.model or math.isnan(judgement.actual):
            continue
        was = judgement.reason == reasons.EXPECTED
        if was != (marked and feedback.is_expected(judgement.period)):  # type: ignore[union-attr]
            return True
    return False


def refit_phase(series: KPISeries, refit_every: int) -> int:
    """The series' refit phase in [0, refit_every): from a stable hash of its identity (name and
    segment), so the daemon, replay and walk_forward schedule the same refits for it."""
    identity = repr((series.name, sorted(series.segment.items())))
    digest = hashlib.blake2b(identity.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % max(refit_every, 1)


def _span(values: pd.Series, start: pd.Timestamp, until: pd.Timestamp,
          offset: pd.DateOffset) -> tuple[Sequence[pd.Timestamp], list[float]]:
    """The periods from `start` to `until` (every `offset`) and the float values of `values` on
    them, NaN where it has none. When its index is a regular DatetimeIndex of `offset` (in
    `start`'s unit and zone) holding them, it is sliced by position: the daemon steps one period
    of 10,000 series per cycle, and making the periods and reindexing costs ~0.15 ms a call."""
    index = values.index
    scale = _UNIT_NS.get(getattr(index, "unit", ""), 0)
    if (type(index) is pd.DatetimeIndex and scale and index.freq is not None and index.unit == start.unit
            and index.tz is start.tz and index.freq == offset and len(index)):
        stamps = index.asi8
        first, rest = divmod(start.value, scale)
        last = until.value // scale
        i = int(np.searchsorted(stamps, first))
        j = int(np.searchsorted(stamps, last, side="right"))
        # On the grid and inside the index (a freq makes pandas check that the index is regular).
        if not rest and j > i and stamps[i] == first and (j < len(stamps) or stamps[-1] >= last):
            numbers = values.to_numpy(dtype="float64")[i:j].tolist()
            return ([start] if j == i + 1 else index[i:j]), numbers
    periods = pd.date_range(start, until, freq=offset)
    return periods, values.reindex(periods).to_numpy(dtype="float64").tolist()


_UNIT_NS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}


def _apply(effect: tuple[str, float], forecast: float) -> float:
    kind, size = effect
    return forecast * size if kind == "ratio" else forecast + size


def _remember(state: State, raw: float, clean: float, outside: bool, signed: float, on_event: bool) -> None:
    state.raw.append(raw)
    state.clean.append(clean)
    state.on_event.append(on_event)
    if state.plan.habits:
        state.outside.append(outside)
        state.signed.append(signed)


def _trim(state: State) -> None:
    """Keep the last `plan.memory` periods, give or take 3% (trimmed in chunks: deleting from a
    list's front is O(n); 3%, not more: the daemon stores the lists every cycle).
    Nothing reads further back than `plan.memory`, so when it is trimmed changes no verdict."""
    memory = state.plan.memory
    if len(state.raw) > memory + memory // 32:
        for buffer in (state.raw, state.clean, state.on_event, state.outside, state.signed):
            del buffer[:max(len(buffer) - memory, 0)]


def _run_over(model: Any, values: list[float]) -> float:
    """Step `model` over `values`; the mean squared one-step error (gaps skipped)."""
    total, count = 0.0, 0
    for value in values:
        if not math.isnan(value):
            total += (value - model.next_value()) ** 2
            count += 1
        model.push(value)
    return total / count if count else math.inf


def _local_date(period: pd.Timestamp, timezone: str) -> date:
    """A day's date: a midnight-UTC stamp is the date itself (the service labels a local day by
    midnight UTC of its date); any other stamp its date in `timezone`."""
    if period == period.normalize():
        return period.date()
    return period.tz_convert(timezone).date()


@functools.lru_cache(maxsize=32)
def _offset(freq: str) -> pd.DateOffset:
    return pd.tseries.frequencies.to_offset(freq)

