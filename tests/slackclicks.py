"""Signed Slack button clicks, as Slack sends them to an app's interactivity Request URL, for
tests: a form body `payload=<block_actions JSON>` and the two signing headers.

    body = click_body("leads|2025-12-10|down", "kpiwatch_false_alarm")
    headers = signed(body, SECRET, timestamp=now)     # X-Slack-Request-Timestamp, X-Slack-Signature

The signature is built the way Slack documents it (v0= + HMAC-SHA256 of `v0:{timestamp}:{body}`
with the app's signing secret), independently of slack-sdk's SignatureVerifier, which the code
under test uses. Import it as `from slackclicks import ...` (tests/ is on sys.path).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlencode

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # Slack's documentation's example secret (not a real one)


def signature(body: bytes, secret: str, timestamp: int | str) -> str:
    """`v0=<hex>`: HMAC-SHA256 of `v0:{timestamp}:{body}` with `secret`."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def signed(body: bytes, secret: str = SECRET, timestamp: float | None = None) -> dict[str, str]:
    """The headers Slack sends with `body`, signed at `timestamp` (default: now)."""
    ts = str(int(time.time() if timestamp is None else timestamp))
    return {"Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": signature(body, secret, ts)}


def click_payload(incident: str = "leads||2025-12-10|down", action_id: str = "kpiwatch_false_alarm",
                  user_id: str = "U0ANA", user_name: str = "ana", channel_id: str = "C0ALERTS",
                  message_ts: str = "1765350000.000100", block_id: str = "kpiwatch-feedback") -> dict[str, Any]:
    """A `block_actions` payload of one button press on an incident card (trimmed to what Slack
    always sends for a message button)."""
    return {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": "T000"},
        "api_app_id": "A0KPIWATCH",
        "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel_id, "is_ephemeral": False},
        "trigger_id": "123.456.abc",
        "team": {"id": "T000", "domain": "shop"},
        "channel": {"id": channel_id, "name": "kpi-alerts"},
        "message": {"type": "message", "ts": message_ts, "text": "kpiwatch: 1 anomaly"},
        "response_url": "https://hooks.slack.com/actions/T000/1/xyz",
        "actions": [{"type": "button", "action_id": action_id, "block_id": block_id, "value": incident,
                     "text": {"type": "plain_text", "text": "False alarm"}, "action_ts": "1765350001.000200"}],
    }


def form(payload: Any) -> bytes:
    """`payload=<json>`, form-encoded as Slack posts it."""
    return urlencode({"payload": json.dumps(payload)}).encode()


def click_body(incident: str = "leads||2025-12-10|down", action_id: str = "kpiwatch_false_alarm",
               **fields: str) -> bytes:
    """The form body of one button press (see `click_payload` for the fields)."""
    return form(click_payload(incident, action_id, **fields))


def post(port: int, body: bytes, headers: dict[str, str], path: str = "/slack/actions") -> tuple[int, bytes]:
    """POST `body` to the daemon's health server on 127.0.0.1:`port`; (status, answer), errors included."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def healthz(port: int) -> int:
    """The status of GET /healthz on 127.0.0.1:`port`."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
        return response.status
