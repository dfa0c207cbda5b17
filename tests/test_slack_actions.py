"""Slack's interactivity endpoint (issue 19): the incident cards' buttons come back as signed
POSTs to /slack/actions on the daemon's health port. Only Slack's signed, fresh, first-seen
clicks on kpiwatch buttons reach `on_click`; everything else is refused with a status that says
why, and the daemon goes on serving /healthz."""

from __future__ import annotations

import http.client
import json
import logging
import sys
import threading
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from daemon_kit import daemon_in_process, free_port, job_lines, soon
from slackclicks import SECRET, click_body, click_payload, form, healthz, post, signed

import alerts.actions
from alerts.actions import MAX_BODY, Click, SlackActions
from forecaster.types import BadInputError, KPIWatchError

NOW = 1_765_350_000.0  # Slack's timestamps are epoch seconds of the wall clock
INCIDENT = "conversion_rate|device=mobile|2025-12-10|down"

CONFIG = """
timezone: UTC
state: sqlite:///{state}
sources: {{files: {{type: csv, path: "{path}", timestamp: day}}}}
alerting: {{routes: [{{channel: "#kpi-alerts"}}]}}
daemon: {{health_port: {port}, log_format: json}}
kpis:
  leads: {{metric: leads, source: files, model: ets}}
"""


class Recorder:
    """An on_click that records its clicks (and raises `error` when given)."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.clicks: list[Click] = []
        self.error = error

    def __call__(self, click: Click) -> str:
        self.clicks.append(click)
        if self.error is not None:
            raise self.error
        return f"marked {click.verdict.replace('_', ' ')} by @{click.user_name}"


def endpoint(on_click: Recorder, now: float = NOW) -> SlackActions:
    return SlackActions(SECRET, on_click, clock=lambda: now)


@contextmanager
def action_lines() -> Iterator[list[logging.LogRecord]]:
    """The records `alerts.actions` logs while inside (its own handler: `kpiwatch run` in this
    process stops propagation at the `kpiwatch` logger)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("kpiwatch.actions")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# -- the handler on its own ----------------------------------------------------------------------


@pytest.mark.parametrize("action_id, verdict", [("kpiwatch_expected", "expected"),
                                                ("kpiwatch_false_alarm", "false_alarm"),
                                                ("kpiwatch_snooze", "snooze"), ("kpiwatch_resolve", "resolve")])
def test_a_signed_click_calls_on_click_once_with_the_click(action_id, verdict):
    on_click = Recorder()
    body = click_body(INCIDENT, action_id)
    with action_lines() as lines:
        status, answer = endpoint(on_click).handle(body, signed(body, timestamp=NOW - 10))
    assert status == 200, answer
    assert on_click.clicks == [Click(incident=INCIDENT, verdict=verdict, user_id="U0ANA", user_name="ana",
                                     channel_id="C0ALERTS", message_ts="1765350000.000100")]
    assert json.loads(answer)["text"] == f"marked {verdict.replace('_', ' ')} by @ana"
    [line] = lines
    fields = line.fields  # type: ignore[attr-defined]
    assert (fields["outcome"], fields["status"], fields["verdict"], fields["incident"], fields["user"]) == (
        "accepted", 200, verdict, INCIDENT, "ana")


def test_headers_are_case_insensitive_and_a_button_block_may_carry_a_suffix():
    on_click = Recorder()
    body = click_body(block_id="kpiwatch-feedback|2")
    headers = {k.lower(): v for k, v in signed(body, timestamp=NOW).items()}
    assert endpoint(on_click).handle(body, headers)[0] == 200 and len(on_click.clicks) == 1


def _payload(**changes: object) -> bytes:
    payload = click_payload(INCIDENT)
    payload.update(changes)
    return form(payload)


def _action(**changes: object) -> bytes:
    payload = click_payload(INCIDENT)
    payload["actions"][0].update(changes)
    return form(payload)


