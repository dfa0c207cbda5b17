"""One engine: what replay says is what the daemon sends (issue 16).

The daemon runs over the demo's last 120 days (all 62 series) on its injectable clock, one day at
a time, with its worker processes, a SQLite store that keeps every series' detector state, and
the real slack-sdk client against the fake Slack. `kpiwatch replay KPI` runs over the same days.
Both must give the same verdict for every series and day and the same messages; and every
verdict the daemon reached by stepping stored states must be the one a fresh walk over the
history gives (`walk_forward`): a lost state costs only time.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fakeslack import FakeSlack

from alerts.daemon import Daemon
from forecaster.detect import walk_forward
from forecaster.kpis import kpi_series
from forecaster.pipeline import detector_of
from alerts.rehearsal import replay_kpi
from forecaster.schedule import Clock, moment_after
from forecaster.settings import Settings, load_config
from forecaster.sources import make_source
from forecaster.demo import DEMO_END, DEMO_TIMEZONE, INCIDENTS, QUIET_DAYS
from alerts.store import Store
from forecaster.types import segment_key

pytestmark = pytest.mark.slow

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "config" / "kpiwatch.yaml"
DAYS = 120
LAST = pd.Timestamp(DEMO_END, tz="UTC")
FIRST = LAST - pd.Timedelta(days=DAYS - 1)
PERIODS = pd.date_range(FIRST, LAST, freq="D")


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The demo config with a store of its own, no chart uploads (replay queues none), no health port."""
    demo = load_config(DEMO_CONFIG)
    folder = tmp_path_factory.mktemp("daemon")
    return demo.model_copy(update={
        "state": f"sqlite:///{folder / 'state.db'}",
        "alerting": demo.alerting.model_copy(update={"charts": False}),
        "daemon": demo.daemon.model_copy(update={"health_port": 0}),
    })


@pytest.fixture(scope="module")
def daemon_run(settings: Settings, monkeypatch_module: pytest.MonkeyPatch, replays_pending):
    """The daemon judging each of the 120 days the moment it is due; (store, messages posted)."""
    with FakeSlack() as slack:
        monkeypatch_module.setenv("SLACK_BOT_TOKEN", "xoxb-test")
        monkeypatch_module.setenv("SLACK_API_URL", slack.url)
        monkeypatch_module.delenv("SLACK_WEBHOOK_URL", raising=False)
        from alerts.slack import make_notifier

        daemon = Daemon(None, settings=settings)
        daemon.store = Store(settings.state_url)
        daemon.notifier = make_notifier()
        try:
            for name in settings.kpis:  # the ledger starts the day before the window, as replay's does
                daemon.store.set_judged(name, "", (FIRST - pd.Timedelta(days=1)).to_pydatetime())
            for period in PERIODS:
                daemon.clock = Clock(moment_after(period, "D", DEMO_TIMEZONE), speed=0.0)
                for name in settings.kpis:
                    daemon.judge_kpi(name)  # the scheduler's job: it logs failures instead of raising
                daemon.deliver_outbox(max_wait=5.0)
            posted = [m["text"] for channel in ("C0ALERTS", "C0PAID") for m in slack.messages(channel)
                      if not m.get("thread_ts")]
            yield daemon.store, posted
        finally:
            daemon.executor.close()
            daemon.store.close()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _replay_all(settings: Settings):
    """`kpiwatch replay KPI --from <first day>` for every KPI of the demo."""
    end = moment_after(LAST, "D", DEMO_TIMEZONE)
    return {name: replay_kpi(settings, name, None, FIRST - pd.Timedelta(days=1), end) for name in settings.kpis}


