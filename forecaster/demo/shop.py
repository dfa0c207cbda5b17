"""Deterministic demo data: a realistic Dutch e-commerce shop with four known incidents.

Everything is generated in memory with a seeded `numpy.random.Generator` and vectorised numpy
(no files, no network), so the demo, the docs and the tests all see exactly the same numbers.

The shop has ~20,000 sessions a day in total, split over seven channels and three devices, with
smooth growth (~12 %/year), weekly and yearly seasonality and Dutch calendar events (public
holidays, Black Friday, Cyber Monday, Sinterklaas, Christmas). The events are *normal*: they
recur every year, so a seasonal model can learn them and must not alert on them (`QUIET_DAYS`).
On top of that, four incidents are injected; `INCIDENTS` is the ground-truth table that the
tests and the docs read.

One channel is tiny on purpose: `affiliate` brings a few sessions a day (3-15) that rarely convert,
so a ratio KPI per channel has a segment whose rate is pure count noise (it must never alert).
It is drawn from its own random generator, so the six large channels are exactly what they were
before it was added.

Frame convention (both frequencies): long format, one row per (timestamp, channel, device),
columns `timestamp` (tz-aware UTC), `channel`, `device`, then `METRICS` as float64.

- Daily rows are labelled by their *local* calendar date, written as midnight UTC of that date
  (the local day 2025-12-10 is `2025-12-10 00:00+00:00`), so a label never slides to the
  previous day when it is printed or grouped in UTC.
- Hourly rows are labelled by the real UTC start of each local hour; a local day has 23, 24 or
  25 hours around the DST switches.

Metric units: `sessions`, `bounces`, `conversions`, `clicks`, `impressions`, `leads` are counts;
`revenue` and `ad_cost` are euros; `page_load_seconds` is the *sum* of load times over the
period's sessions in seconds (so the page-load time KPI is `page_load_seconds / sessions`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import holidays
import numpy as np
import pandas as pd

from forecaster.types import BadInputError

__all__ = [
    "CHANNELS",
    "DEMO_END",
    "DEMO_NOW",
    "DEMO_START",
    "DEMO_TIMEZONE",
    "DEVICES",
    "DIMENSIONS",
    "HOURLY_DAYS",
    "INCIDENTS",
    "METRICS",
    "QUIET_DAYS",
    "SMALL_CHANNEL",
    "ExpectedAlert",
    "Incident",
    "demo_frame",
]

# --------------------------------------------------------------------------------------------
# Public constants
# --------------------------------------------------------------------------------------------

DEMO_TIMEZONE = "Europe/Amsterdam"
DEMO_START: date = date(2023, 11, 1)
#: Last closed local day, inclusive (a Wednesday).
DEMO_END: date = date(2025, 12, 10)
#: The demo's "now": Thursday morning 08:00 local time, after DEMO_END closed (07:00 UTC).
DEMO_NOW: pd.Timestamp = pd.Timestamp("2025-12-11 08:00", tz=DEMO_TIMEZONE).tz_convert("UTC")
#: The last HOURLY_DAYS local days (up to and including DEMO_END) also exist hourly.
HOURLY_DAYS = 60

CHANNELS: tuple[str, ...] = ("organic", "paid_search", "paid_social", "email", "direct", "referral", "affiliate")
#: The tiny channel (a few sessions a day): small-segment guardrails are tested on it.
SMALL_CHANNEL = "affiliate"
DEVICES: tuple[str, ...] = ("desktop", "mobile", "tablet")
DIMENSIONS: tuple[str, ...] = ("channel", "device")
METRICS: tuple[str, ...] = (
    "sessions",
    "bounces",
    "page_load_seconds",
    "conversions",
    "revenue",
    "ad_cost",
    "clicks",
    "impressions",
    "leads",
)

_FREQS: tuple[str, ...] = ("D", "h")
# Timestamp resolution of the frames: microseconds, pandas 3's default for parsed timestamps
# and date_range, so joins with other sources need no unit casts.
_TS_UNIT = "us"


# --------------------------------------------------------------------------------------------
# Ground truth: incidents and quiet days
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpectedAlert:
    """One alert a correct detector should raise for an incident.

    kpi: KPI name as the KPI catalogue spells it, e.g. "conversion_rate".
    segment: dimension -> value, e.g. {"device": "mobile"}; empty for the total.
    direction: "up" | "down", the way the KPI's value moves (not whether that is good).
    """

    kpi: str
    segment: Mapping[str, str]
    direction: str


@dataclass(frozen=True)
class Incident:
    """One injected incident: where and when, what was done to the data, what should alert.

    start, end: inclusive local calendar days.
    segment: the dimension values where it is injected (all other dimensions: every value).
    description: one sentence with the magnitudes.
    expected: the alerts a correct detector raises while it runs.
    good_news: True when the movement is welcome (an alert of kind good news, not a problem).
    """

    number: int
    name: str
    start: date
    end: date
    segment: Mapping[str, str]
    description: str
    expected: tuple[ExpectedAlert, ...]
    good_news: bool = False


INCIDENTS: tuple[Incident, ...] = (
    Incident(
        number=1,
        name="mobile landing-page slowdown",
        start=date(2025, 12, 8),
        end=date(2025, 12, 10),
        segment={"device": "mobile"},
        description=(
            "A heavy landing-page release makes mobile pages load 2.5x slower on every channel, "
            "which raises the mobile bounce rate by 15 percentage points and cuts the mobile "
            "conversion probability to 0.6x; still running on the last day."
        ),
        expected=(
            ExpectedAlert("conversion_rate", {"device": "mobile"}, "down"),
            ExpectedAlert("page_load_time", {"device": "mobile"}, "up"),
            ExpectedAlert("bounce_rate", {"device": "mobile"}, "up"),
        ),
    ),
    Incident(
        number=2,
        name="email tracking outage",
        start=date(2025, 10, 21),
        end=date(2025, 10, 21),
        segment={"channel": "email"},
        description=(
            "A broken tracking tag in the newsletter template records only 2% of email sessions "
            "(and of what follows from them, conversions included) for one day."
        ),
        expected=(ExpectedAlert("sessions", {"channel": "email"}, "down"),),
    ),
    Incident(
        number=3,
        name="paid-search CPC spike",
        start=date(2025, 12, 7),
        end=date(2025, 12, 10),
        segment={"channel": "paid_search"},
        description=(
            "A competitor bids up our brand keywords, so the paid-search cost per click and "
            "hence ad_cost rise 1.6x while clicks and conversions stay unchanged; still running "
            "on the last day."
        ),
        expected=(
            ExpectedAlert("cpa", {"channel": "paid_search"}, "up"),
            ExpectedAlert("roas", {"channel": "paid_search"}, "down"),
        ),
    ),
    Incident(
        number=4,
        name="press mention",
        start=date(2025, 9, 16),
        end=date(2025, 9, 17),
        segment={"channel": "referral"},
        description=(
            "A national news site links to the shop, tripling referral sessions (3x) for two "
            "days, with conversions, revenue and the rest scaling along with the sessions."
        ),
        expected=(ExpectedAlert("sessions", {"channel": "referral"}, "up"),),
        good_news=True,
    ),
)


@dataclass(frozen=True)
class _Effect:
    """How an incident changes the generator's parameters (1.0 / 0.0 = unchanged).

    sessions: multiplier on expected sessions (everything drawn from sessions follows).
    cr: multiplier on the conversion probability.
    bounce_add: absolute addition to the bounce probability (0.15 = +15 percentage points).
    load: multiplier on the mean page-load time per session.
    cpc: multiplier on the cost per click.
    """

    sessions: float = 1.0
    cr: float = 1.0
    bounce_add: float = 0.0
    load: float = 1.0
    cpc: float = 1.0


# Kept next to INCIDENTS (keyed by number) so the table and the injection cannot drift apart;
# a test checks every incident has an effect.
_INCIDENT_EFFECTS: dict[int, _Effect] = {
    1: _Effect(load=2.5, bounce_add=0.15, cr=0.6),
    2: _Effect(sessions=0.02),
    3: _Effect(cpc=1.6),
    4: _Effect(sessions=3.0),
}


def _black_friday(year: int) -> date:
    """Black Friday of `year`: the day after the 4th Thursday of November (US Thanksgiving).

    Dutch shops follow the US date. This is usually the 4th Friday too, but not when November
    starts on a Friday (2024: 4th Friday Nov 22, Black Friday Nov 29).
    """
    nov1 = date(year, 11, 1)
    first_thursday = nov1 + timedelta(days=(3 - nov1.weekday()) % 7)
    return first_thursday + timedelta(weeks=3, days=1)


def _quiet_days() -> tuple[tuple[date, str], ...]:
    """Black Friday, Cyber Monday and the Christmas days inside the data, minus incident days."""
    incident_days = {
        inc.start + timedelta(days=k)
        for inc in INCIDENTS
        for k in range((inc.end - inc.start).days + 1)
    }
    out: list[tuple[date, str]] = []
    for year in range(DEMO_START.year, DEMO_END.year + 1):
        bf = _black_friday(year)
        candidates = [
            (bf, f"Black Friday {year}"),
            (bf + timedelta(days=3), f"Cyber Monday {year}"),
            (date(year, 12, 24), f"Christmas Eve {year}"),
            (date(year, 12, 25), f"Christmas Day {year}"),
            (date(year, 12, 26), f"Second Day of Christmas {year}"),
        ]
        out.extend(
            (d, label)
            for d, label in candidates
            if DEMO_START <= d <= DEMO_END and d not in incident_days
        )
    return tuple(sorted(out))


#: Calendar peaks and dips that are normal (they recur every year) and must NOT alert.
#: Caveat: the 2023 days have no previous year in the data to learn from.
QUIET_DAYS: tuple[tuple[date, str], ...] = _quiet_days()


# --------------------------------------------------------------------------------------------
# Generator parameters (all "per day" unless said otherwise)
# --------------------------------------------------------------------------------------------

# Total expected sessions/day at _GROWTH_REF before seasonality; the reference sits in the
# middle of the data so the whole-period mean is ~20,000 sessions/day.
_BASE_SESSIONS = 20_000.0
_GROWTH_REF = date(2024, 11, 20)
_GROWTH_PER_YEAR = 1.12

# The six large channels share 100 %; affiliate adds 0.04 % on top (~8 sessions a day).
_CHANNEL_SHARE = np.array([0.35, 0.22, 0.12, 0.08, 0.15, 0.08, 0.0004])
# Channels from this index on are drawn from their own generator (see `_daily_arrays`).
_N_LARGE = 6
# Device split per channel (rows follow CHANNELS). paid_social is mostly mobile; the others are
# set so the overall split is ~42 % desktop / 50 % mobile / 8 % tablet.
_DEVICE_SPLIT = np.array(
    [
        [0.447, 0.473, 0.08],
        [0.447, 0.473, 0.08],
        [0.22, 0.70, 0.08],
        [0.447, 0.473, 0.08],
        [0.447, 0.473, 0.08],
        [0.447, 0.473, 0.08],
        [0.447, 0.473, 0.08],
    ]
)

# Weekly shapes, Monday..Sunday; each row is normalised to mean 1 below so weekly seasonality
# does not shift the level. People browse on desktop at work and on mobile/tablet at weekends.
_DEVICE_WEEKLY = np.array(
    [
        [1.06, 1.07, 1.06, 1.05, 1.00, 0.80, 0.80],  # desktop
        [0.96, 0.95, 0.95, 0.96, 1.00, 1.10, 1.12],  # mobile
        [0.95, 0.94, 0.94, 0.95, 0.98, 1.10, 1.14],  # tablet
    ]
)
_CHANNEL_WEEKLY = np.array(
    [
        [1.03, 1.01, 1.00, 1.00, 0.97, 0.97, 1.02],  # organic
        [1.02, 1.01, 1.00, 1.00, 0.98, 0.98, 1.01],  # paid_search
        [0.95, 0.96, 0.97, 0.98, 1.02, 1.06, 1.06],  # paid_social
        [0.80, 1.50, 0.80, 1.50, 0.85, 0.75, 0.80],  # email: newsletters go out Tue and Thu
        [1.02, 1.01, 1.00, 1.00, 0.99, 0.98, 1.00],  # direct
        [1.03, 1.03, 1.02, 1.02, 1.00, 0.95, 0.95],  # referral
        [1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00],  # affiliate: flat (coupon and cashback sites)
    ]
)
_DEVICE_WEEKLY = _DEVICE_WEEKLY / _DEVICE_WEEKLY.mean(axis=1, keepdims=True)
_CHANNEL_WEEKLY = _CHANNEL_WEEKLY / _CHANNEL_WEEKLY.mean(axis=1, keepdims=True)

# Bounce probability by channel; mobile adds 8 percentage points (small screens, slow networks).
_BOUNCE_RATE = np.array([0.42, 0.38, 0.55, 0.35, 0.40, 0.48, 0.45])
_BOUNCE_DEVICE_ADD = np.array([0.0, 0.08, 0.0])

# Conversion probability per session: channel rate x device multiplier.
_CR_CHANNEL = np.array([0.022, 0.030, 0.012, 0.040, 0.035, 0.020, 0.015])
_CR_DEVICE = np.array([1.3, 0.75, 0.9])
_LEAD_RATE = 0.006  # newsletter sign-ups etc. per session

_AOV_EUR = 68.0  # mean order value, euros
_AOV_SHAPE = 4.0  # Gamma shape per order: order values have a CV of 1/sqrt(4) = 50 %

_LOAD_MEAN_S = np.array([1.6, 2.4, 2.0])  # mean page-load seconds per session, by device
_LOAD_SHAPE = 2.0  # Gamma shape per session: single load times are skewed (CV ~71 %)

# Paid channels only (other channels get 0 clicks, impressions and ad cost).
_PAID = np.array([False, True, True, False, False, False, False])
_SESSIONS_PER_CLICK = 0.95  # some clicks never become a tracked session
_CTR = np.array([1.0, 0.045, 0.012, 1.0, 1.0, 1.0, 1.0])  # only the paid entries are used
_CPC_EUR = np.array([0.0, 0.85, 0.45, 0.0, 0.0, 0.0, 0.0])

# Noise levels (sd of log-normal multipliers). A shared day shock plus a per-segment shock
# gives ~3 % per segment and keeps the *total* noisy too (independent shocks would average out).
_SD_DAY_COMMON = 0.02
_SD_DAY_SEGMENT = 0.025
_SD_CR = 0.03  # day-to-day wobble of the conversion probability (overdispersion)
_SD_LOAD = 0.03
_SD_CPC = 0.04

# Calendar events: date -> (sessions factor, conversion-probability factor). A named day's
# factor replaces the run-up season factor (Black Friday is 2x a normal day, not 2.2x).
_HOLIDAY_FACTOR = 0.85


def _day_events(year: int) -> dict[date, tuple[float, float]]:
    """The named shopping days of `year` with their (sessions, conversion) factors."""
    bf = _black_friday(year)
    days: dict[date, tuple[float, float]] = {
        bf: (2.0, 1.5),
        bf + timedelta(days=1): (1.4, 1.2),  # BF weekend: deals continue, a bit less urgency
        bf + timedelta(days=2): (1.4, 1.2),
        bf + timedelta(days=3): (1.6, 1.3),  # Cyber Monday
        date(year, 12, 24): (0.8, 1.0),
        date(year, 12, 25): (0.6, 1.0),
        date(year, 12, 26): (0.6, 1.0),
        date(year, 12, 31): (0.7, 1.0),
        date(year, 1, 1): (0.65, 1.0),
    }
    return days


def _season_factor(d: date) -> tuple[float, float]:
    """Run-up seasons: Sinterklaas (Nov 20 - Dec 4) and Christmas shopping (Dec 14 - 22)."""
    if (d.month == 11 and d.day >= 20) or (d.month == 12 and d.day <= 4):
        return 1.1, 1.0
    if d.month == 12 and 14 <= d.day <= 22:
        return 1.2, 1.15
    return 1.0, 1.0


def _event_factors(dates: Sequence[date]) -> tuple[np.ndarray, np.ndarray]:
    """Per-date (sessions factor, conversion factor) from named days, seasons and NL holidays."""
    years = range(dates[0].year, dates[-1].year + 1)
    named: dict[date, tuple[float, float]] = {}
    for y in years:
        named.update(_day_events(y))
    nl_holidays = holidays.NL(years=years)
    sess = np.ones(len(dates))
    conv = np.ones(len(dates))
    # A Python loop over ~800 dates costs well under a millisecond; the date logic is clearer
    # this way than vectorised.
    for i, d in enumerate(dates):
        if d in named:
            sess[i], conv[i] = named[d]
        else:
            sess[i], conv[i] = _season_factor(d)
            if d in nl_holidays:
                sess[i] *= _HOLIDAY_FACTOR
    return sess, conv


def _yearly_factor(dates: pd.DatetimeIndex) -> np.ndarray:
    """Yearly seasonality, ~+10 % in early January down to ~-12 % at the end of July.

    A cosine peaking around 11 January plus a summer-holiday dip centred on late July.
    """
    t = (dates.day_of_year.to_numpy() - 1) / np.where(dates.is_leap_year, 366.0, 365.0)
    return 1.0 + 0.10 * np.cos(2 * np.pi * (t - 0.03)) - 0.03 * np.exp(-(((t - 0.575) / 0.06) ** 2))


def _lognormal(rng: np.random.Generator, sd: float, size: tuple[int, ...]) -> np.ndarray:
    """Mean-one log-normal multipliers with log-sd `sd` (so noise does not shift the level)."""
    return np.exp(rng.normal(-0.5 * sd * sd, sd, size))


def _incident_masks(dates: Sequence[date]) -> list[tuple[_Effect, np.ndarray]]:
    """For each incident, its effect and a boolean mask of shape (days, channels, devices)."""
    day_arr = np.array(dates, dtype="datetime64[D]")
    out = []
    for inc in INCIDENTS:
        on_day = (day_arr >= np.datetime64(inc.start)) & (day_arr <= np.datetime64(inc.end))
        on_ch = np.array([inc.segment.get("channel", c) == c for c in CHANNELS])
        on_dev = np.array([inc.segment.get("device", v) == v for v in DEVICES])
        mask = on_day[:, None, None] & on_ch[None, :, None] & on_dev[None, None, :]
        out.append((_INCIDENT_EFFECTS[inc.number], mask))
    return out


# --------------------------------------------------------------------------------------------
# Daily generation
# --------------------------------------------------------------------------------------------


def _daily_arrays(seed: int) -> tuple[list[date], dict[str, np.ndarray]]:
    """All metrics as arrays of shape (days, channels, devices), for DEMO_START..DEMO_END.

    Counts are int64 and continuous metrics float64. Random draws are made for every cell in a
    fixed order, so the incidents change parameters but never shift the random streams. The
    large channels are drawn from `default_rng(seed)`, the small ones (from `_N_LARGE` on) from
    `default_rng([seed, 2])`: adding a small channel leaves the large ones' numbers unchanged.
    """
    rng = np.random.default_rng(seed)
    n_days = (DEMO_END - DEMO_START).days + 1
    dates = [DEMO_START + timedelta(days=k) for k in range(n_days)]
    idx = pd.DatetimeIndex(dates)
    shape = (n_days, len(CHANNELS), len(DEVICES))

    # ---- expected sessions: base x growth x weekly x yearly x events
    years_from_ref = (idx - pd.Timestamp(_GROWTH_REF)).days.to_numpy() / 365.25
    growth = _GROWTH_PER_YEAR**years_from_ref
    dow = idx.day_of_week.to_numpy()
    weekly = _CHANNEL_WEEKLY[:, dow].T[:, :, None] * _DEVICE_WEEKLY[:, dow].T[:, None, :]
    ev_sess, ev_cr = _event_factors(dates)
    base = _BASE_SESSIONS * _CHANNEL_SHARE[:, None] * _DEVICE_SPLIT
    level = growth * _yearly_factor(idx) * ev_sess
    expected = base[None, :, :] * weekly * level[:, None, None]

    # ---- incident parameters
    sess_mult = np.ones(shape)
    cr_mult = np.ones(shape)
    bounce_add = np.zeros(shape)
    load_mult = np.ones(shape)
    cpc_mult = np.ones(shape)
    for eff, mask in _incident_masks(dates):
        sess_mult[mask] *= eff.sessions
        cr_mult[mask] *= eff.cr
        bounce_add[mask] += eff.bounce_add
        load_mult[mask] *= eff.load
        cpc_mult[mask] *= eff.cpc

    # The day shock shared by every segment (the first draw of the main stream, as it always was).
    common = _lognormal(rng, _SD_DAY_COMMON, (n_days,))
    groups = ((slice(0, _N_LARGE), rng), (slice(_N_LARGE, len(CHANNELS)), np.random.default_rng([seed, 2])))
    drawn = [
        _draw_daily(
            group_rng, common, ev_cr, channels, expected[:, channels], sess_mult[:, channels],
            cr_mult[:, channels], bounce_add[:, channels], load_mult[:, channels], cpc_mult[:, channels],
        )
        for channels, group_rng in groups
    ]
    arrays = {m: np.concatenate([part[m] for part in drawn], axis=1) for m in METRICS}
    return dates, arrays


def _draw_daily(
    rng: np.random.Generator,
    common: np.ndarray,
    ev_cr: np.ndarray,
    channels: slice,
    expected: np.ndarray,
    sess_mult: np.ndarray,
    cr_mult: np.ndarray,
    bounce_add: np.ndarray,
    load_mult: np.ndarray,
    cpc_mult: np.ndarray,
) -> dict[str, np.ndarray]:
    """Draw every metric for one group of channels, shape (days, len(channels), devices).

    common: the day shock shared by all segments, (days,). ev_cr: the calendar's conversion
    factor per day. expected: expected sessions per cell before incidents; the other arrays are
    the incidents' effects per cell. The draw order is fixed (see `_daily_arrays`).
    """
    shape = expected.shape

    # ---- sessions: Poisson around a noisy day level (real traffic is over-dispersed)
    day_noise = common[:, None, None] * _lognormal(rng, _SD_DAY_SEGMENT, shape)
    sessions = rng.poisson(expected * day_noise * sess_mult)

    # ---- rates drawn per session
    bounce_p = np.clip(
        _BOUNCE_RATE[None, channels, None] + _BOUNCE_DEVICE_ADD[None, None, :] + bounce_add, 0.0, 0.95
    )
    bounces = rng.binomial(sessions, bounce_p)

    cr = (
        _CR_CHANNEL[None, channels, None]
        * _CR_DEVICE[None, None, :]
        * ev_cr[:, None, None]
        * cr_mult
        * _lognormal(rng, _SD_CR, shape)
    )
    conversions = rng.binomial(sessions, np.clip(cr, 0.0, 1.0))
    leads = rng.binomial(sessions, _LEAD_RATE)

    # Sum of `conversions` Gamma(shape 4, mean AOV) order values is one Gamma(4*conversions).
    revenue = rng.gamma(_AOV_SHAPE * conversions, _AOV_EUR / _AOV_SHAPE)

    # Sum of per-session load times (Gamma per session) times a day-level wobble (CDN, releases).
    load_mean = _LOAD_MEAN_S[None, None, :] * load_mult
    page_load = rng.gamma(_LOAD_SHAPE * sessions, load_mean / _LOAD_SHAPE) * _lognormal(
        rng, _SD_LOAD, shape
    )

    # ---- paid media; draws are made for every channel (fixed stream) and zeroed where unpaid
    paid = _PAID[None, channels, None]
    clicks = np.where(paid, rng.poisson(sessions / _SESSIONS_PER_CLICK), 0)
    impressions = np.where(paid, rng.poisson(clicks / _CTR[None, channels, None]), 0)
    cpc = _CPC_EUR[None, channels, None] * cpc_mult * _lognormal(rng, _SD_CPC, shape)
    ad_cost = np.where(paid, clicks * cpc, 0.0)

    return {
        "sessions": sessions,
        "bounces": bounces,
        "page_load_seconds": page_load,
        "conversions": conversions,
        "revenue": revenue,
        "ad_cost": ad_cost,
        "clicks": clicks,
        "impressions": impressions,
        "leads": leads,
    }


@functools.lru_cache(maxsize=8)
def _daily_cached(seed: int) -> tuple[tuple[date, ...], dict[str, np.ndarray]]:
    """Cached `_daily_arrays`; callers must not mutate the arrays (build frames from copies)."""
    dates, arrays = _daily_arrays(seed)
    for a in arrays.values():
        a.setflags(write=False)  # guard the cache against accidental in-place edits
    return tuple(dates), arrays


def _to_frame(timestamps: pd.DatetimeIndex, arrays: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Long frame from (time, channel, device) arrays; rows in time, CHANNELS, DEVICES order."""
    n_t = len(timestamps)
    n_c, n_v = len(CHANNELS), len(DEVICES)
    data: dict[str, object] = {
        "timestamp": timestamps.repeat(n_c * n_v),
        "channel": np.tile(np.repeat(np.array(CHANNELS, dtype=object), n_v), n_t),
        "device": np.tile(np.array(DEVICES, dtype=object), n_t * n_c),
    }
    for m in METRICS:
        data[m] = np.asarray(arrays[m], dtype=np.float64).reshape(-1)
    frame = pd.DataFrame(data)
    frame["channel"] = frame["channel"].astype(str)
    frame["device"] = frame["device"].astype(str)
    return frame


