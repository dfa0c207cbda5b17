"""Slack's interactivity endpoint: the buttons of an incident card (*Expected*, *False alarm*,
*Snooze 7 days*, *Resolve*) come back here as signed HTTP POSTs.

`SlackActions.handle(body, headers)` checks a request and turns a click into a `Click` for
`on_click` (which records it and queues the card's update in the outbox; it never calls Slack,
so the answer leaves well within Slack's 3 seconds). The daemon serves it at `POST
/slack/actions` on its health port (`alerts.daemon`); it is plain bytes in, status and bytes out,
so it needs no web framework and tests call it directly.

Status codes:
- 200: a click recorded, or refused by kpiwatch itself (an unknown incident: `KPIWatchError`);
  the request was genuine and well-formed, so it is not a 4xx (see `handle`).
- 400: signed by Slack but not a click on a kpiwatch button (not a form, no `payload`, bad JSON,
  not `block_actions`, no action, an unknown `action_id`, fields missing).
- 401: not provably from Slack: signature missing or wrong, timestamp missing, not a number or
  more than 5 minutes off, or a replay of a request already taken.
- 413: a body over `max_body` bytes (a click is about 3 KB).
- 500: a bug in `on_click` (its traceback goes to the log, never to the client).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from slack_sdk.signature import Clock as _SlackClock
from slack_sdk.signature import SignatureVerifier

from forecaster.types import KPIWatchError

log = logging.getLogger("kpiwatch.actions")

BLOCK_ID = "kpiwatch-feedback"  # the card's actions block (a prefix: "kpiwatch-feedback|2" too)
VERDICTS = {
    "kpiwatch_expected": "expected",
    "kpiwatch_false_alarm": "false_alarm",
    "kpiwatch_snooze": "snooze",
    "kpiwatch_resolve": "resolve",
}
MAX_BODY = 64 * 1024  # bytes; a block_actions payload with the whole card in it is a few KB
MAX_VALUE = 2000  # Slack's limit on a button's value: the incident's key
TOLERANCE_SECONDS = 5 * 60  # what SignatureVerifier allows between Slack's timestamp and ours
MAX_SEEN = 10_000  # requests remembered against replay (each ~150 bytes)


@dataclass(frozen=True)
class Click:
    """One press of a kpiwatch button on an incident card."""

    incident: str  # the incident's key (the button's value)
    verdict: str  # "expected" | "false_alarm" | "snooze" | "resolve"
    user_id: str  # Slack user ID, e.g. "U0123ABCD"
    user_name: str  # their Slack username (the ID when the payload has none)
    channel_id: str  # the card's channel ID
    message_ts: str  # the card's ts


class Refused(Exception):
    """A request this endpoint answers with `status` and a one-line reason (internal)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _WallClock(_SlackClock):
    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now

    def now(self) -> float:
        return self._now()