@pytest.fixture(scope="module")
def replays_pending(settings: Settings):
    """The replays, started in another process before the daemon runs (two cores, half the wait)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool.submit(_replay_all, settings)


@pytest.fixture(scope="module")
def replays(replays_pending, daemon_run):
    return replays_pending.result()


def _announced(key: str) -> tuple[str, str, pd.Timestamp]:
    """(kpi, segment, period) an alert key announces (a repeat's key carries its period last)."""
    parts = key.split("|")
    return parts[0], parts[1], pd.Timestamp(parts[5] if len(parts) > 5 else parts[2])


def verdicts(records) -> dict[tuple[str, str, pd.Timestamp], tuple[bool, float, float]]:
    """(kpi, segment, day) -> (anomalous, expected, score) for the days of the window."""
    return {(r.kpi, r.segment, pd.Timestamp(r.period)): (bool(r.anomalous), r.expected, r.score)
            for r in records if pd.Timestamp(r.period) >= FIRST}


def test_the_daemon_and_replay_reach_the_same_verdicts_and_messages(settings, daemon_run, replays) -> None:
    store, posted = daemon_run
    daemon = verdicts(r for kpi, segment in store.judged_series() for r in store.evaluations_of(kpi, segment))
    replayed = verdicts(r for rehearsal in replays.values() for r in rehearsal.records)
    assert len({(k, s) for k, s, _ in daemon}) == 62  # every series of the demo
    assert len(daemon) == 62 * DAYS
    assert daemon.keys() == replayed.keys()
    differing = [key for key in daemon if not _same(daemon[key], replayed[key])]
    assert differing == [], differing[:5]
    # The same episodes announced. The daemon's KPIs also join each other's open incidents (a reply
    # in the card's thread, not a card of their own) and repeat with them, which a replay of one
    # KPI cannot see; so the new alerts are compared, not the cards or their repeats.
    rows = [r for r in store.rows(limit=10**9) if r.kind in ("message", "reply") and r.payload.get("alert_keys")]
    announced = {_announced(key) for row in rows for key in row.payload["alert_keys"] if "|repeat|" not in key}
    assert announced == {a for rehearsal in replays.values() for a in rehearsal.first_announced}
    assert len(posted) == len([r for r in rows if r.kind == "message"]) > 0


def test_stepping_stored_states_gives_the_verdicts_of_a_fresh_walk(settings, daemon_run) -> None:
    store, _ = daemon_run
    source = make_source(settings.sources["default"], settings.timezone, "default")
    checked = 0
    for name, kpi in settings.kpis.items():
        frame = source.fetch(kpi.metrics, kpi.dimensions, kpi.freq, end=LAST)
        detector = detector_of(settings, kpi)
        for series in kpi_series(name, kpi, frame):
            fresh = {j.period: j for j in walk_forward(detector, series, FIRST)}
            for record in store.evaluations_of(name, segment_key(series.segment)):
                period = pd.Timestamp(record.period)
                if period < FIRST:
                    continue
                walked = fresh[period]
                assert bool(record.anomalous) == walked.is_anomaly, (series.label, period)
                assert np.isclose(record.expected if record.expected is not None else np.nan, walked.expected,
                                  equal_nan=True, rtol=1e-9), (series.label, period)
                checked += 1
    assert checked == 62 * DAYS


def test_the_demo_incidents_alert_in_replay_and_the_holidays_stay_quiet(replays) -> None:
    announced = {(kpi, segment, period.date()) for rehearsal in replays.values()
                 for kpi, segment, period in rehearsal.announced}
    for incident in INCIDENTS:
        days = {incident.start + timedelta(days=k) for k in range((incident.end - incident.start).days + 1)}
        for expected in incident.expected:
            hits = [day for kpi, segment, day in announced
                    if (kpi, segment) == (expected.kpi, segment_key(expected.segment)) and day in days]
            assert hits, f"incident {incident.number}: {expected} not announced in replay"
    quiet = {day for day, _ in QUIET_DAYS if FIRST.date() <= day <= LAST.date()}
    assert len(quiet) >= 2  # Black Friday and Cyber Monday 2025 lie in the window
    assert [a for a in announced if a[2] in quiet] == []


def _same(a: tuple[bool, float, float], b: tuple[bool, float, float]) -> bool:
    return a[0] == b[0] and bool(np.isclose(_num(a[1]), _num(b[1]), equal_nan=True, rtol=1e-9)) and bool(
        np.isclose(_num(a[2]), _num(b[2]), equal_nan=True, rtol=1e-9))


def _num(value: float | None) -> float:
    return np.nan if value is None else float(value)


def test_replay_is_quiet_over_the_2024_holiday_peaks(settings: Settings) -> None:
    """Black Friday to the Christmas days of 2024, each with an earlier year to learn from: the
    daemon's replay of every KPI announces nothing on them (2025's are in the 120 days above)."""
    first, last = pd.Timestamp("2024-11-28", tz="UTC"), pd.Timestamp("2024-12-27", tz="UTC")
    quiet = {day for day, _ in QUIET_DAYS if first.date() <= day <= last.date()}
    assert len(quiet) >= 5  # Black Friday, Cyber Monday, Christmas Eve, Christmas Day, Boxing Day
    end = moment_after(last, "D", DEMO_TIMEZONE)
    announced = {period.date() for name in settings.kpis
                 for _, _, period in replay_kpi(settings, name, None, first - pd.Timedelta(days=1), end).announced}
    assert announced & quiet == set()
