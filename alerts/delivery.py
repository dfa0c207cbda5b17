"""The outbox worker: sends queued messages to Slack exactly once, in order, and never gives up
silently.

Kinds: `message` (a top-level post), `chart`, `reply` and `resolve` (into the thread of their
parent message; a resolve also marks the original), `update` (a revised value) and `feedback`
("marked false alarm by @ana"): the parent message is edited with chat.update, nothing new is
posted; a webhook, which cannot edit, posts the line.

Stages per row (after Alertmanager's notify pipeline): wait for its parent (a chart or a resolve
goes into the thread of the message it belongs to) → settle an unknown outcome by looking for
the row's key in the channel → mark the attempt → send → record (the notification log is
written only after Slack said ok).

Failures: 429 waits `Retry-After`; 5xx, timeouts and dropped connections back off exponentially
(capped, with jitter) and, since Slack may have posted anyway, look for the key before the next
post; permanent errors (`channel_not_found`, `invalid_auth`, ...) make a dead letter with one log
line, and the worker goes on with the other rows. `kpiwatch outbox retry` revives dead letters.

The look-up pages through the channel's whole history back to the row's queue time (not a fixed
count of messages: a storm of 400 alerts puts 399 newer posts above the first). A webhook cannot
look, so there an unknown outcome is sent again: at least once, never exactly once.
"""

from __future__ import annotations

import logging
import random
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

from alerts.message import feedback_blocks, resolved_blocks, revised_blocks
from alerts.slack import Notifier, Posted, SlackError

log = logging.getLogger("kpiwatch.delivery")

EDITS = ("update", "feedback")
"""Kinds that only edit their parent message (chat.update): nothing is posted."""


class Outbox(Protocol):
    """What delivery needs from the state store (`alerts.store.Store`)."""

    def waiting(self) -> list[Any]: ...
    def get(self, key: str) -> Any: ...
    def mark_sending(self, row_id: int, seen_state: str, seen_attempts: int, lease_until: datetime) -> bool: ...
    def mark_sent(self, row_id: int, slack_channel: str, slack_ts: str, note: str = "") -> None: ...
    def mark_retry(self, row_id: int, next_attempt_at: datetime, error: str, unknown: bool) -> None: ...
    def mark_dead(self, row_id: int, error: str) -> None: ...
    def children(self, parent_key: str, kind: str) -> list[Any]: ...


@dataclass(frozen=True)
class DeliveryPolicy:
    """Retry timing, in seconds.

    backoff: first wait after a 5xx or timeout (default 2), doubled per attempt up to
    max_backoff (default 300), with full jitter. max_wait: how long one `deliver` call keeps
    waiting for retries before it returns and leaves the rest queued (default 60; the daemon
    calls it again next cycle). lease: how long a row being sent is left alone by other
    senders (default 120; after a crash mid-send the row is settled once this has passed).
    look_back_margin: how far before a row's queue time the look-up for it starts (default
    3600), for clock skew between this host, the host that queued the row and Slack.
    """

    backoff: float = 2.0
    max_backoff: float = 300.0
    max_wait: float = 60.0
    lease: float = 120.0
    look_back_margin: float = 3600.0

    def delay(self, attempts: int, retry_after: float | None) -> float:
        """Seconds before the next attempt: Slack's Retry-After when given, else backoff."""
        if retry_after is not None:
            return max(retry_after, 0.0)
        ceiling = min(self.max_backoff, self.backoff * 2 ** max(attempts - 1, 0))
        return random.uniform(ceiling / 2, ceiling)  # jitter: retries from many rows spread out


@dataclass
class DeliveryReport:
    """What one `deliver` call did."""

    sent: int = 0
    retries: int = 0
    dead: list[str] = field(default_factory=list)  # one line per dead letter
    waiting: int = 0  # rows left queued (retry later)