REFUSED = {  # name: (body, how it is signed: secret and age in seconds, or None: no headers), status
    "bad signature": (click_body(), ("another-secret", 0), 401),
    "stale timestamp": (click_body(), (SECRET, 301), 401),
    "timestamp from the future": (click_body(), (SECRET, -301), 401),
    "no signature headers": (click_body(), None, 401),
    "not a form": (b'{"type": "block_actions"}', (SECRET, 0), 400),
    "no payload": (b"token=x&team_id=T000", (SECRET, 0), 400),
    "payload not JSON": (b"payload=%7Bnot+json", (SECRET, 0), 400),
    "payload not an object": (form([1, 2]), (SECRET, 0), 400),
    "not block_actions": (_payload(type="view_submission"), (SECRET, 0), 400),
    "no actions": (_payload(actions=[]), (SECRET, 0), 400),
    "unknown action_id": (_action(action_id="approve_deploy"), (SECRET, 0), 400),
    "another app's block": (_action(block_id="deploys"), (SECRET, 0), 400),
    "no value": (_action(value=""), (SECRET, 0), 400),
    "value too long": (_action(value="x" * 2001), (SECRET, 0), 400),
    "no user": (_payload(user=None), (SECRET, 0), 400),
    "no channel or message": (_payload(container={"type": "view"}, channel=None, message=None), (SECRET, 0), 400),
    "not UTF-8 (Slack signs text)": (b"payload=\xff\xfe", (SECRET, 0), 401),
    "too large": (click_body(incident="x" * MAX_BODY), (SECRET, 0), 413),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_requests_never_reach_on_click(name):
    body, signing, status = REFUSED[name]
    headers = {} if signing is None else signed(body, signing[0], timestamp=NOW - signing[1])
    on_click = Recorder()
    with action_lines() as lines:
        got, answer = endpoint(on_click).handle(body, headers)
    assert (got, on_click.clicks) == (status, []), answer
    assert answer.endswith(b"\n") and answer.count(b"\n") == 1  # one line, no traceback
    [line] = lines
    assert line.fields["outcome"] == "refused" and line.fields["status"] == status  # type: ignore[attr-defined]


@pytest.mark.parametrize("timestamp", ["", "1765350000.5", "abc", "-1"])
def test_a_timestamp_that_is_not_unix_seconds_is_refused(timestamp):
    body = click_body()
    headers = {**signed(body, timestamp=NOW), "X-Slack-Request-Timestamp": timestamp}
    assert endpoint(Recorder()).handle(body, headers)[0] == 401


def test_a_replayed_request_is_refused_and_a_new_click_is_not():
    on_click = Recorder()
    actions = endpoint(on_click)
    body = click_body()
    headers = signed(body, timestamp=NOW - 5)
    assert actions.handle(body, headers)[0] == 200
    status, answer = actions.handle(body, dict(headers))
    assert status == 401 and b"replayed" in answer
    again = click_body(action_id="kpiwatch_resolve")  # the same user's next click, same second
    assert actions.handle(again, signed(again, timestamp=NOW - 5))[0] == 200
    assert [c.verdict for c in on_click.clicks] == ["false_alarm", "resolve"]


def test_the_replay_record_forgets_what_has_expired_and_stays_bounded(monkeypatch):
    now = [NOW]
    actions = SlackActions(SECRET, Recorder(), clock=lambda: now[0])
    for i in range(5):
        body = click_body(f"incident-{i}")
        assert actions.handle(body, signed(body, timestamp=now[0]))[0] == 200
    now[0] += 301  # those five are stale now: refused by their timestamp, no need to remember them
    body = click_body("later")
    assert actions.handle(body, signed(body, timestamp=now[0]))[0] == 200
    assert len(actions._seen) == 1
    monkeypatch.setattr(alerts.actions, "MAX_SEEN", 3)
    for i in range(6):
        body = click_body(f"burst-{i}")
        assert actions.handle(body, signed(body, timestamp=now[0]))[0] == 200
        assert len(actions._seen) <= 3


@pytest.mark.parametrize("error", [BadInputError("unknown incident 'x': it may have been deleted"),
                                   KPIWatchError("the store is read-only")])
def test_a_click_kpiwatch_cannot_take_answers_200_with_why(error):
    body = click_body()
    with action_lines() as lines:
        status, answer = endpoint(Recorder(error)).handle(body, signed(body, timestamp=NOW))
    assert status == 200
    reply = json.loads(answer)
    assert reply["response_type"] == "ephemeral" and reply["replace_original"] is False
    assert str(error) in reply["text"]
    assert lines[0].fields["outcome"] == "refused" and lines[0].fields["reason"] == str(error)  # type: ignore[attr-defined]


def test_a_bug_in_on_click_answers_500_without_a_traceback_and_logs_it():
    body = click_body()
    with action_lines() as lines:
        status, answer = endpoint(Recorder(ZeroDivisionError("boom"))).handle(body, signed(body, timestamp=NOW))
    assert status == 500 and b"Traceback" not in answer and answer.count(b"\n") == 1
    assert lines[0].exc_info is not None  # the traceback goes to the log, for a bug report


def test_the_log_never_shows_the_signature_or_the_secret():
    body = click_body()
    headers = signed(body, timestamp=NOW)
    actions = endpoint(Recorder())
    with action_lines() as lines:
        actions.handle(body, headers)
        actions.handle(body, headers)  # replay
        actions.handle(body, {**headers, "X-Slack-Signature": "v0=" + "0" * 64})
    shown = " ".join(f"{r.getMessage()} {r.fields}" for r in lines)  # type: ignore[attr-defined]
    assert len(lines) == 3
    assert headers["X-Slack-Signature"] not in shown and SECRET not in shown and "legacy-verification" not in shown


def test_an_empty_signing_secret_is_refused():
    with pytest.raises(ValueError, match="Signing Secret"):
        SlackActions("  ", Recorder())


# -- through the daemon's HTTP server --------------------------------------------------------------


def write_config(tmp_path) -> tuple:
    port = free_port()
    config = tmp_path / "kpiwatch.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state.db", path=tmp_path / "leads.csv", port=port))
    return config, port


