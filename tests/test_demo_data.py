"""Tests of the demo data source: determinism, shape, sanity, hourly/daily consistency, DST,
the injected incidents, the calendar events and `DemoSource.fetch`.

Everything runs on the cached in-memory frames, so the whole file takes about a second.
"""

from __future__ import annotations

import time
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from forecaster.demo import shop as demo
from forecaster.demo import (
    CHANNELS,
    DEMO_END,
    DEMO_NOW,
    DEMO_START,
    DEMO_TIMEZONE,
    DEVICES,
    DIMENSIONS,
    HOURLY_DAYS,
    INCIDENTS,
    METRICS,
    QUIET_DAYS,
    SMALL_CHANNEL,
    demo_frame,
)
from forecaster.sources.demo import DemoSource
from forecaster.types import BadInputError

N_SEGMENTS = len(CHANNELS) * len(DEVICES)
COUNTS = ("sessions", "bounces", "conversions", "clicks", "impressions", "leads")


@pytest.fixture(scope="module")
def daily() -> pd.DataFrame:
    return demo_frame("D")


@pytest.fixture(scope="module")
def hourly() -> pd.DataFrame:
    return demo_frame("h")


def _day(d: date) -> pd.Timestamp:
    """The daily label of a local calendar day: midnight UTC of that date."""
    return pd.Timestamp(d, tz="UTC")


def _daily_total(frame: pd.DataFrame, metric: str, **segment: str) -> pd.Series:
    """Daily `metric` summed over everything outside `segment`, indexed by timestamp."""
    mask = np.ones(len(frame), dtype=bool)
    for dim, value in segment.items():
        mask &= (frame[dim] == value).to_numpy()
    return frame.loc[mask].groupby("timestamp")[metric].sum()


def _ratio_total(frame: pd.DataFrame, num: str, den: str, **segment: str) -> pd.Series:
    return _daily_total(frame, num, **segment) / _daily_total(frame, den, **segment)


def _window(series: pd.Series, first: date, last: date) -> pd.Series:
    return series.loc[_day(first) : _day(last)]


# ---------------------------------------------------------------- constants and ground truth


def test_constants_are_consistent() -> None:
    assert DEMO_END.weekday() == 2  # a Wednesday
    assert DEMO_NOW == pd.Timestamp("2025-12-11 07:00", tz="UTC")  # 08:00 CET
    assert str(DEMO_NOW.tz) == "UTC"
    assert DEMO_NOW > _day(DEMO_END)
    assert DIMENSIONS == ("channel", "device")


def test_incident_table_matches_the_brief() -> None:
    assert [i.number for i in INCIDENTS] == [1, 2, 3, 4]
    by_number = {i.number: i for i in INCIDENTS}
    assert (by_number[1].start, by_number[1].end) == (date(2025, 12, 8), DEMO_END)
    assert (by_number[2].start, by_number[2].end) == (date(2025, 10, 21), date(2025, 10, 21))
    assert (by_number[3].start, by_number[3].end) == (date(2025, 12, 7), DEMO_END)
    assert (by_number[4].start, by_number[4].end) == (date(2025, 9, 16), date(2025, 9, 17))
    assert [i.good_news for i in INCIDENTS] == [False, False, False, True]
    for inc in INCIDENTS:
        assert DEMO_START <= inc.start <= inc.end <= DEMO_END
        assert inc.number in demo._INCIDENT_EFFECTS  # every row is really injected
        assert inc.description and inc.expected
        for dim, value in inc.segment.items():
            assert value in {"channel": CHANNELS, "device": DEVICES}[dim]
        for exp in inc.expected:
            assert exp.direction in ("up", "down")
            assert dict(exp.segment) == dict(inc.segment)
    kpis = {(e.kpi, e.direction) for e in by_number[1].expected}
    assert kpis == {("conversion_rate", "down"), ("page_load_time", "up"), ("bounce_rate", "up")}
    kpis = {(e.kpi, e.direction) for e in by_number[3].expected}
    assert kpis == {("cpa", "up"), ("roas", "down")}