def deliver(
    outbox: Outbox,
    notifier: Notifier,
    channel_ids: Mapping[str, str] | None = None,
    policy: DeliveryPolicy = DeliveryPolicy(),
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    sleep: Callable[[float], None] = time.sleep,
) -> DeliveryReport:
    """Send every due row, waiting for retries up to `policy.max_wait` seconds.

    channel_ids: configured channel name -> Slack ID (from `SlackBot.check`); names pass through.
    """
    report = DeliveryReport()
    deadline = clock() + timedelta(seconds=policy.max_wait)
    ids = dict(channel_ids or {})
    while True:
        now = clock()
        # A row whose parent is not in Slack yet waits for it (order per key is kept).
        unblocked = [row for row in outbox.waiting() if _parent_ready(outbox, row)]
        ready = [row for row in unblocked if row.next_attempt_at <= now]
        for row in ready:
            _send_row(outbox, notifier, row, ids, policy, clock, report)
        if ready:
            continue
        wake = min((row.next_attempt_at for row in unblocked), default=None)
        if wake is None or wake > deadline:
            break  # nothing left, only rows behind a dead parent, or not worth waiting for now
        sleep((wake - now).total_seconds())
    report.waiting = len(outbox.waiting())
    return report


def _parent_ready(outbox: Outbox, row: Any) -> bool:
    """A row with a parent waits until the parent is in Slack (order per key is kept)."""
    if not row.parent_key:
        return True
    parent = outbox.get(row.parent_key)
    return parent is not None and parent.state == "sent"


def _send_row(
    outbox: Outbox, notifier: Notifier, row: Any, ids: Mapping[str, str], policy: DeliveryPolicy,
    clock: Callable[[], datetime], report: DeliveryReport,
) -> None:
    channel = ids.get(row.channel, row.channel)
    if not outbox.mark_sending(row.id, row.state, row.attempts, clock() + timedelta(seconds=policy.lease)):
        return  # another sender (a `kpiwatch check` beside the daemon) has this row now
    try:
        if row.state == "sending" and _settled(outbox, notifier, row, channel, _look_back_from(row, clock, policy)):
            report.sent += 1
            return
        posted, note = _send(outbox, notifier, row, channel)
        outbox.mark_sent(row.id, posted.channel, posted.ts, note)
        report.sent += 1
    except SlackError as exc:
        if exc.permanent:
            outbox.mark_dead(row.id, str(exc))
            line = f"dead letter {row.key}: {exc}"
            report.dead.append(line)
            log.error(line)
            return
        # A 5xx or a dropped connection may have posted anyway: look before the next post.
        # A row already unsettled stays so even when only the look-up failed (never re-post blind).
        unknown = exc.unknown_outcome or exc.code.startswith("http_5") or row.state == "sending"
        wait = policy.delay(row.attempts + 1, exc.retry_after)
        outbox.mark_retry(row.id, clock() + timedelta(seconds=wait), str(exc), unknown)
        report.retries += 1
        log.warning("retry %s in %.1f s: %s", row.key, wait, exc)


def _look_back_from(row: Any, clock: Callable[[], datetime], policy: DeliveryPolicy) -> float | None:
    """Epoch seconds (Slack's clock: the wall clock) before which the row cannot have been posted:
    its queue time less `policy.look_back_margin`; None (look through the whole channel) when
    that cannot be trusted.

    The queue time comes from the clock of whoever queued the row; under a simulated clock
    (`KPIWATCH_CLOCK`) that is not the wall clock. The row's age by `clock` is taken back from
    the wall clock too, and the earlier of the two wins: a clock running ahead (or fast) only
    moves the bound earlier. A queue time ahead of the wall clock comes from a clock other than
    the wall clock and `clock` (say a simulated one, read by `kpiwatch outbox retry`): no bound.
    """
    wall = time.time()
    queued = row.created_at.timestamp()
    if queued > wall:
        return None
    age = max(clock().timestamp() - queued, 0.0)
    return min(queued, wall - age) - policy.look_back_margin


