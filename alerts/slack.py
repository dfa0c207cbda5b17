"""Slack transport: a bot (Web API through slack-sdk's WebClient) or an incoming webhook.

Thin on purpose: each call is one Slack request, and every failure becomes one `SlackError` that
says whether retrying can help (`permanent`), how long to wait (`retry_after`) and whether the
request may already have taken effect (`unknown_outcome`). Retrying, deduplication and backoff
belong to the delivery step (`alerts/delivery.py`), which is why slack-sdk's own retry handlers
are removed here: its connection-error handler re-sends chat.postMessage after a dropped
connection, and a dropped connection after Slack accepted the message is exactly the case where
re-sending posts the alert twice. Instead, every message carries its alert key in Slack message
metadata, and `SlackBot.find_by_key` settles a send whose outcome is unknown.

Callers check the capability flags (`supports_threads`, `supports_files`, `can_look_up`) before
calling `update`, `upload_chart` or relying on `find_by_key`: a webhook can only post.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.error import HTTPError, URLError
from urllib.parse import quote, unquote, urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError, SlackRequestError
from slack_sdk.webhook import WebhookClient

from forecaster.types import KPIWatchError

METADATA_EVENT = "kpiwatch_alert"
"""Slack message-metadata event_type of every alert kpiwatch posts; the payload is {"key": key}."""

DEFAULT_TIMEOUT = 10.0
"""Seconds to wait for Slack to answer one request."""

# Slack answers ok:false with these when the fault is on its side or momentary: retrying can help.
TRANSIENT_CODES = frozenset(
    {"ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable",
     "request_timeout", "team_added_to_org"}
)
# Slack's docs say the operation may partly have happened before these were raised.
MAYBE_DONE_CODES = frozenset({"internal_error", "fatal_error"})
# Known to need a person (config, token, app scopes) or a code fix; any other ok:false is permanent too.
PERMANENT_CODES = frozenset(
    {"channel_not_found", "not_in_channel", "is_archived", "invalid_auth", "not_authed",
     "account_inactive", "token_revoked", "token_expired", "no_permission", "missing_scope",
     "not_allowed_token_type", "restricted_action", "invalid_blocks", "invalid_blocks_format",
     "invalid_arguments", "invalid_arg_name", "msg_too_long", "no_text", "invalid_metadata_format",
     "invalid_metadata_schema", "metadata_too_large", "message_not_found", "cant_update_message",
     "edit_window_closed", "thread_not_found", "invalid_cursor", "no_service", "invalid_token",
     "invalid_payload", "channel_is_archived", "action_prohibited", "posting_to_general_channel_denied"}
)
_TOKEN_HINT = "check SLACK_BOT_TOKEN: it must be the bot token (xoxb-...) of an installed Slack app"
_BUG_HINT = "kpiwatch built a message Slack rejects; please report it with the alert"
HINTS = {
    "channel_not_found": "invite the bot to the channel or fix `channel` in the config",
    "not_in_channel": "invite the bot to the channel (/invite @your-bot) or fix `channel` in the config",
    "is_archived": "the channel is archived: unarchive it or fix `channel` in the config",
    "channel_is_archived": "the channel is archived: unarchive it or create a new webhook",
    "invalid_auth": _TOKEN_HINT,
    "not_authed": _TOKEN_HINT,
    "account_inactive": _TOKEN_HINT,
    "token_revoked": _TOKEN_HINT,
    "token_expired": _TOKEN_HINT,
    "not_allowed_token_type": _TOKEN_HINT,
    "missing_scope": "add the missing scope to the Slack app and reinstall it",
    "restricted_action": "a workspace setting stops the bot posting there; ask a Slack admin",
    "invalid_blocks": _BUG_HINT,
    "invalid_blocks_format": _BUG_HINT,
    "invalid_arguments": _BUG_HINT,
    "msg_too_long": _BUG_HINT,
    "no_text": _BUG_HINT,
    "invalid_metadata_format": _BUG_HINT,
    "invalid_payload": _BUG_HINT,
    "no_service": "the webhook is disabled or the URL is wrong: create a new one, set SLACK_WEBHOOK_URL",
    "invalid_token": "the webhook URL is no longer valid: create a new one, set SLACK_WEBHOOK_URL",
}
_CODE = re.compile(r"^[a-z][a-z0-9_]{0,60}$")  # Slack error strings; anything else is not one


class SlackError(KPIWatchError):
    """Slack refused a request or could not be reached. One line for a person; fields for code.

    code: Slack's error string ("channel_not_found", "ratelimited", ...), or "http_<status>",
    or "connection". permanent: retrying the same request cannot help. retry_after: seconds Slack
    asked to wait (HTTP 429), else None. unknown_outcome: the request may have reached Slack and
    taken effect (connection lost after sending, 5xx, internal_error): before re-posting, look
    the message up (`find_by_key`). Exit code 3.
    """

    exit_code = 3

    def __init__(
        self,
        message: str,
        *,
        code: str,
        permanent: bool,
        retry_after: float | None = None,
        unknown_outcome: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.permanent = permanent
        self.retry_after = retry_after
        self.unknown_outcome = unknown_outcome


def classify(exc: Exception, method: str, channel: str = "") -> SlackError:
    """The `SlackError` for a failed Slack request `method` (e.g. "chat.postMessage") to `channel`.

    HTTP 429 -> transient with retry_after; HTTP 5xx -> transient, outcome unknown; ok:false ->
    transient for TRANSIENT_CODES, else permanent; connection lost or timed out -> transient with
    unknown_outcome (refused or unresolvable: transient, surely not sent).
    """
    if isinstance(exc, SlackError):
        return exc
    where = f"{method} to {channel}" if channel else method
    if isinstance(exc, SlackApiError):
        response = exc.response
        data = response.data if isinstance(response.data, dict) else {}
        return _from_status(int(response.status_code), data.get("error"), response.headers, where, data)
    if isinstance(exc, HTTPError):  # files_upload_v2's upload step raises urllib's error directly
        return _from_status(exc.code, None, dict(exc.headers.items()), where, {})
    if isinstance(exc, SlackRequestError):  # slack-sdk refused to build or finish the request
        return SlackError(f"Slack {where} failed: {_one_line(exc)}", code="request_error", permanent=True)
    if isinstance(exc, URLError | ConnectionError | TimeoutError | http.client.HTTPException):
        reason = exc.reason if isinstance(exc, URLError) else exc
        never_sent = isinstance(reason, ConnectionRefusedError | socket.gaierror)
        detail = f"{type(reason).__name__}: {_one_line(reason)}" if str(reason) else type(reason).__name__
        outcome = "it was not sent" if never_sent else "it may have been sent"
        return SlackError(
            f"Could not reach Slack for {where} ({detail}); {outcome}",
            code="connection",
            permanent=False,
            unknown_outcome=not never_sent,
        )
    return SlackError(f"Slack {where} failed: {_one_line(exc)}", code="unexpected", permanent=True)


def _from_status(
    status: int, error: object, headers: Mapping[str, Any], where: str, data: Mapping[str, Any]
) -> SlackError:
    code = str(error) if isinstance(error, str) and _CODE.match(error) else f"http_{status}"
    if status == 429:
        wait = _retry_after(headers)
        after = f" (retry after {wait:g} s)" if wait is not None else ""
        return SlackError(
            f"Slack rate-limited {where}{after}", code="ratelimited", permanent=False, retry_after=wait
        )
    if status >= 500:
        return SlackError(
            f"Slack answered HTTP {status} to {where} (a fault on Slack's side; retry later)",
            code=f"http_{status}",
            permanent=False,
            unknown_outcome=True,
        )
    if status == 200 and code in TRANSIENT_CODES:
        return SlackError(
            f"Slack could not complete {where} for now: {code} (retry later)",
            code=code,
            permanent=False,
            retry_after=_retry_after(headers),
            unknown_outcome=code in MAYBE_DONE_CODES,
        )
    hint = HINTS.get(code, "")
    if code == "missing_scope" and data.get("needed"):
        hint = f"add the scope {data['needed']} to the Slack app and reinstall it"
    return SlackError(
        f"Slack refused {where}: {code}" + (f" ({hint})" if hint else ""), code=code, permanent=True
    )


def _retry_after(headers: Mapping[str, Any]) -> float | None:
    """Seconds from a Retry-After header (any case; slack-sdk may give a list), else None."""
    for name, value in headers.items():
        if name.lower() == "retry-after":
            raw = value[0] if isinstance(value, list | tuple) and value else value
            try:
                return max(0.0, float(raw))
            except (TypeError, ValueError):
                return None
    return None


def _one_line(obj: object) -> str:
    return " ".join(str(obj).split())


class Redactor:
    """Masks the configured Slack secrets (the bot token, a webhook URL's path) in a text.

    Every error, dead letter and log line the Slack transport produces goes through one, so a
    secret is never echoed: slack-sdk and urllib put the URL or its path in their messages
    ("Invalid URL detected: htps://hooks.slack.com/services/T.../B.../...", "URL can't contain
    control characters. '/services/...'"). Each secret is also masked as it appears quoted,
    unquoted and escaped (repr), and a webhook URL's path segments one by one (an error may
    show only part of the path).
    """

    def __init__(self, replacements: Mapping[str, str] | None = None) -> None:
        variants: dict[str, str] = {}
        for secret, shown in (replacements or {}).items():
            for form in (secret, quote(secret, safe=""), quote(secret), unquote(secret), repr(secret)[1:-1]):
                if len(form) >= _MIN_SECRET:
                    variants.setdefault(form, shown)
        # Longest first: the whole URL is replaced before its path, the path before its segments.
        self._pairs = sorted(variants.items(), key=lambda pair: len(pair[0]), reverse=True)

    @classmethod
    def for_token(cls, token: str) -> Redactor:
        """The bot token, shown as its type prefix only ("xoxb-***")."""
        token = token.strip()
        return cls({token: token[:5] + "***" if token.startswith("xox") else "***"})

    @classmethod
    def for_webhook(cls, url: str) -> Redactor:
        """The webhook URL, shown as scheme, host and first path segment only
        ("https://hooks.slack.com/services/***"); its path and every later segment."""
        url = url.strip()
        try:
            parts = urlsplit(url)
        except ValueError:  # e.g. an unbalanced "[" in the host: nothing of it is safe to show
            return cls({url: "***"})
        segments = [s for s in parts.path.split("/") if s]
        if not parts.netloc:  # "hooks.slack.com/services/..." (no scheme): the host is the path's first
            segments = segments[1:]
        first, secret = (segments[0], segments[1:]) if len(segments) > 1 else ("", segments)
        kept = f"{first}/***" if first else "***"
        shown = f"{parts.scheme}://{parts.netloc}/{kept}" if parts.netloc else url[: url.find(first) + len(first)] + "/***"
        replacements = {parts.path: f"/{kept}", parts.query: "***", url: shown}
        replacements.update({segment: "***" for segment in secret})
        replacements.pop("", None)
        return cls(replacements)

    def __call__(self, text: str) -> str:
        for secret, shown in self._pairs:
            text = text.replace(secret, shown)
        return text

    def error(self, err: SlackError) -> SlackError:
        """`err` with its message masked (the same code and retry fields)."""
        masked = self(str(err))
        if masked == str(err):
            return err
        return SlackError(masked, code=err.code, permanent=err.permanent, retry_after=err.retry_after,
                          unknown_outcome=err.unknown_outcome)


_MIN_SECRET = 4  # shorter fragments ("T0", "/") are no secret, and masking them would garble text


class _RedactingLogger(logging.Logger):
    """The logger handed to slack-sdk's clients: its lines go where slack-sdk's own would (the
    registered logger `name`'s level and handlers), with the secrets masked (slack-sdk logs the
    webhook URL at DEBUG and an exception text, which may hold it, at ERROR)."""

    def __init__(self, name: str, redact: Redactor) -> None:
        super().__init__(name)
        self.parent = logging.getLogger(name)
        self._redact = redact

    def isEnabledFor(self, level: int) -> bool:
        return self.parent is not None and self.parent.isEnabledFor(level)

    def handle(self, record: logging.LogRecord) -> None:
        record.msg, record.args = self._redact(record.getMessage()), None
        if record.exc_info:  # the traceback text, masked too, instead of the live exception
            record.exc_text = self._redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        super().handle(record)


@dataclass(frozen=True)
class Posted:
    """Where a message landed: the channel ID Slack answered with, and the message ts.

    A webhook learns neither: Posted(channel="webhook", ts="").
    """

    channel: str
    ts: str


Blocks = list[dict[str, Any]]
"""Slack Block Kit blocks, as JSON-ready dicts."""


class Notifier(Protocol):
    """What the delivery step needs from a Slack transport (SlackBot and SlackWebhook have it)."""

    @property
    def supports_threads(self) -> bool: ...
    @property
    def supports_files(self) -> bool: ...
    @property
    def can_look_up(self) -> bool: ...
    def check(self, channels: Sequence[str]) -> dict[str, str]: ...
    def post(
        self, channel: str, text: str, blocks: Blocks | None, key: str, thread_ts: str | None = None
    ) -> Posted: ...
    def update(self, channel: str, ts: str, text: str, blocks: Blocks | None) -> None: ...
    def upload_chart(self, channel: str, thread_ts: str, png: Path, title: str) -> None: ...
    def find_by_key(
        self, channel: str, key: str, oldest: float | None = None, thread_ts: str | None = None
    ) -> Posted | None: ...


# Exceptions a Slack call can end in; anything else (a bug, a missing PNG) propagates as itself.
_CALL_ERRORS = (SlackClientError, URLError, ConnectionError, TimeoutError, http.client.HTTPException)
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{3,}$")  # Slack IDs are upper case; channel names never are


class SlackBot:
    """A Slack app's bot user, through the Web API.

    Scopes it needs: chat:write, channels:read, groups:read, channels:history, groups:history,
    files:write. token: the bot token (xoxb-...). base_url: the Web API root, default
    $SLACK_API_URL, else slack-sdk's (https://slack.com/api/). timeout: seconds per request
    (default 10).
    """

    def __init__(self, token: str, base_url: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        base = base_url or os.environ.get("SLACK_API_URL") or WebClient.BASE_URL
        # slack-sdk urljoin()s the method onto base_url: without the trailing slash the last
        # path segment ("api") would be replaced.
        base = base if base.endswith("/") else base + "/"
        # retry_handlers=[]: no automatic re-send (see the module docstring). slack-sdk annotates
        # timeout as int, but hands it to urllib, which takes float seconds.
        self._redact = Redactor.for_token(token)
        self._client = WebClient(
            token=token, base_url=base, timeout=timeout, retry_handlers=[],  # type: ignore[arg-type]
            logger=_RedactingLogger("slack_sdk.web.base_client", self._redact),
        )

    def _fail(self, exc: Exception, method: str, channel: str = "") -> SlackError:
        """The masked `SlackError` for a failed call (raised `from None`: the original text may
        hold the token)."""
        return self._redact.error(classify(exc, method, channel))

    # Capabilities the delivery step checks (plain attributes, so a settable Protocol fits too).
    supports_threads: bool = True
    supports_files: bool = True
    can_look_up: bool = True

    def check(self, channels: Sequence[str]) -> dict[str, str]:
        """Check the token (auth.test) and resolve each channel to its ID; returns {given: id}.

        channels: names ("#kpi-alerts" or "kpi-alerts") or IDs ("C0123ABCD"). An unknown one
        raises a permanent SlackError naming it and the fix.
        """
        try:
            self._client.auth_test()
        except _CALL_ERRORS as exc:
            raise self._fail(exc, "auth.test") from None
        named = [c for c in channels if not _CHANNEL_ID.match(c)]
        by_name = self._channel_ids() if named else {}
        resolved: dict[str, str] = {}
        for channel in channels:
            if _CHANNEL_ID.match(channel):
                resolved[channel] = self._channel_info(channel)
            elif channel.lstrip("#") in by_name:
                resolved[channel] = by_name[channel.lstrip("#")]
            else:
                raise SlackError(
                    f"Slack channel {channel!r} is not visible to the bot: check the name in the "
                    "config, and for a private channel invite the bot (/invite @your-bot)",
                    code="channel_not_found",
                    permanent=True,
                )
        return resolved

    def _channel_ids(self) -> dict[str, str]:
        """name -> ID over every public and private channel the bot can see (all pages)."""
        ids: dict[str, str] = {}
        cursor: str | None = None
        try:
            while True:
                page = self._client.conversations_list(
                    types="public_channel,private_channel", exclude_archived=True, limit=200, cursor=cursor
                )
                listed: list[dict[str, Any]] = page.get("channels") or []
                ids.update({str(c["name"]): str(c["id"]) for c in listed})
                cursor = (page.get("response_metadata") or {}).get("next_cursor")
                if not cursor:
                    return ids
        except _CALL_ERRORS as exc:
            raise self._fail(exc, "conversations.list") from None

    def _channel_info(self, channel_id: str) -> str:
        try:
            return str(self._client.conversations_info(channel=channel_id)["channel"]["id"])
        except _CALL_ERRORS as exc:
            raise self._fail(exc, "conversations.info", channel_id) from None

    def post(
        self,
        channel: str,
        text: str,
        blocks: list[dict[str, Any]] | None,
        key: str,
        thread_ts: str | None = None,
    ) -> Posted:
        """chat.postMessage; the alert `key` rides along as message metadata for `find_by_key`.

        text: the fallback and notification text (always give it, even with blocks).
        thread_ts: post as a reply in that thread.
        """
        try:
            response = self._client.chat_postMessage(
                channel=channel,
                text=text,
                blocks=blocks,
                thread_ts=thread_ts,
                metadata={"event_type": METADATA_EVENT, "event_payload": {"key": key}},
                unfurl_links=False,
                unfurl_media=False,
            )
        except _CALL_ERRORS as exc:
            raise self._fail(exc, "chat.postMessage", channel) from None
        return Posted(channel=str(response["channel"]), ts=str(response["ts"]))

    def update(self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]] | None) -> None:
        """chat.update of the bot's message `ts` in `channel` (an ID, e.g. Posted.channel)."""
        try:
            self._client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
        except _CALL_ERRORS as exc:
            raise self._fail(exc, "chat.update", channel) from None

    def upload_chart(self, channel: str, thread_ts: str, png: Path, title: str) -> None:
        """Share the PNG `png` in the thread `thread_ts` of `channel` (an ID) via files_upload_v2.

        A missing file raises FileNotFoundError (not a Slack problem).
        """
        try:
            self._client.files_upload_v2(
                channel=channel, thread_ts=thread_ts, file=str(png), filename=png.name, title=title
            )
        except _CALL_ERRORS as exc:
            raise self._fail(exc, "files.upload", channel) from None

    def find_by_key(
        self,
        channel: str,
        key: str,
        oldest: float | None = None,
        thread_ts: str | None = None,
    ) -> Posted | None:
        """The message in `channel` (an ID) whose metadata carries alert `key`, else None.

        Pages (cursor) through every top-level message newer than `oldest` (epoch seconds,
        exclusive; None: the whole channel), newest first, stopping at the first match; with
        `thread_ts`, that thread's replies first. No fixed count: after a storm of 400 alerts the
        one being settled may have 399 newer messages above it, and a look-up that misses it
        posts it twice. A page that fails raises `SlackError` (the caller looks again later).
        """
        if thread_ts is not None:
            for page in self._pages("conversations.replies", channel, ts=thread_ts):
                found = next((m for m in page if _carries(m, key)), None)
                if found is not None:
                    return Posted(channel=channel, ts=str(found["ts"]))
        bound = f"{oldest:.6f}" if oldest is not None else None
        for page in self._pages("conversations.history", channel, oldest=bound):
            found = next((m for m in page if _carries(m, key)), None)
            if found is not None:
                return Posted(channel=channel, ts=str(found["ts"]))
        return None

    def _pages(self, method: str, channel: str, **params: Any) -> Iterator[list[dict[str, Any]]]:
        """Each page of `method` ("conversations.history" or ".replies") with metadata, 200
        messages a page (Slack's recommended size), following next_cursor to the end."""
        call = {"conversations.history": self._client.conversations_history,
                "conversations.replies": self._client.conversations_replies}[method]
        cursor: str | None = None
        while True:
            try:
                page = call(channel=channel, include_all_metadata=True, limit=200, cursor=cursor, **params)
            except _CALL_ERRORS as exc:
                raise self._fail(exc, method, channel) from None
            yield list(page.get("messages") or [])
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return


def _carries(message: Mapping[str, Any], key: str) -> bool:
    metadata = message.get("metadata") or {}
    payload = metadata.get("event_payload") or {}
    return bool(metadata.get("event_type") == METADATA_EVENT and payload.get("key") == key)


class SlackWebhook:
    """An incoming webhook: it posts to the one channel it was created for, and nothing else.

    It cannot thread, update, upload files or look messages up: `supports_threads`,
    `supports_files` and `can_look_up` are False, and callers check them before calling
    `update`/`upload_chart` (which do nothing here). url: the webhook URL. timeout: seconds.

    Guarantee: at least once, not exactly once. A post whose outcome is unknown (the connection
    dropped after sending, a 5xx) cannot be looked up, so the delivery step sends it again and
    Slack may show it twice; a post Slack surely did not get (refused connection, 429, a
    malformed URL) is never doubled. Use a bot token for exactly once.

    The URL's path is its secret: errors and slack-sdk's log lines show it masked
    ("https://hooks.slack.com/services/***").
    """

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._redact = Redactor.for_webhook(url)
        self._problem = _webhook_problem(url)
        self._client = WebhookClient(
            url, timeout=timeout, retry_handlers=[],  # type: ignore[arg-type]
            logger=_RedactingLogger("slack_sdk.webhook.client", self._redact),
        )

    def _fail(self, exc: Exception, method: str, channel: str = "") -> SlackError:
        """The masked `SlackError` for a failed call (raised `from None`: the original text may
        hold the URL)."""
        return self._redact.error(classify(exc, method, channel))

    def _check_url(self) -> None:
        """A malformed URL is a permanent error naming the fix (never sent, never retried)."""
        if self._problem:
            raise SlackError(
                f"SLACK_WEBHOOK_URL is not a valid webhook URL: {self._redact(self._problem)}; copy it "
                "again from the Slack app's Incoming Webhooks page (https://hooks.slack.com/services/...)",
                code="invalid_webhook_url",
                permanent=True,
            )

    supports_threads: bool = False
    supports_files: bool = False
    can_look_up: bool = False

    def check(self, channels: Sequence[str]) -> dict[str, str]:
        """Checks only that the URL is well-formed (anything more would send a message): returns {}."""
        self._check_url()
        return {}

    def post(
        self,
        channel: str,
        text: str,
        blocks: list[dict[str, Any]] | None,
        key: str,
        thread_ts: str | None = None,
    ) -> Posted:
        """Send `text`/`blocks` to the webhook's channel; `channel`, `key` and `thread_ts` are
        ignored (the webhook fixes the channel; nothing can be threaded or looked up)."""
        self._check_url()
        try:
            response = self._client.send(text=text, blocks=blocks, unfurl_links=False, unfurl_media=False)
        except _CALL_ERRORS as exc:
            raise self._fail(exc, "webhook") from None
        if response.status_code != 200:
            # WebhookClient returns HTTP errors instead of raising; Slack's body is a word.
            body = (response.body or "").strip()
            raise self._redact.error(_from_status(response.status_code, body, response.headers, "webhook", {}))
        return Posted(channel="webhook", ts="")

    def update(self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]] | None) -> None:
        """A webhook cannot edit: does nothing (check `supports_threads` first)."""

    def upload_chart(self, channel: str, thread_ts: str, png: Path, title: str) -> None:
        """A webhook cannot upload: does nothing (check `supports_files` first)."""

    def find_by_key(
        self,
        channel: str,
        key: str,
        oldest: float | None = None,
        thread_ts: str | None = None,
    ) -> Posted | None:
        """A webhook cannot read the channel: always None (check `can_look_up` first)."""
        return None


def _webhook_problem(url: str) -> str:
    """What is wrong with a webhook URL's form ("" when nothing): urllib would otherwise raise a
    bare ValueError for a missing scheme, or send half a request for a URL with a space in it."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return f"{exc} (got {url})"
    if parts.scheme not in ("https", "http") or not parts.netloc:
        return f"it must start with https:// and a host (got {url})"
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        return f"it contains a space or control character (got {url!r})"
    return ""


def make_notifier(env: Mapping[str, str] = os.environ) -> SlackBot | SlackWebhook | None:
    """SLACK_BOT_TOKEN -> SlackBot (Web API at SLACK_API_URL if set); else SLACK_WEBHOOK_URL ->
    SlackWebhook; else None (alerts go to the console only)."""
    token = env.get("SLACK_BOT_TOKEN", "").strip()
    if token:
        return SlackBot(token, base_url=env.get("SLACK_API_URL", "").strip() or WebClient.BASE_URL)
    url = env.get("SLACK_WEBHOOK_URL", "").strip()
    if url:
        return SlackWebhook(url)
    return None