def test_quiet_days_are_labelled_inside_and_never_on_an_incident() -> None:
    incident_days = {
        inc.start + timedelta(days=k)
        for inc in INCIDENTS
        for k in range((inc.end - inc.start).days + 1)
    }
    assert (date(2024, 11, 29), "Black Friday 2024") in QUIET_DAYS
    assert (date(2025, 12, 1), "Cyber Monday 2025") in QUIET_DAYS
    assert (date(2024, 12, 25), "Christmas Day 2024") in QUIET_DAYS
    for day, label in QUIET_DAYS:
        assert DEMO_START <= day <= DEMO_END and label
        assert day not in incident_days
    black_fridays = [d for d, label in QUIET_DAYS if label.startswith("Black Friday")]
    assert black_fridays == [date(2023, 11, 24), date(2024, 11, 29), date(2025, 11, 28)]


# ---------------------------------------------------------------- determinism and shape


def test_deterministic_for_a_seed_and_different_for_another() -> None:
    a, b = demo_frame("D", seed=7), demo_frame("D", seed=7)
    pd.testing.assert_frame_equal(a, b)
    c = demo_frame("D", seed=8)
    assert not np.array_equal(a["sessions"].to_numpy(), c["sessions"].to_numpy())
    # Determinism must not depend on the cache: a fresh generation gives the same numbers.
    _, fresh = demo._daily_arrays(7)
    np.testing.assert_array_equal(fresh["sessions"].reshape(-1), a["sessions"].to_numpy())


def test_returns_copies_so_callers_cannot_corrupt_the_cache() -> None:
    first = demo_frame("D")
    first.loc[:, "sessions"] = -1.0
    assert (demo_frame("D")["sessions"] >= 0).all()


def test_daily_shape_dtypes_and_labels(daily: pd.DataFrame) -> None:
    n_days = (DEMO_END - DEMO_START).days + 1
    assert list(daily.columns) == ["timestamp", "channel", "device", *METRICS]
    assert len(daily) == n_days * N_SEGMENTS
    assert not daily.duplicated(["timestamp", "channel", "device"]).any()
    assert daily.groupby("timestamp").size().eq(N_SEGMENTS).all()
    ts = daily["timestamp"]
    assert isinstance(ts.dtype, pd.DatetimeTZDtype) and str(ts.dt.tz) == "UTC"
    assert (ts == ts.dt.normalize()).all()  # midnight UTC labels
    assert ts.min() == _day(DEMO_START) and ts.max() == _day(DEMO_END)
    assert ts.is_monotonic_increasing
    assert set(daily["channel"]) == set(CHANNELS) and set(daily["device"]) == set(DEVICES)
    for m in METRICS:
        assert daily[m].dtype == np.float64, m


def test_values_are_sane(daily: pd.DataFrame, hourly: pd.DataFrame) -> None:
    for frame in (daily, hourly):
        values = frame[list(METRICS)]
        assert values.notna().all().all()
        assert (values >= 0).all().all()
        assert (frame["bounces"] <= frame["sessions"]).all()
        assert (frame["conversions"] <= frame["sessions"]).all()
        assert (frame["clicks"] <= frame["impressions"]).all()
        for m in COUNTS:
            assert (frame[m] == frame[m].round()).all(), m
        unpaid = ~frame["channel"].isin(["paid_search", "paid_social"])
        assert (frame.loc[unpaid, ["clicks", "impressions", "ad_cost"]] == 0).all().all()
        assert (frame.loc[frame["conversions"] == 0, "revenue"] == 0).all()


def test_levels_look_like_the_brief(daily: pd.DataFrame) -> None:
    total = daily.groupby("timestamp")[list(METRICS)].sum()
    assert 18_000 < total["sessions"].mean() < 22_000
    ch_share = daily.groupby("channel")["sessions"].sum() / daily["sessions"].sum()
    assert ch_share["organic"] == pytest.approx(0.35, abs=0.02)
    assert ch_share["email"] == pytest.approx(0.08, abs=0.01)
    dev_share = daily.groupby("device")["sessions"].sum() / daily["sessions"].sum()
    assert dev_share["mobile"] == pytest.approx(0.50, abs=0.02)
    assert total["revenue"].sum() / total["conversions"].sum() == pytest.approx(68, rel=0.03)
    # Growth ~12 %/year: the autumn of 2025 is clearly above the autumn of 2024.
    oct24 = _window(total["sessions"], date(2024, 10, 1), date(2024, 10, 31)).mean()
    oct25 = _window(total["sessions"], date(2025, 10, 1), date(2025, 10, 31)).mean()
    assert oct25 / oct24 == pytest.approx(1.12, abs=0.05)
    # Email peaks on its send days (Tue/Thu) against Mon/Wed.
    email = _daily_total(daily, "sessions", channel="email")
    dow = email.index.day_of_week
    assert email[dow.isin([1, 3])].mean() / email[dow.isin([0, 2])].mean() > 1.6