# --------------------------------------------------------------------------------------------
# Hourly generation
# --------------------------------------------------------------------------------------------


def _intraday_profile() -> np.ndarray:
    """Relative traffic per local hour 0..23, shape (channels, devices, 24).

    Low at night, a lunchtime peak around 12:00 and an evening peak around 20:00-21:00;
    desktop leans to lunchtime (office hours), mobile and tablet to the evening, and email
    gets a morning bump when the newsletter lands.
    """
    h = np.arange(24, dtype=float)
    awake = 1 / (1 + np.exp(-(h - 7) * 1.5)) / (1 + np.exp((h - 23) * 1.5))
    lunch = np.exp(-(((h - 12) / 2.2) ** 2))
    evening = np.exp(-(((h - 20.5) / 1.8) ** 2))
    morning = np.exp(-(((h - 8.5) / 1.2) ** 2))
    lunch_w = np.array([1.0, 0.7, 0.5])
    evening_w = np.array([0.6, 1.0, 1.0])
    dev = 0.05 + 0.35 * awake[None, :] + lunch_w[:, None] * lunch + evening_w[:, None] * evening
    prof = np.broadcast_to(dev[None, :, :], (len(CHANNELS), len(DEVICES), 24)).copy()
    prof[CHANNELS.index("email")] += 0.8 * morning[None, :]
    return prof


