"""The detector's state as the store keeps it (`pack_state` / `unpack_state`, and the compact
pickle of `State`): exact, so a state packed and read back judges bit for bit as the original
(daily with a calendar, hourly, a share, gaps, every model); `StateFormatError` for bytes that
are not a packed state; small and fast enough for 10,000 series a cycle. And the refit phase
that spreads a daemon's refits over its cycles, the same for the daemon, replay and walk_forward."""

from __future__ import annotations

import dataclasses
import pickle
import struct
import zlib
from collections import Counter, deque
from typing import Any

import numpy as np
import pandas as pd
import pytest

from forecaster.calendar import Calendar
from forecaster.detect import (
    Detector,
    State,
    StateFormatError,
    pack_state,
    unpack_state,
    walk_forward,
)
from forecaster.detect.engine import (
    PACK_HEADER,
    PACK_MAGIC,
    PACK_ZLIB,
    STATE_VERSION,
    _span,
    refit_phase,
)
from forecaster.sources.base import to_kpi_series
from forecaster.types import Judgement, KPISeries

nan = float("nan")
US = Calendar("US")


def bits(judgements: list[Judgement]) -> list[tuple[Any, ...]]:
    """Judgements as comparable tuples: floats as their 8 bytes (NaN equal to NaN, -0.0 not to
    0.0), periods with their unit and zone, every other field with its type."""
    def one(v: Any) -> Any:
        if type(v) is float:
            return struct.pack("<d", v)
        if isinstance(v, pd.Timestamp):
            return (v.value, v.unit, v.tz)
        return (type(v), v)
    return [tuple(one(v) for v in dataclasses.astuple(j)) for j in judgements]


