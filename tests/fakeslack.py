"""A small local fake of Slack's Web API and incoming webhooks, for tests (loopback only).

    with FakeSlack() as slack:                       # a daemon thread on 127.0.0.1, port 0
        bot = SlackBot("xoxb-test", base_url=slack.url)
        slack.fail_next("chat.postMessage", drop=True)
        ...
        slack.messages("C0ALERTS")                   # what the channel holds, oldest first
        slack.calls                                  # [(method, params), ...] in arrival order

It speaks the subset kpiwatch uses, the way slack-sdk's WebClient sends it: form-encoded bodies
(auth.test, conversations.*, files.*), JSON bodies (chat.postMessage, chat.update), multipart,
and the raw-bytes POST of files_upload_v2's second step to the `upload_url` it hands out.
Import it as `from fakeslack import FakeSlack` (tests/ is on sys.path, like conftest).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

DEFAULT_CHANNELS = {"C0ALERTS": "kpi-alerts", "C0PAID": "paid-media"}
WEBHOOK = "webhook"  # the method name (and channel) for incoming-webhook posts; "upload" for step 2
CHAOS_KINDS = ("429", "500", "drop", "drop_before")


@dataclass(frozen=True)
class Failure:
    """One scripted misbehaviour; see `FakeSlack.fail_next`."""

    status: int | None = None
    retry_after: float | None = None
    error: str | None = None
    drop: bool = False
    drop_before: bool = False


class FakeSlack:
    """A fake Slack on 127.0.0.1 that records calls and keeps channels' messages.

    channels: channel id -> name (default C0ALERTS=kpi-alerts, C0PAID=paid-media).
    tokens: bot tokens auth accepts (default {"xoxb-test"}); others get `invalid_auth`.
    page_size: conversations.list page size, small so pagination is exercised (default 1).
    start_ts: None (default) stamps each message from the wall clock, as Slack does (strictly
    increasing, so a look-up bounded by the time a row was queued finds it); epoch seconds give
    fixed stamps instead: each message 100 microseconds after the last ("1700000000.000100", ...).
    """

    def __init__(
        self,
        channels: Mapping[str, str] | None = None,
        tokens: tuple[str, ...] = ("xoxb-test",),
        page_size: int = 1,
        start_ts: float | None = None,
    ) -> None:
        self.channels = dict(DEFAULT_CHANNELS if channels is None else channels)
        self.tokens = set(tokens)
        self.page_size = page_size
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.files: list[dict[str, Any]] = []
        self._messages: dict[str, list[dict[str, Any]]] = {}
        self._uploads: dict[str, dict[str, Any]] = {}
        self._failures: dict[str, deque[Failure]] = {}
        self._serial = 0
        self._chaos_rate = 0.0
        self._chaos_rng = random.Random(0)
        self._chaos_methods: frozenset[str] = frozenset()
        self._outage = False
        self.faults: Counter[str] = Counter()  # misbehaviours injected by `chaos` and `outage`, by kind
        self._start_micros = None if start_ts is None else int(start_ts * 1_000_000)
        self._last_micros = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self  # type: ignore[attr-defined]
        # A short poll interval: shutdown() waits up to one interval, once per test.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.01,), daemon=True)

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> FakeSlack:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        """The WebClient base_url (slack-sdk joins the method name onto it)."""
        return self.root + "/api/"

    @property
    def webhook_url(self) -> str:
        return self.root + "/webhook/T000/B000/XXX"

    # -- scripting and reading ---------------------------------------------------------------
    def fail_next(
        self,
        method: str,
        times: int = 1,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        error: str | None = None,
        drop: bool = False,
        drop_before: bool = False,
    ) -> None:
        """Make the next `times` calls of `method` misbehave, consumed in order.

        status=429 (Retry-After `retry_after`, default 1 s) or 5xx: that HTTP status;
        error="channel_not_found": HTTP 200 ok:false (with status: that status, for webhooks);
        drop=True: process the request fully (store the message), then close without answering;
        drop_before=True: close without processing. `method` is a Web API method, "webhook"
        or "upload" (the file bytes POST of files_upload_v2).
        """
        if sum([status is not None or error is not None, drop, drop_before]) != 1:
            raise ValueError("fail_next: give exactly one of status/error, drop, drop_before")
        if status == 429 and retry_after is None:
            retry_after = 1
        failure = Failure(status, retry_after, error, drop, drop_before)
        with self._lock:
            self._failures.setdefault(method, deque()).extend([failure] * times)

    def chaos(self, rate: float, seed: int = 0,
              methods: tuple[str, ...] = ("chat.postMessage", "chat.update", "conversations.history",
                                          "conversations.replies")) -> None:
        """Make a random `rate` (0..1) of the calls of `methods` misbehave when nothing is
        scripted with `fail_next`: 429 (Retry-After 1 s), 500, a drop after processing or a drop
        before, equally likely (seeded). rate 0 stops it. Counted in `faults` by kind."""
        with self._lock:
            self._chaos_rate, self._chaos_rng = rate, random.Random(seed)
            self._chaos_methods = frozenset(methods)

    def outage(self, on: bool) -> None:
        """While on, every call (auth.test included) answers HTTP 503: Slack is down."""
        with self._lock:
            self._outage = on

    def messages(self, channel: str) -> list[dict[str, Any]]:
        """Every message in `channel` (id or name), top-level and replies, oldest first (copies)."""
        with self._lock:
            found = self._find_channel(channel) or channel
            return [dict(m) for m in self._messages.get(found, [])]

    def methods(self) -> list[str]:
        """The methods called so far, in order (a view of `calls`)."""
        return [method for method, _ in self.calls]

    # -- internals (called by the handler under the lock) -----------------------------------------
    def _find_channel(self, ref: str) -> str | None:
        if ref in self.channels:
            return ref
        name = ref.lstrip("#")
        return next((cid for cid, n in self.channels.items() if n == name), None)

    def _next_ts(self) -> str:
        self._serial += 1
        if self._start_micros is None:
            micros = max(time.time_ns() // 1000, self._last_micros + 1)
        else:
            micros = self._start_micros + self._serial * 100
        self._last_micros = micros
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _take_failure(self, method: str) -> Failure | None:
        queue = self._failures.get(method)
        if queue:
            return queue.popleft()
        if self._outage:
            self.faults["503 outage"] += 1
            return Failure(status=503)
        if method in self._chaos_methods and self._chaos_rng.random() < self._chaos_rate:
            kind = self._chaos_rng.choice(CHAOS_KINDS)
            self.faults[kind] += 1
            return {"429": Failure(status=429, retry_after=1), "500": Failure(status=500),
                    "drop": Failure(drop=True), "drop_before": Failure(drop_before=True)}[kind]
        return None

    def _api(self, method: str, p: dict[str, Any], token: str | None) -> dict[str, Any]:
        if token is None:
            return {"ok": False, "error": "not_authed"}
        if token not in self.tokens:
            return {"ok": False, "error": "invalid_auth"}
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        return handler(p) if handler else {"ok": False, "error": "unknown_method"}

    def _m_auth_test(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "team": "Test", "user": "kpiwatch", "team_id": "T000", "user_id": "U0BOT"}

    def _channel_obj(self, cid: str) -> dict[str, Any]:
        return {"id": cid, "name": self.channels[cid], "is_channel": True, "is_member": True}

    def _m_conversations_list(self, p: dict[str, Any]) -> dict[str, Any]:
        start = int(p.get("cursor") or 0)
        ids = list(self.channels)
        page = ids[start : start + self.page_size]
        more = start + self.page_size < len(ids)
        return {
            "ok": True,
            "channels": [self._channel_obj(cid) for cid in page],
            "response_metadata": {"next_cursor": str(start + self.page_size) if more else ""},
        }

    def _m_conversations_info(self, p: dict[str, Any]) -> dict[str, Any]:
        cid = str(p.get("channel", ""))
        if cid not in self.channels:
            return {"ok": False, "error": "channel_not_found"}
        return {"ok": True, "channel": self._channel_obj(cid)}

    def _m_chat_postMessage(self, p: dict[str, Any]) -> dict[str, Any]:
        cid = self._find_channel(str(p.get("channel", "")))
        if cid is None:
            return {"ok": False, "error": "channel_not_found"}
        if not p.get("text") and not p.get("blocks"):
            return {"ok": False, "error": "no_text"}
        message = {
            "ts": self._next_ts(),
            "text": p.get("text", ""),
            "blocks": _decoded(p.get("blocks")),
            "metadata": _decoded(p.get("metadata")),
            "thread_ts": p.get("thread_ts"),
            "edited": False,
        }
        self._messages.setdefault(cid, []).append(message)
        return {"ok": True, "channel": cid, "ts": message["ts"], "message": _public(message, True)}

    def _m_chat_update(self, p: dict[str, Any]) -> dict[str, Any]:
        cid = self._find_channel(str(p.get("channel", "")))
        if cid is None:
            return {"ok": False, "error": "channel_not_found"}
        found = [m for m in self._messages.get(cid, []) if m["ts"] == p.get("ts")]
        if not found:
            return {"ok": False, "error": "message_not_found"}
        found[0].update(text=p.get("text", ""), blocks=_decoded(p.get("blocks")), edited=True)
        return {"ok": True, "channel": cid, "ts": p["ts"], "text": found[0]["text"]}

    def _m_conversations_history(self, p: dict[str, Any]) -> dict[str, Any]:
        cid = str(p.get("channel", ""))
        if cid not in self.channels:
            return {"ok": False, "error": "channel_not_found"}
        top = [m for m in self._messages.get(cid, []) if m["thread_ts"] in (None, m["ts"])]
        oldest = float(p.get("oldest") or 0)
        newest_first = [m for m in reversed(top) if float(m["ts"]) > oldest]
        return self._page(newest_first, p, "messages")

    def _m_conversations_replies(self, p: dict[str, Any]) -> dict[str, Any]:
        cid, ts = str(p.get("channel", "")), p.get("ts")
        thread = [m for m in self._messages.get(cid, []) if ts in (m["ts"], m["thread_ts"])]
        if not thread:
            return {"ok": False, "error": "thread_not_found"}
        return self._page(thread, p, "messages")

    def _page(self, items: list[dict[str, Any]], p: dict[str, Any], key: str) -> dict[str, Any]:
        start, limit = int(p.get("cursor") or 0), int(p.get("limit") or 100)
        with_metadata = str(p.get("include_all_metadata", "")).lower() in ("1", "true")
        page = [_public(m, with_metadata) for m in items[start : start + limit]]
        more = start + limit < len(items)
        cursor = str(start + limit) if more else ""
        return {"ok": True, key: page, "has_more": more, "response_metadata": {"next_cursor": cursor}}

    def _m_files_getUploadURLExternal(self, p: dict[str, Any]) -> dict[str, Any]:
        file_id = f"F{len(self._uploads) + 1:09d}"
        self._uploads[file_id] = {"id": file_id, "filename": p.get("filename"), "content": None}
        return {"ok": True, "file_id": file_id, "upload_url": f"{self.root}/upload/{file_id}"}

    def _m_files_completeUploadExternal(self, p: dict[str, Any]) -> dict[str, Any]:
        cid = self._find_channel(str(p.get("channel_id", "")))
        if p.get("channel_id") and cid is None:
            return {"ok": False, "error": "channel_not_found"}
        done = []
        for item in _decoded(p.get("files")) or []:
            upload = self._uploads.get(item["id"])
            if upload is None or upload["content"] is None:
                return {"ok": False, "error": "file_not_found"}
            record = dict(upload, title=item.get("title"), channel_id=cid, thread_ts=p.get("thread_ts"))
            self.files.append(record)
            done.append({"id": record["id"], "title": record["title"], "name": record["filename"]})
        return {"ok": True, "files": done}


def _decoded(value: Any) -> Any:
    """Form bodies carry blocks/metadata/files as JSON strings; JSON bodies as objects."""
    return json.loads(value) if isinstance(value, str) and value.startswith(("[", "{")) else value


def _public(message: dict[str, Any], with_metadata: bool) -> dict[str, Any]:
    """A stored message as Slack shows it: no None fields, metadata only when asked for."""
    shown = {"type": "message", "user": "U0BOT", "bot_id": "B0BOT"}
    shown.update({k: v for k, v in message.items() if v not in (None, False) and k != "metadata"})
    if with_metadata and message.get("metadata"):
        shown["metadata"] = message["metadata"]
    return shown


class _Handler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    def do_POST(self) -> None:
        fake: FakeSlack = self.server.fake
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = urlsplit(self.path).path
        if path.startswith("/api/"):
            method, params = path[len("/api/") :], self._params(body)
        elif path.startswith("/upload/"):
            method, params = "upload", {"file_id": path.rsplit("/", 1)[1], "length": len(body)}
        elif path.startswith("/webhook/"):
            method, params = WEBHOOK, json.loads(body or b"{}")
        else:
            self._send(404, b"not found", "text/plain")
            return
        with fake._lock:
            fake.calls.append((method, params))
            failure = fake._take_failure(method)
            if failure is not None and failure.drop_before:
                self.close_connection = True  # nothing processed, nothing answered
                return
            if failure is not None and not failure.drop:
                self._fail(method, failure)
                return
            status, payload, ctype = self._process(fake, method, params, body)
        if failure is not None:  # drop: the work is done, the answer never leaves
            self.close_connection = True
            return
        self._send(status, payload, ctype)

    def _process(
        self, fake: FakeSlack, method: str, params: dict[str, Any], body: bytes
    ) -> tuple[int, bytes, str]:
        if method == WEBHOOK:
            record = {"ts": fake._next_ts(), "text": params.get("text", ""), "thread_ts": None}
            record.update(blocks=params.get("blocks"), metadata=params.get("metadata"), edited=False)
            fake._messages.setdefault(WEBHOOK, []).append(record)
            return 200, b"ok", "text/html"
        if method == "upload":
            upload = fake._uploads.get(params["file_id"])
            if upload is None:
                return 404, b"not found", "text/plain"
            upload["content"] = body
            return 200, f"OK - {len(body)}".encode(), "text/plain"
        auth = self.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else params.get("token")
        return 200, json.dumps(fake._api(method, params, token)).encode(), "application/json"

    def _fail(self, method: str, failure: Failure) -> None:
        status = failure.status or (400 if method == WEBHOOK else 200)
        if method in (WEBHOOK, "upload"):  # webhooks answer plain words, not JSON
            default = {429: "rate_limited"}.get(status, "internal_error" if status >= 500 else "")
            self._send(status, (failure.error or default).encode(), "text/html", failure.retry_after)
            return
        error = failure.error or ("ratelimited" if status == 429 else "internal_error")
        payload = json.dumps({"ok": False, "error": error}).encode()
        self._send(status, payload, "application/json", failure.retry_after)

    def _params(self, body: bytes) -> dict[str, Any]:
        ctype = self.headers.get("Content-Type", "")
        if ctype.startswith("application/json"):
            return dict(json.loads(body or b"{}"))
        if ctype.startswith("multipart/form-data"):
            head = f"Content-Type: {ctype}\r\n\r\n".encode()
            parts = BytesParser(policy=HTTP).parsebytes(head + body).iter_parts()
            return {
                str(part.get_param("name", header="content-disposition")): (
                    part.get_content() if part.get_filename() is None else part.get_payload(decode=True)
                )
                for part in parts
            }
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))

    def _send(self, status: int, payload: bytes, ctype: str, retry_after: float | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", f"{ctype}; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        if retry_after is not None:
            self.send_header("Retry-After", f"{retry_after:g}")
        self.end_headers()
        self.wfile.write(payload)