def _split_counts(rng: np.random.Generator, totals: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Multinomial split of integer `totals` (...,) over the last axis of `weights` (..., H).

    Sequential conditional binomials, vectorised over all leading cells; zero-weight columns
    get exactly 0 and the last positive column takes the remainder, so each row sums exactly to
    its total (numpy's multinomial would push float rounding leftovers into the last column,
    which may be a padding column).
    """
    # Suffix sums computed directly, so at the last positive column p is exactly 1.0.
    rest_w = np.flip(np.cumsum(np.flip(weights, -1), -1), -1)
    out = np.zeros(weights.shape, dtype=np.int64)
    remaining = totals.astype(np.int64).copy()
    for j in range(weights.shape[-1]):
        wj, rj = weights[..., j], rest_w[..., j]
        p = np.divide(wj, rj, out=np.zeros_like(wj), where=rj > 0)
        draw = rng.binomial(remaining, np.clip(p, 0.0, 1.0))
        out[..., j] = draw
        remaining -= draw
    return out


def _split_subcounts(
    rng: np.random.Generator, parts: np.ndarray, sub_totals: np.ndarray
) -> np.ndarray:
    """Split `sub_totals` (...,) over hours in proportion to the already split `parts` (..., H).

    Sequential hypergeometric draws: which of the period's sessions were the bounced (or
    converting) ones. Guarantees 0 <= result <= parts per hour and exact row sums.
    """
    out = np.zeros(parts.shape, dtype=np.int64)
    remaining_sub = sub_totals.astype(np.int64).copy()
    remaining_all = parts.sum(-1)
    for j in range(parts.shape[-1]):
        good = parts[..., j]
        bad = remaining_all - good
        draw = rng.hypergeometric(good, bad, remaining_sub)
        out[..., j] = draw
        remaining_sub -= draw
        remaining_all -= good
    return out


def _share(amount: np.ndarray, part: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """amount * part / whole per hour, 0 where whole is 0 (then the amount is 0 as well)."""
    whole = whole[..., None].astype(np.float64)
    frac = np.divide(part, whole, out=np.zeros(part.shape), where=whole > 0)
    return amount[..., None] * frac


def _split_hours(
    rng: np.random.Generator, d: Mapping[str, np.ndarray], weights: np.ndarray
) -> dict[str, np.ndarray]:
    """Split one group of channels' daily metrics (Dh, C, V) over the hours, (Dh, C, V, H).

    weights: the intraday profile per cell and hour (0 for padding hours). Counts are split
    exactly; sums (load seconds, revenue, ad cost) follow the counts they belong to.
    """
    sessions = _split_counts(rng, d["sessions"], weights)
    bounces = _split_subcounts(rng, sessions, d["bounces"])
    conversions = _split_subcounts(rng, sessions, d["conversions"])
    leads = _split_subcounts(rng, sessions, d["leads"])
    clicks = _split_counts(rng, d["clicks"], weights)
    # Impressions = clicks + impressions without a click, so clicks <= impressions every hour.
    impressions = clicks + _split_counts(rng, d["impressions"] - d["clicks"], weights)
    return {
        "sessions": sessions,
        "bounces": bounces,
        "page_load_seconds": _share(d["page_load_seconds"], sessions, d["sessions"]),
        "conversions": conversions,
        "revenue": _share(d["revenue"], conversions, d["conversions"]),
        "ad_cost": _share(d["ad_cost"], clicks, d["clicks"]),
        "clicks": clicks,
        "impressions": impressions,
        "leads": leads,
    }


def _hourly_frame(seed: int) -> pd.DataFrame:
    """Hourly frame for the last HOURLY_DAYS local days, summing exactly to the daily counts."""
    dates, daily = _daily_cached(seed)
    days = list(dates[-HOURLY_DAYS:])
    sl = slice(len(dates) - HOURLY_DAYS, len(dates))
    d = {m: daily[m][sl] for m in METRICS}  # (Dh, C, V)

    # Local midnights -> UTC; a local day has 23, 24 or 25 hours around DST switches.
    local_days = pd.DatetimeIndex(days + [days[-1] + timedelta(days=1)]).tz_localize(DEMO_TIMEZONE)
    bounds = local_days.tz_convert("UTC")
    n_hours = ((bounds[1:] - bounds[:-1]) / pd.Timedelta(hours=1)).to_numpy().astype(int)
    max_h = int(n_hours.max())
    offsets = np.arange(max_h)
    valid = offsets[None, :] < n_hours[:, None]  # (Dh, H)
    # Naive UTC datetime64 so numpy can add the hour offsets; made tz-aware again below.
    utc_midnights = bounds[:-1].tz_localize(None).to_numpy()
    hour_starts = utc_midnights[:, None] + offsets[None, :] * np.timedelta64(1, "h")
    local_hour = (
        pd.DatetimeIndex(hour_starts.reshape(-1)).tz_localize("UTC").tz_convert(DEMO_TIMEZONE).hour
    ).to_numpy().reshape(hour_starts.shape)

    prof = _intraday_profile()  # (C, V, 24)
    # weights[d, c, v, j] = prof[c, v, local_hour[d, j]] for valid hours, 0 for padding.
    weights = np.transpose(prof[:, :, local_hour], (2, 0, 1, 3)) * valid[:, None, None, :]

    # Hourly noise streams are derived from the seed but separate from the daily one, so the
    # daily numbers do not depend on whether hourly data was ever requested; the small channels
    # have a stream of their own, as in `_daily_arrays`.
    groups = ((slice(0, _N_LARGE), [seed, 1]), (slice(_N_LARGE, len(CHANNELS)), [seed, 3]))
    parts = [
        _split_hours(np.random.default_rng(key), {m: a[:, channels] for m, a in d.items()}, weights[:, channels])
        for channels, key in groups
    ]
    hourly = {m: np.concatenate([part[m] for part in parts], axis=1) for m in METRICS}
    # (Dh, C, V, H) -> (Dh, H, C, V), flatten time, drop padding hours.
    flat_valid = valid.reshape(-1)
    arrays = {
        m: np.moveaxis(a, 3, 1).reshape(-1, len(CHANNELS), len(DEVICES))[flat_valid]
        for m, a in hourly.items()
    }
    timestamps = (
        pd.DatetimeIndex(hour_starts.reshape(-1)[flat_valid]).tz_localize("UTC").as_unit(_TS_UNIT)
    )
    return _to_frame(timestamps, arrays)


# --------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def cached_frame(freq: str, seed: int) -> pd.DataFrame:
    """The frame for (freq, seed), cached: read it, never change it (`demo_frame` gives copies)."""
    if freq == "D":
        dates, arrays = _daily_cached(seed)
        # Daily label: the local calendar date written as midnight UTC (see module docstring).
        labels = pd.DatetimeIndex(list(dates)).tz_localize("UTC").as_unit(_TS_UNIT)
        return _to_frame(labels, arrays)
    return _hourly_frame(seed)


def demo_frame(freq: str = "D", seed: int = 7) -> pd.DataFrame:
    """The demo data in long format: one row per (timestamp, channel, device).

    freq: "D" (default) for every local day DEMO_START..DEMO_END, labelled midnight UTC of the
        local date; "h" for every local hour of the last HOURLY_DAYS (60) days up to DEMO_END,
        labelled by the real UTC start of the hour. Hourly counts sum exactly to the daily
        counts (continuous metrics within float error).
    seed: seed of the numpy Generator (default 7); the same seed always gives the same data.

    Returns columns `timestamp` (tz-aware UTC), `channel`, `device`, then METRICS as float64,
    sorted by timestamp, then CHANNELS and DEVICES order. A fresh copy on every call (the
    generated data is cached), so callers may modify it freely.

    Raises BadInputError for any other freq.
    """
    check_freq(freq)
    return cached_frame(freq, int(seed)).copy()


def check_freq(freq: str) -> None:
    """Raise BadInputError unless `freq` is one the demo generates."""
    if freq not in _FREQS:
        raise BadInputError(
            f"demo source: freq {freq!r} is not available; use one of "
            f"{', '.join(map(repr, _FREQS))} (daily, or hourly for the last {HOURLY_DAYS} days)"
        )