def daily(days: int = 760, seed: int = 1, segment: dict[str, str] | None = None) -> KPISeries:
    """Two years of a weekly KPI with gaps, a drop, a dip and a spike."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2023-01-01", periods=days, freq="D", tz="UTC")
    values = 1000 + 100 * np.sin(2 * np.pi * np.arange(days) / 7) + rng.normal(0, 30, days)
    values[[2 * days // 5, 2 * days // 5 + 1, 2 * days // 3, days - 40]] = nan
    values[days // 2] *= 0.5
    values[days // 2 + 20:days // 2 + 26] *= 0.7
    values[4 * days // 5] *= 1.8
    return to_kpi_series("sessions", pd.Series(values, index=index), freq="D", segment=segment, origin="test")


def hourly(hours: int = 24 * 40) -> KPISeries:
    """Hourly traffic with a daily and a weekly shape, gaps, a spike and a dip."""
    rng = np.random.default_rng(2)
    index = pd.date_range("2024-01-01", periods=hours, freq="h", tz="UTC")
    t = np.arange(hours)
    values = 50 + 20 * np.sin(2 * np.pi * t / 24) + 5 * (index.day_of_week >= 5) + rng.normal(0, 3, hours)
    values[[100, 500, 501]] = nan
    values[700] *= 2
    values[800:812] *= 0.6
    return to_kpi_series("sessions", pd.Series(values, index=index), freq="h", origin="test")


def share(days: int = 760) -> KPISeries:
    """A conversion rate over weekday/weekend sessions, with gaps."""
    rng = np.random.default_rng(3)
    sessions = rng.poisson(np.where(np.arange(days) % 7 < 5, 400, 60), days).astype(float)
    conversions = rng.binomial(sessions.astype(int), 0.03).astype(float)
    index = pd.date_range("2023-06-01", periods=days, freq="D", tz="UTC")
    rate = pd.Series(conversions / sessions, index=index)
    rate.iloc[[50, 200, 201]] = nan
    return to_kpi_series("conversion_rate", rate, freq="D", denominator=pd.Series(sessions, index=index),
                         origin="test")


CASES = {
    "daily with a calendar": (lambda: Detector(freq="D", calendar=US), daily),
    "hourly": (lambda: Detector(freq="h"), hourly),
    "a share": (lambda: Detector(freq="D", share=True), share),
}


# --------------------------------------------------------------------------- exact: the same verdicts


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("split", [45, 75, 300, 401, 423])
def test_a_packed_state_goes_on_bit_for_bit(case: str, split: int) -> None:
    make_detector, make_series = CASES[case]
    series, detector = make_series(), make_detector()
    index = series.values.index
    whole = walk_forward(detector, series)
    state, head = detector.advance(None, series, index[split - 1])
    for stored in (unpack_state(pack_state(state)), pickle.loads(pickle.dumps(state, protocol=5))):
        assert stored is not state
        # A new process: a new detector, and several hundred periods stepped on.
        _, tail = make_detector().advance(stored, series, index[-1])
        assert len(tail) == len(index) - split >= 300
        assert bits(head + tail) == bits(whole)


def test_a_state_packed_every_period_judges_as_one_walk() -> None:
    # The daemon: each cycle reads the state, steps one period, stores it.
    series = daily(days=560)
    index = series.values.index
    detector = Detector(freq="D", calendar=US)
    state, judgements = detector.advance(None, series, index[199])
    for period in index[200:]:
        state, new = detector.advance(unpack_state(pack_state(state)), series, period)
        judgements += new
    assert bits(judgements) == bits(walk_forward(detector, series))


@pytest.mark.parametrize("case", list(CASES))
def test_an_unpacked_state_is_the_state_it_was(case: str) -> None:
    make_detector, make_series = CASES[case]
    series = make_series()
    state = make_detector().warm_up(series)
    back = unpack_state(pack_state(state))
    assert type(back) is State
    for name, value in vars(state).items():
        other = getattr(back, name)
        assert type(other) is type(value), name
        if isinstance(value, list | deque) and name != "recent":  # (the judgements: bit for bit, below)
            assert [struct.pack("<d", v) if type(v) is float else v for v in value] == \
                   [struct.pack("<d", v) if type(v) is float else v for v in other], name
        if isinstance(value, deque):
            assert other.maxlen == value.maxlen, name
    assert bits(list(back.recent)) == bits(list(state.recent))
    for name in ("first_period", "next_period"):
        assert (getattr(back, name).value, getattr(back, name).unit, getattr(back, name).tz) == \
               (getattr(state, name).value, getattr(state, name).unit, getattr(state, name).tz)
    assert back.effects == state.effects and back.plan == state.plan
    shift, shifted = state.behaviour, back.behaviour
    assert (list(shift.means), list(shift.recent), shift.total, shift.total_sq) == \
           (list(shifted.means), list(shifted.recent), shifted.total, shifted.total_sq)
    assert shifted.recent.maxlen == shift.recent.maxlen
    model, again = state.model, back.model
    assert type(again) is type(model)
    for name, value in vars(model).items():
        if isinstance(value, pd.Series):
            pd.testing.assert_series_equal(getattr(again, name), value)
            assert getattr(again, name).index.freq == value.index.freq
        elif name != "result_":
            assert getattr(again, name) == value, name
    if model.updated_:  # the model goes on forecasting as the original (ETS's predict runs its recursion)
        pd.testing.assert_frame_equal(again.predict(7).to_frame(), model.predict(7).to_frame())


@pytest.mark.parametrize("model", ["seasonal_naive", "auto",
                                   pytest.param("prophet", marks=[pytest.mark.slow, pytest.mark.filterwarnings(
                                       "ignore:The 'convert_dates' keyword")])])
def test_every_model_packs_and_goes_on_the_same(model: str) -> None:
    series = daily(days=420)
    index = series.values.index
    detector = Detector(freq="D", model=model)
    state, head = detector.advance(None, series, index[299])
    _, tail = Detector(freq="D", model=model).advance(unpack_state(pack_state(state)), series, index[-1])
    assert bits(head + tail) == bits(walk_forward(detector, series))


def test_a_model_that_fell_back_packs_with_its_label() -> None:
    series = daily(days=300)
    detector = Detector(freq="D", model_params={"trend": "sideways"})  # statsmodels refuses it: the fallback judges
    state, head = detector.advance(None, series, series.values.index[199])
    assert state.model_label.startswith("seasonal_naive (ets failed")
    back = unpack_state(pack_state(state))
    assert back.model_label == state.model_label and type(back.model) is type(state.model)
    _, tail = detector.advance(back, series, series.values.index[-1])
    assert bits(head + tail) == bits(walk_forward(detector, series))


def test_a_numpy_float_in_a_judgement_comes_back_as_the_same_number() -> None:
    # Judgements carry python floats; a caller stepping numpy floats in gets the same values back.
    series = daily(days=200)
    detector = Detector(freq="D")
    state, _ = detector.advance(None, series, series.values.index[-2])
    state, judged = detector.step(state, series.values.index[-1], np.float64(1234.5))
    back = unpack_state(pack_state(state))
    assert back.recent[-1].actual == 1234.5 and back.recent[-1] == judged


# --------------------------------------------------------------------------- small, and the format


def test_a_daily_state_with_two_years_packs_small() -> None:
    state = Detector(freq="D", calendar=US).warm_up(daily(days=731))
    packed = pack_state(state)
    assert len(packed) < 9_000  # 8.5 KB: the floats are noise here; the pickle of the fields was 40 KB
    assert len(pickle.dumps(state, protocol=5)) < 9_000  # the compact pickle: what executors send
    assert not state.signed and not state.outside and state.behaviour.untouched()  # daily: no habits kept


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The 'convert_dates' keyword")
def test_a_prophet_state_is_compressed() -> None:
    state = Detector(freq="D", model="prophet").warm_up(daily(days=400))
    packed = pack_state(state)
    assert packed[PACK_HEADER.size - 5] == PACK_ZLIB  # the flags byte: its JSON compresses
    assert len(packed) < len(pickle.dumps(state, protocol=5)) / 2
    assert bits(list(unpack_state(packed).recent)) == bits(list(state.recent))


def garbled(blob: bytes, at: int) -> bytes:
    return blob[:at] + bytes([blob[at] ^ 0xFF]) + blob[at + 1:]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda blob: b"garbage", "not a packed detector state"),
        (lambda blob: b"", "not a packed detector state"),
        (lambda blob: blob[:8], "at least"),
        (lambda blob: blob[:-1], "truncated or damaged"),
        (lambda blob: blob[:len(blob) // 2], "truncated or damaged"),
        (lambda blob: blob[:PACK_HEADER.size], "truncated or damaged"),
        (lambda blob: garbled(blob, len(blob) - 100), "truncated or damaged"),
        (lambda blob: pickle.dumps(unpack_state(blob)), "not a packed detector state"),  # a plain pickle
        (lambda blob: blob[:4] + struct.pack("<H", STATE_VERSION - 1) + blob[6:], "version"),
    ],
)
def test_bytes_that_are_not_a_packed_state_raise_state_format_error(damage: Any, message: str) -> None:
    blob = pack_state(Detector(freq="D").warm_up(daily(days=200)))
    with pytest.raises(StateFormatError, match=message) as raised:
        unpack_state(damage(blob))
    assert isinstance(raised.value, ValueError)  # the store's callers catch it as bad input


def test_unreadable_contents_behind_a_valid_header_raise_state_format_error() -> None:
    body = pickle.dumps({"packed": STATE_VERSION}, protocol=5)  # a pickle, but not of a state's fields
    blob = PACK_HEADER.pack(PACK_MAGIC, STATE_VERSION, 0, zlib.crc32(body)) + body
    with pytest.raises(StateFormatError, match="cannot be read"):
        unpack_state(blob)


def test_a_state_pickled_by_an_older_version_is_rebuilt(monkeypatch: pytest.MonkeyPatch) -> None:
    series = daily(days=300)
    detector = Detector(freq="D")
    state, _ = detector.advance(None, series, series.values.index[199])
    # Version 2 pickled the fields as they were.
    monkeypatch.setattr(State, "__getstate__", lambda self: {**self.__dict__, "version": 2})
    old = pickle.dumps(state)
    monkeypatch.undo()
    stored = pickle.loads(old)
    assert stored.version == 2
    rebuilt, judgements = detector.advance(stored, series, series.values.index[-1])
    assert len(judgements) == 300 and rebuilt.version == STATE_VERSION  # walked again from the first period
    assert bits(judgements) == bits(walk_forward(detector, series))


# --------------------------------------------------------------------------- the refit phase


def test_series_that_start_together_refit_on_different_cycles() -> None:
    detector = Detector(freq="D")
    plan = detector.plan
    index = pd.date_range("2024-01-01", periods=5, freq="D", tz="UTC")
    refits: Counter[int] = Counter()
    phases = set()
    for k in range(1000):
        series = KPISeries("spend", pd.Series(np.arange(5.0), index=index), "D",
                           {"campaign": f"c{k}", "channel": ("search", "social")[k % 2]})
        phase = detector.new_state(series).refit_phase
        assert 0 <= phase < plan.refit_every
        phases.add(phase)
        position = plan.min_fit  # the first fit: the same day for series with the same history
        while position < 2000:
            position = detector._next_refit(position, phase)
            refits[position] += 1
    ramp = [p for p in refits if refits[p] == 1000]
    assert ramp == [120, 220]  # the history doubling (60 -> 120 -> 240, capped at refit_every) as before
    assert len(phases) > 95
    steady = {p: n for p, n in refits.items() if p > 220}
    assert max(steady.values()) <= 30  # about 1 in refit_every (1%) per period, not all 1,000 at once


def test_a_walk_refits_at_its_phase_and_every_refit_every_after() -> None:
    detector = Detector(freq="D")
    seen = {}
    for segment in ("a", "b", "c"):
        series = daily(days=560, segment={"store": segment})
        state = detector.new_state(series)
        positions = []
        for period in series.values.index:
            before = state.next_refit
            state, _ = detector.step(state, period, float(series.values.get(period, nan)))
            if state.next_refit != before:
                positions.append(state.position - 1)  # the refit happened at the step's position
        steady = [p for p in positions if p >= 220]
        assert all(p % detector.plan.refit_every == state.refit_phase for p in steady[1:]), (positions, state.refit_phase)
        assert np.all(np.diff(steady[1:]) == detector.plan.refit_every)
        seen[segment] = tuple(steady)
    assert len(set(seen.values())) == 3


def test_sub_daily_data_keep_refitting_a_week_after_the_weekly_trial() -> None:
    # Which hour of the week an hourly refit falls on moves its weekly season's fit: not spread yet.
    index = pd.date_range("2024-01-01", periods=5, freq="h", tz="UTC")
    detector = Detector(freq="h")
    assert detector.new_state(KPISeries("sessions", pd.Series(np.arange(5.0), index=index), "h")).refit_phase is None
    assert detector._next_refit(576, None) == 576 + detector.plan.refit_every


def test_the_refit_phase_is_a_stable_hash_of_the_series_identity() -> None:
    index = pd.date_range("2024-01-01", periods=5, freq="D", tz="UTC")
    def phase(name: str, segment: dict[str, str]) -> int:
        return refit_phase(KPISeries(name, pd.Series(np.arange(5.0), index=index), "D", segment), 100)
    # Fixed numbers: a hashlib digest, not Python's hash() (salted per process): every process,
    # the daemon's workers and a replay, schedules the same refits for a series.
    assert (phase("sessions", {}), phase("sessions", {"device": "mobile"}), phase("sessions", {"device": "web"})) == \
           (59, 12, 35)
    assert phase("sessions", {"device": "mobile", "country": "NL"}) == phase("sessions", {"country": "NL", "device": "mobile"})


# --------------------------------------------------------------------------- stepping from a stored state


@pytest.mark.parametrize(
    ("start", "until"),
    [(0, 0), (5, 5), (5, 9), (0, 19), (18, 25), (25, 30), (-3, 2)],  # positions in the 20-day index
)
def test_a_regular_series_is_read_by_position_as_it_would_be_reindexed(start: int, until: int) -> None:
    index = pd.date_range("2024-01-01", periods=20, freq="D", tz="UTC")
    values = pd.Series(np.arange(20.0), index=index)
    values.iloc[7] = nan
    first, last = index[0] + pd.Timedelta(days=start), index[0] + pd.Timedelta(days=until)
    offset = pd.tseries.frequencies.to_offset("D")
    periods, got = _span(values, first, last, offset)
    expected = pd.date_range(first, last, freq="D")
    assert list(periods) == list(expected)
    assert [p.unit for p in periods] == [p.unit for p in expected]
    np.testing.assert_array_equal(got, values.reindex(expected).to_numpy())
    # Without a freq (or another one), the same by reindexing.
    irregular = values.drop(index[3])
    periods, got = _span(irregular, first, last, offset)
    assert list(periods) == list(expected)
    np.testing.assert_array_equal(got, irregular.reindex(expected).to_numpy())


def test_two_states_unpacked_from_one_blob_share_nothing_they_change() -> None:
    blob = pack_state(Detector(freq="D").warm_up(daily(days=200)))
    one, two = unpack_state(blob), unpack_state(blob)
    for name in ("raw", "clean", "on_event", "errors", "recent", "volumes", "effects"):
        assert getattr(one, name) is not getattr(two, name), name
    one.model.push(1e6)
    assert two.model.next_value() != one.model.next_value()
    one.model.y_.iloc[0] = -1.0
    assert two.model.y_.iloc[0] != -1.0