# Per-channel totals of the six large channels before the tiny one was added (seed 7): the
# small channel has its own random generator, so these must never move.
LARGE_CHANNEL_TOTALS = {
    "D": {"organic": (5458925, 122491), "paid_search": (3429785, 104886), "paid_social": (1875492, 20091),
          "email": (1247093, 51151), "direct": (2340205, 83461), "referral": (1254222, 25699)},
    "h": {"organic": (519498, 11791), "paid_search": (326649, 10268), "paid_social": (178881, 1952),
          "email": (115312, 4873), "direct": (223983, 8106), "referral": (119151, 2454)},
}


@pytest.mark.parametrize("freq", ["D", "h"])
def test_the_small_channel_leaves_the_large_channels_unchanged(freq: str) -> None:
    frame = demo_frame(freq)
    sums = frame.groupby("channel")[["sessions", "conversions"]].sum()
    assert {c: (int(sums.loc[c, "sessions"]), int(sums.loc[c, "conversions"])) for c in LARGE_CHANNEL_TOTALS[freq]} \
        == LARGE_CHANNEL_TOTALS[freq]


def test_the_small_channel_has_a_few_sessions_a_day_and_few_orders(daily: pd.DataFrame) -> None:
    assert SMALL_CHANNEL in CHANNELS
    small = daily[daily["channel"] == SMALL_CHANNEL].groupby("timestamp")[list(METRICS)].sum()
    assert 3 <= small["sessions"].quantile(0.05) and small["sessions"].quantile(0.95) <= 15
    assert small["sessions"].mean() == pytest.approx(8, abs=1.5)
    assert small["conversions"].sum() / small["sessions"].sum() == pytest.approx(0.015, abs=0.006)
    assert (small["conversions"] == 0).mean() > 0.8
    assert (small[["clicks", "impressions", "ad_cost"]] == 0).all().all()  # not a paid (per-click) channel


# ---------------------------------------------------------------- hourly


def test_hourly_covers_the_last_days_with_dst(hourly: pd.DataFrame) -> None:
    assert list(hourly.columns) == ["timestamp", "channel", "device", *METRICS]
    ts = hourly["timestamp"]
    assert str(ts.dt.tz) == "UTC" and ts.is_monotonic_increasing
    local_day = ts.dt.tz_convert(DEMO_TIMEZONE).dt.date
    assert local_day.min() == DEMO_END - timedelta(days=HOURLY_DAYS - 1)
    assert local_day.max() == DEMO_END
    assert local_day.nunique() == HOURLY_DAYS
    # Labels are the real UTC starts: the last local day starts at 23:00 UTC the day before.
    assert ts.min() == pd.Timestamp(DEMO_END - timedelta(days=HOURLY_DAYS - 1), tz=DEMO_TIMEZONE)
    assert ts.max() == pd.Timestamp("2025-12-10 22:00", tz="UTC")
    rows_per_segment = hourly.groupby([local_day, hourly["channel"], hourly["device"]]).size()
    dst_day = rows_per_segment.xs(date(2025, 10, 26), level=0)
    assert len(dst_day) == N_SEGMENTS and (dst_day == 25).all()
    normal = rows_per_segment.drop(date(2025, 10, 26), level=0)
    assert (normal == 24).all()
    # No hole or duplicate: consecutive distinct labels are exactly one hour apart.
    assert (pd.Series(ts.unique()).diff().dropna() == pd.Timedelta(hours=1)).all()


def test_hourly_sums_to_daily(daily: pd.DataFrame, hourly: pd.DataFrame) -> None:
    local = hourly["timestamp"].dt.tz_convert(DEMO_TIMEZONE).dt.date
    label = pd.to_datetime(local.astype(str)).dt.tz_localize("UTC").dt.as_unit("us")
    summed = (
        hourly.assign(timestamp=label)
        .groupby(["timestamp", "channel", "device"])[list(METRICS)]
        .sum()
    )
    ref = daily.set_index(["timestamp", "channel", "device"]).loc[summed.index]
    assert len(summed) == HOURLY_DAYS * N_SEGMENTS
    for m in COUNTS:
        np.testing.assert_array_equal(summed[m].to_numpy(), ref[m].to_numpy(), err_msg=m)
    for m in ("revenue", "page_load_seconds", "ad_cost"):
        np.testing.assert_allclose(summed[m].to_numpy(), ref[m].to_numpy(), rtol=1e-6, err_msg=m)