class SlackActions:
    """Verify, parse and dispatch Slack's interaction requests (thread-safe: the HTTP server
    calls `handle` from a thread per request).

    signing_secret: the Slack app's Signing Secret (Basic Information > App Credentials).
    on_click: records a click and returns the line to show (e.g. "marked false alarm by @ana");
    it may raise `KPIWatchError` (an unknown incident). clock: epoch seconds, default
    `time.time`: the wall clock, as Slack's timestamps are (not the daemon's simulated clock).
    max_body: the largest body taken, in bytes (default 64 KiB).
    """

    def __init__(self, signing_secret: str, on_click: Callable[[Click], str],
                 clock: Callable[[], float] = time.time, max_body: int = MAX_BODY) -> None:
        if not signing_secret.strip():
            raise ValueError("signing_secret must not be empty: give the Slack app's Signing Secret")
        self._verifier = SignatureVerifier(signing_secret, clock=_WallClock(clock))
        self._on_click = on_click
        self._clock = clock
        self.max_body = max_body
        # Requests already taken, (timestamp, signature) -> Slack's timestamp, for replay refusal.
        # In memory is enough: a request is only valid for TOLERANCE_SECONDS after Slack signed
        # it (the verifier refuses older ones), so a record only needs to outlive that window,
        # and only one daemon serves a store (the store lock). A restart forgets the record, so
        # a request captured in the 5 minutes before it could be replayed once; capturing one
        # needs the TLS proxy's traffic, and a replayed click only repeats a verdict its user
        # gave. Only requests with a valid signature are recorded, so strangers cannot fill it;
        # MAX_SEEN bounds it all the same (oldest forgotten first).
        self._seen: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def handle(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        """One request: (HTTP status, body). Never raises; one log line per request.

        A click `on_click` refuses (`KPIWatchError`, e.g. an unknown incident) answers 200 with
        `{"response_type": "ephemeral", "replace_original": false, "text": why}`: the request
        was genuine and well-formed, so a 4xx would say the wrong thing (and Slack shows only
        "responded with 400", not why); 4xx stay for requests that are not Slack's or not ours.
        """
        started = time.monotonic()
        fields: dict[str, Any] = {}
        try:
            if len(body) > self.max_body:
                raise Refused(413, f"body of {len(body)} bytes is over the limit of {self.max_body}")
            self._verify(body, headers)
            click = parse_click(body)
            fields.update(verdict=click.verdict, incident=_short(click.incident), user=click.user_name,
                          user_id=click.user_id, channel=click.channel_id)
            try:
                line = self._on_click(click)
            except KPIWatchError as exc:
                self._log(logging.WARNING, "refused", 200, started, fields, reason=str(exc))
                return 200, _json({"response_type": "ephemeral", "replace_original": False,
                                   "text": f"kpiwatch did not record this: {exc}"})
        except Refused as refused:
            self._log(logging.WARNING, "refused", refused.status, started, fields, reason=refused.reason)
            return refused.status, f"{refused.reason}\n".encode()
        except Exception:  # noqa: BLE001 - a bug in on_click: logged with its traceback, the server goes on
            log.exception("Slack action failed", extra={"fields": {**fields, "status": 500}})
            return 500, b"kpiwatch failed to record this click; see its log\n"
        self._log(logging.INFO, "accepted", 200, started, fields)
        return 200, _json({"response_type": "ephemeral", "replace_original": False, "text": line})

    def too_large(self, length: int) -> tuple[int, bytes]:
        """The answer to a request whose Content-Length is over `max_body`, for a server that
        refuses it before reading the body."""
        reason = f"body of {length} bytes is over the limit of {self.max_body}"
        self._log(logging.WARNING, "refused", 413, time.monotonic(), {}, reason=reason)
        return 413, f"{reason}\n".encode()

    def _verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        """Slack's signature over the body, a timestamp within 5 minutes, and not seen before."""
        lower = {k.lower(): v for k, v in headers.items()}
        timestamp, signature = lower.get("x-slack-request-timestamp"), lower.get("x-slack-signature")
        if not timestamp or not signature:
            raise Refused(401, "not signed: X-Slack-Request-Timestamp and X-Slack-Signature are required")
        if not timestamp.isdigit():  # SignatureVerifier would raise on int() of it
            raise Refused(401, "X-Slack-Request-Timestamp is not a Unix time")
        sent = int(timestamp)
        if abs(self._clock() - sent) > TOLERANCE_SECONDS:
            raise Refused(401, "stale: X-Slack-Request-Timestamp is more than 5 minutes from this "
                               "machine's clock (a replay, or a clock that needs NTP)")
        try:
            valid = self._verifier.is_valid(body, timestamp, signature)
        except UnicodeDecodeError:  # the verifier signs the body as UTF-8 text; Slack's always is
            valid = False
        if not valid:
            raise Refused(401, "bad signature: check SLACK_SIGNING_SECRET (the Slack app's Signing Secret)")
        self._remember((timestamp, signature), sent)

    def _remember(self, key: tuple[str, str], sent: int) -> None:
        with self._lock:
            horizon = self._clock() - TOLERANCE_SECONDS
            if len(self._seen) >= MAX_SEEN or (self._seen and next(iter(self._seen.values())) < horizon):
                self._seen = {k: t for k, t in self._seen.items() if t >= horizon}
                while len(self._seen) >= MAX_SEEN:  # still full of fresh ones: the oldest go
                    del self._seen[min(self._seen, key=self._seen.__getitem__)]
            if key in self._seen:
                raise Refused(401, "replayed: this request (timestamp and signature) was already taken")
            self._seen[key] = sent

    def _log(self, level: int, outcome: str, status: int, started: float, fields: Mapping[str, Any],
             **more: Any) -> None:
        seconds = round(time.monotonic() - started, 3)
        log.log(level, "slack action", extra={"fields": {"outcome": outcome, "status": status, **fields, **more,
                                                         "seconds": seconds}})


def parse_click(body: bytes) -> Click:
    """The click in a `block_actions` form body (`payload=<json>`); `Refused(400)` otherwise."""
    try:
        form = parse_qs(body.decode("utf-8"), strict_parsing=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise Refused(400, "not a form body (application/x-www-form-urlencoded)") from None
    raw = form.get("payload")
    if not raw or len(raw) != 1:
        raise Refused(400, "no payload field: not a Slack interaction")
    try:
        payload = json.loads(raw[0])
    except ValueError:
        raise Refused(400, "payload is not JSON") from None
    if not isinstance(payload, dict):
        raise Refused(400, "payload is not a JSON object")
    if payload.get("type") != "block_actions":
        raise Refused(400, f"interaction type {_short(str(payload.get('type')), 40)!r} is not handled "
                           "(only block_actions: the incident card's buttons)")
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
        raise Refused(400, "block_actions without actions")
    action = actions[0]  # a button press carries exactly one
    action_id, block_id, value = action.get("action_id"), action.get("block_id"), action.get("value")
    if action_id not in VERDICTS:
        raise Refused(400, f"unknown action_id {_short(str(action_id), 60)!r}: not a kpiwatch button")
    if not isinstance(block_id, str) or not block_id.startswith(BLOCK_ID):
        raise Refused(400, f"block_id {_short(str(block_id), 60)!r} is not kpiwatch's ({BLOCK_ID})")
    if not isinstance(value, str) or not value or len(value) > MAX_VALUE:
        raise Refused(400, f"the button's value must be an incident key of 1 to {MAX_VALUE} characters")
    user = _object(payload, "user")
    container = _object(payload, "container")
    channel = payload.get("channel") if isinstance(payload.get("channel"), dict) else {}
    message = payload.get("message") if isinstance(payload.get("message"), dict) else {}
    user_id = _text(user.get("id"))
    channel_id = _text(container.get("channel_id")) or _text(channel.get("id"))
    message_ts = _text(container.get("message_ts")) or _text(message.get("ts"))
    if not user_id or not channel_id or not message_ts:
        raise Refused(400, "block_actions without the user, channel or message it came from")
    user_name = _text(user.get("username")) or _text(user.get("name")) or user_id
    return Click(incident=value, verdict=VERDICTS[action_id], user_id=user_id, user_name=user_name,
                 channel_id=channel_id, message_ts=message_ts)


def _object(payload: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    found = payload.get(name)
    if not isinstance(found, dict):
        raise Refused(400, f"block_actions without {name}")
    return found


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _short(text: str, limit: int = 200) -> str:
    """A field as the log shows it: an incident key may be 2,000 characters."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json(obj: Any) -> bytes:
    return json.dumps(obj).encode()