def _settled(outbox: Outbox, notifier: Notifier, row: Any, channel: str, oldest: float | None) -> bool:
    """An earlier attempt's outcome is unknown: True when Slack already has the row (now marked
    sent). Charts carry no key, so an unknown upload is not repeated (a chart at most once).
    oldest: where the look-up in the channel starts (epoch seconds; None: the whole channel)."""
    if row.kind == "chart":
        outbox.mark_sent(row.id, channel, "", "upload outcome unknown; not repeated")
        return True
    if not notifier.can_look_up:
        # A webhook cannot look: send again (at least once; Slack may show it twice).
        log.warning("resending %s: an earlier attempt's outcome is unknown and a webhook cannot look "
                    "for it (at least once; use a bot token for exactly once)", row.key)
        return False
    if row.kind in EDITS:
        return False  # chat.update posts nothing to look for, and doing it again is harmless
    thread = None
    if row.kind in ("resolve", "reply") and notifier.supports_threads:
        parent = outbox.get(row.parent_key)
        channel, thread = parent.slack_channel, parent.slack_ts
        if row.kind == "resolve":
            _update_original(outbox, notifier, parent, row)
    found = notifier.find_by_key(channel, row.key, oldest=oldest, thread_ts=thread)
    if found is None:
        return False
    outbox.mark_sent(row.id, found.channel, found.ts, "found in Slack after an unknown outcome")
    return True


def _send(outbox: Outbox, notifier: Notifier, row: Any, channel: str) -> tuple[Posted, str]:
    """Send one row by its kind; returns where it landed and a note for the log."""
    if row.kind == "message":
        return notifier.post(channel, row.text, row.payload.get("blocks"), row.key), ""
    parent = outbox.get(row.parent_key)
    if row.kind == "chart":
        if not notifier.supports_files:
            return Posted(channel, ""), "not sent: a webhook cannot upload files (the chart is in the CLI)"
        with tempfile.TemporaryDirectory(prefix="kpiwatch-upload-") as folder:
            png = Path(folder) / row.payload.get("filename", "chart.png")
            png.write_bytes(row.file if row.file is not None else (outbox.get(row.key).file or b""))
            notifier.upload_chart(parent.slack_channel, parent.slack_ts, png, row.payload.get("title", row.text))
        return Posted(parent.slack_channel, parent.slack_ts), ""
    if row.kind == "resolve":
        if not notifier.supports_threads:
            return notifier.post(channel, row.text, None, row.key), "no thread: posted on its own"
        _update_original(outbox, notifier, parent, row)
        return notifier.post(parent.slack_channel, row.text, None, row.key, thread_ts=parent.slack_ts), ""
    if row.kind == "reply":
        if not notifier.supports_threads:
            return notifier.post(channel, row.text, None, row.key), "no thread: posted on its own"
        return notifier.post(parent.slack_channel, row.text, None, row.key, thread_ts=parent.slack_ts), ""
    if row.kind in EDITS:
        if not notifier.supports_threads:
            return notifier.post(channel, row.text, None, row.key), "no updates: posted on its own"
        _update_original(outbox, notifier, parent, row)
        return Posted(parent.slack_channel, parent.slack_ts), ""
    raise ValueError(f"outbox row {row.key} has unknown kind {row.kind!r}")


def _update_original(outbox: Outbox, notifier: Notifier, parent: Any, row: Any) -> None:
    """Show the resolved incidents and revised values on the original message, each edit
    rendered from the original blocks with every line sent so far plus this row's
    (chat.update is idempotent)."""
    def lines(kind: str) -> list[str]:
        return [r.payload.get("line", r.text) for r in outbox.children(parent.key, kind)
                if r.state == "sent" or r.id == row.id]

    blocks = feedback_blocks(revised_blocks(resolved_blocks(parent.payload.get("blocks", []), lines("resolve")),
                                            lines("update")), lines("feedback"))
    try:
        notifier.update(parent.slack_channel, parent.slack_ts, parent.text, blocks)
    except SlackError as exc:
        if not exc.permanent or row.kind != "resolve":
            raise
        # The original was deleted or can no longer be edited: the "Resolved" reply still goes out.
        log.warning("could not edit %s for %s: %s", parent.key, row.key, exc)