@contextmanager
def serving(tmp_path) -> Iterator[tuple]:
    config, port = write_config(tmp_path)
    with daemon_in_process(config, "2025-12-10") as daemon:
        daemon._start_health()
        try:
            yield daemon, port
        finally:
            daemon._stop_health()


def test_the_daemon_takes_a_signed_click_and_refuses_the_rest_then_keeps_serving(tmp_path, monkeypatch):
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SECRET)
    on_click = Recorder()
    with serving(tmp_path) as (daemon, port):
        daemon.on_click = on_click
        body = click_body(INCIDENT, "kpiwatch_snooze")
        headers = signed(body)  # the daemon's endpoint uses the wall clock
        status, answer = post(port, body, headers)
        assert status == 200, answer
        assert json.loads(answer)["text"] == "marked snooze by @ana"
        assert post(port, body, headers)[0] == 401  # the same request again
        assert post(port, body, signed(body, "wrong-secret"))[0] == 401
        assert post(port, body, signed(body, timestamp=time.time() - 3600))[0] == 401  # an hour old
        malformed = form({"type": "block_actions", "actions": []})
        assert post(port, malformed, signed(malformed))[0] == 400
        big = click_body("x" * (2 * MAX_BODY))
        status, answer = post(port, big, signed(big))
        assert status == 413 and b"over the limit" in answer
        assert post(port, body, signed(body), path="/slack/other")[0] == 404
        assert healthz(port) == 200
    assert [(c.incident, c.verdict) for c in on_click.clicks] == [(INCIDENT, "snooze")]


def test_a_body_far_over_the_limit_is_refused_unread(tmp_path, monkeypatch):
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SECRET)
    on_click = Recorder()
    with serving(tmp_path) as (daemon, port):
        daemon.on_click = on_click
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.putrequest("POST", "/slack/actions")  # announces 50 MB, sends none of it
        connection.putheader("Content-Length", str(50 * 1024 * 1024))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413
        connection.close()
        assert healthz(port) == 200
    assert on_click.clicks == []


def test_without_a_signing_secret_the_route_answers_404_and_start_says_how_to_turn_it_on(tmp_path, monkeypatch):
    monkeypatch.delenv("SLACK_SIGNING_SECRET", raising=False)
    with job_lines("Slack buttons off: POST /slack/actions answers 404; to turn them on, set SLACK_SIGNING_SECRET "
                   "to the Slack app's Signing Secret and its Interactivity Request URL to "
                   "https://<this host>/slack/actions (README: Slack buttons)") as off:
        with serving(tmp_path) as (daemon, port):
            daemon.on_click = Recorder()
            body = click_body()
            status, answer = post(port, body, signed(body))
            assert healthz(port) == 200
    assert status == 404 and answer.count(b"\n") == 1 and b"SLACK_SIGNING_SECRET" in answer
    assert len(off) == 1 and daemon.on_click.clicks == []


def test_on_click_records_through_feedback_and_wakes_delivery(tmp_path, monkeypatch):
    """The daemon's own on_click: `alerts.feedback.apply_click(store, settings, click, now)` (the
    lead's module, faked here), then the delivery job is asked to run now, in the scheduler."""
    calls = []
    fake = types.ModuleType("alerts.feedback")
    fake.apply_click = lambda store, settings, click, now: calls.append((store, settings, click, now)) or "noted"
    monkeypatch.setitem(sys.modules, "alerts.feedback", fake)
    config, _ = write_config(tmp_path)
    click = Click(INCIDENT, "resolve", "U0ANA", "ana", "C0ALERTS", "1765350000.000100")
    with daemon_in_process(config, "2025-12-10T08:00:00Z") as daemon:
        delivered = threading.Event()
        daemon.scheduler.add_job(delivered.set, "interval", seconds=3600, id="deliver")
        runner = threading.Thread(target=daemon.scheduler.start, daemon=True)
        runner.start()
        try:
            assert soon(lambda: daemon.scheduler.running, 10, 0.005)
            assert daemon.on_click(click) == "noted"
            assert delivered.wait(10)  # not an hour: run now
            assert runner is not threading.current_thread()
        finally:
            daemon.scheduler.shutdown(wait=False)
            runner.join(10)
        [(store, settings, got, now)] = calls
        assert store is daemon.store and settings is daemon.settings and got == click
        assert now.isoformat() == "2025-12-10T08:00:00+00:00"


@pytest.mark.parametrize("header, value, status", [("Transfer-Encoding", "chunked", 411),
                                                   ("Content-Length", "-5", 400), ("Content-Length", "ten", 400)])
def test_a_body_of_unknown_length_is_refused(tmp_path, monkeypatch, header, value, status):
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SECRET)
    with serving(tmp_path) as (daemon, port):
        daemon.on_click = on_click = Recorder()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.putrequest("POST", "/slack/actions")
        connection.putheader(header, value)
        connection.endheaders()
        assert connection.getresponse().status == status
        connection.close()
        assert healthz(port) == 200
    assert on_click.clicks == []