def test_hourly_profile_is_low_at_night_and_peaks_midday_and_evening(hourly: pd.DataFrame) -> None:
    local_hour = hourly["timestamp"].dt.tz_convert(DEMO_TIMEZONE).dt.hour
    by_hour = hourly.groupby(local_hour)["sessions"].sum()
    assert by_hour.loc[[2, 3, 4]].max() < 0.1 * by_hour.max()
    assert by_hour.loc[11:13].max() > 1.5 * by_hour.loc[16]
    assert by_hour.loc[19:21].max() > 1.5 * by_hour.loc[16]


# ---------------------------------------------------------------- incidents and events


def test_incident_1_mobile_slowdown_is_visible(daily: pd.DataFrame) -> None:
    load = _ratio_total(daily, "page_load_seconds", "sessions", device="mobile")
    before = _window(load, date(2025, 11, 10), date(2025, 12, 7)).mean()
    assert load[_day(date(2025, 12, 9))] / before == pytest.approx(2.5, rel=0.15)
    bounce = _ratio_total(daily, "bounces", "sessions", device="mobile")
    bounce_before = _window(bounce, date(2025, 11, 10), date(2025, 12, 7)).mean()
    assert bounce[_day(date(2025, 12, 9))] - bounce_before == pytest.approx(0.15, abs=0.03)
    cr = _ratio_total(daily, "conversions", "sessions", device="mobile")
    # Compare with the same weeks a week earlier, minus the Black Friday run (CR x1.5 there).
    cr_before = _window(cr, date(2025, 11, 10), date(2025, 11, 26)).mean()
    cr_during = _window(cr, date(2025, 12, 8), DEMO_END).mean()
    assert cr_during / cr_before == pytest.approx(0.6, rel=0.15)
    # Desktop is untouched.
    desktop = _ratio_total(daily, "page_load_seconds", "sessions", device="desktop")
    assert desktop[_day(date(2025, 12, 9))] / _window(
        desktop, date(2025, 11, 10), date(2025, 12, 7)
    ).mean() == pytest.approx(1.0, abs=0.1)


def test_incident_2_email_outage_is_visible(daily: pd.DataFrame) -> None:
    email = _daily_total(daily, "sessions", channel="email")
    week_before = _window(email, date(2025, 10, 14), date(2025, 10, 20))
    assert email[_day(date(2025, 10, 21))] < 0.05 * week_before.mean()
    assert email[_day(date(2025, 10, 22))] > 0.5 * week_before.mean()  # back the next day


def test_incident_3_cpc_spike_is_visible(daily: pd.DataFrame) -> None:
    cpc = _ratio_total(daily, "ad_cost", "clicks", channel="paid_search")
    before = _window(cpc, date(2025, 11, 9), date(2025, 12, 6)).mean()
    during = _window(cpc, date(2025, 12, 7), DEMO_END)
    assert len(during) == 4
    assert (during / before).between(1.6 * 0.9, 1.6 * 1.1).all()
    clicks_per_session = _ratio_total(daily, "clicks", "sessions", channel="paid_search")
    assert _window(clicks_per_session, date(2025, 12, 7), DEMO_END).mean() == pytest.approx(
        1 / 0.95, rel=0.03
    )
    social = _ratio_total(daily, "ad_cost", "clicks", channel="paid_social")
    social_before = _window(social, date(2025, 11, 9), date(2025, 12, 6)).mean()
    assert social[_day(DEMO_END)] / social_before < 1.15  # paid social is untouched


def test_incident_4_press_mention_is_visible(daily: pd.DataFrame) -> None:
    ref = _daily_total(daily, "sessions", channel="referral")
    for day in (date(2025, 9, 16), date(2025, 9, 17)):
        # Same weekday in the two weeks before and after, so weekly seasonality cancels.
        same_weekday = [day + timedelta(weeks=k) for k in (-2, -1, 1, 2)]
        baseline = ref[[_day(d) for d in same_weekday]].mean()
        assert ref[_day(day)] / baseline == pytest.approx(3.0, rel=0.2)


def test_black_friday_2024_is_about_double_the_surrounding_fridays(daily: pd.DataFrame) -> None:
    sessions = _daily_total(daily, "sessions")
    bf = date(2024, 11, 29)
    fridays = [bf + timedelta(weeks=k) for k in (-2, -1, 1, 2)]
    ratio = sessions[_day(bf)] / sessions[[_day(d) for d in fridays]].mean()
    assert ratio == pytest.approx(2.0, rel=0.15)
    cr = _ratio_total(daily, "conversions", "sessions")
    assert cr[_day(bf)] / cr[[_day(d) for d in fridays]].mean() > 1.3


def test_christmas_and_holidays_dip(daily: pd.DataFrame) -> None:
    sessions = _daily_total(daily, "sessions")
    # Christmas Day 2024 (a Wednesday) against the Wednesdays around it outside the events.
    xmas = sessions[_day(date(2024, 12, 25))]
    assert xmas / sessions[[_day(date(2024, 12, 11)), _day(date(2025, 1, 8))]].mean() < 0.75
    # King's Day 2025 (Saturday Apr 26) against the Saturdays around it.
    kings = sessions[_day(date(2025, 4, 26))]
    around = sessions[[_day(date(2025, 4, 12)), _day(date(2025, 5, 10))]].mean()
    assert kings / around == pytest.approx(0.85, abs=0.08)


# ---------------------------------------------------------------- fetch


def test_fetch_aggregates_over_the_other_dimensions(daily: pd.DataFrame) -> None:
    got = DemoSource().fetch(["sessions"], ["device"], "D")
    assert list(got.columns) == ["timestamp", "device", "sessions"]
    manual = daily.groupby(["timestamp", "device"], as_index=False)["sessions"].sum()
    manual = manual.sort_values(["timestamp", "device"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, manual)
    assert len(got) == ((DEMO_END - DEMO_START).days + 1) * len(DEVICES)


def test_fetch_totals_bounds_and_column_order() -> None:
    src = DemoSource()
    assert src.name == "demo" and DemoSource.name == "demo"
    assert src.now() == DEMO_NOW  # the fixed clock of the Source protocol
    start, end = _day(date(2025, 12, 1)), _day(date(2025, 12, 3))
    got = src.fetch(["revenue", "sessions"], [], "D", start=start, end=end)
    assert list(got.columns) == ["timestamp", "revenue", "sessions"]
    assert list(got["timestamp"]) == [start, _day(date(2025, 12, 2)), end]  # inclusive
    full = demo_frame("D")
    expected = full[full["timestamp"] == end]["sessions"].sum()
    assert got["sessions"].iloc[-1] == expected
    both = src.fetch(["conversions"], ["device", "channel"], "h", start=pd.Timestamp(DEMO_NOW))
    assert both.empty and list(both.columns) == ["timestamp", "device", "channel", "conversions"]
    first_hours = pd.Timestamp("2025-10-12 00:00", tz="UTC")
    per_seg = src.fetch(["clicks"], ["channel", "device"], "h", end=first_hours)
    assert per_seg["timestamp"].nunique() == 3  # 22:00, 23:00 and 00:00 UTC
    assert per_seg[["timestamp", "channel", "device"]].equals(
        per_seg.sort_values(["timestamp", "channel", "device"])[["timestamp", "channel", "device"]]
    )


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda s: s.fetch(["sessions", "orders"], ["device"], "D"), "'orders'"),
        (lambda s: s.fetch(["sessions"], ["country"], "D"), "'country'"),
        (lambda s: s.fetch(["sessions"], ["device"], "W"), "'W'"),
        (lambda s: s.fetch([], ["device"], "D"), "no metric"),
    ],
)
def test_fetch_rejects_bad_input(call, needle: str) -> None:
    with pytest.raises(BadInputError) as err:
        call(DemoSource())
    assert needle in str(err.value)


def test_unknown_metric_error_lists_the_allowed_ones() -> None:
    with pytest.raises(BadInputError, match="orders") as err:
        DemoSource().fetch(["orders"], [], "D")
    assert all(m in str(err.value) for m in METRICS)


def test_demo_frame_rejects_other_freqs() -> None:
    with pytest.raises(BadInputError, match=r"'W'.*'D', 'h'"):
        demo_frame("W")


def test_generation_is_fast() -> None:
    demo.cached_frame.cache_clear()
    demo._daily_cached.cache_clear()
    t0 = time.perf_counter()
    demo_frame("D", seed=11)
    demo_frame("h", seed=11)
    # The brief asks for well under a second; allow slack for a loaded CI machine.
    assert time.perf_counter() - t0 < 1.5
