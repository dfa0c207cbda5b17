"""alerts.slack against the real slack-sdk clients talking to a local fake Slack (tests/fakeslack.py)."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.error import URLError

import pytest
from fakeslack import FakeSlack

from alerts.slack import Posted, SlackBot, SlackError, SlackWebhook, classify, make_notifier

# A valid 1x1 PNG: enough for an upload, no plotting needed.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(start_ts=1_700_000_000.0) as fake:  # fixed stamps: ts values can be asserted
        yield fake


@pytest.fixture
def bot(slack: FakeSlack) -> SlackBot:
    return SlackBot("xoxb-test", base_url=slack.url, timeout=5)


def outcome(err: SlackError) -> tuple[str, bool, float | None, bool]:
    """(code, permanent, retry_after, unknown_outcome): what the delivery step decides on."""
    return (err.code, err.permanent, err.retry_after, err.unknown_outcome)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- post, metadata, find_by_key ------------------------------------------------------------------


def test_post_carries_the_key_in_metadata_and_find_by_key_finds_it(bot: SlackBot, slack: FakeSlack) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*CPA up 40%*"}}]
    posted = bot.post("#kpi-alerts", "CPA up 40%", blocks, key="cpa|2024-05-01")

    assert posted == Posted(channel="C0ALERTS", ts="1700000000.000100")
    [stored] = slack.messages("C0ALERTS")
    assert stored["text"] == "CPA up 40%" and stored["blocks"] == blocks
    assert stored["metadata"] == {"event_type": "kpiwatch_alert", "event_payload": {"key": "cpa|2024-05-01"}}
    [(method, params)] = slack.calls
    assert method == "chat.postMessage" and params["unfurl_links"] is False
    assert bot.find_by_key("C0ALERTS", "cpa|2024-05-01") == posted
    assert bot.find_by_key("C0ALERTS", "cpa|2024-05-02") is None


def test_find_by_key_respects_oldest_and_looks_into_a_given_thread(bot: SlackBot) -> None:
    first = bot.post("C0ALERTS", "first", None, key="k1")
    for i in range(3):
        bot.post("C0ALERTS", f"later {i}", None, key=f"other{i}")
    reply = bot.post("C0ALERTS", "chart follows", None, key="k-reply", thread_ts=first.ts)

    assert bot.find_by_key("C0ALERTS", "k1") == first
    assert bot.find_by_key("C0ALERTS", "k1", oldest=float(first.ts) - 1e-6) == first
    assert bot.find_by_key("C0ALERTS", "k1", oldest=float(first.ts)) is None  # oldest is exclusive
    assert bot.find_by_key("C0ALERTS", "k-reply") is None  # replies are not in the history
    assert bot.find_by_key("C0ALERTS", "k-reply", thread_ts=first.ts) == reply


def test_find_by_key_pages_past_200_newer_messages_and_stops_at_the_match(bot: SlackBot, slack: FakeSlack) -> None:
    """#11a: the look-up once read the newest 200 messages only; after a storm the message being
    settled had 399 newer ones above it and was posted again."""
    first = bot.post("C0ALERTS", "first", None, key="k1")
    for i in range(450):
        bot.post("C0ALERTS", f"later {i}", None, key=f"other{i}")
    calls = len(slack.calls)

    assert bot.find_by_key("C0ALERTS", "k1", oldest=float(first.ts) - 1) == first
    pages = [params for method, params in slack.calls[calls:]]
    assert [p["cursor"] if "cursor" in p else None for p in pages] == [None, "200", "400"]  # 3 pages of 200
    assert all(p["oldest"] == f"{float(first.ts) - 1:.6f}" for p in pages)
    assert bot.find_by_key("C0ALERTS", "other449") is not None
    assert len(slack.calls) == calls + 4  # the newest is on the first page: no further pages read


def test_update_edits_the_message(bot: SlackBot, slack: FakeSlack) -> None:
    posted = bot.post("C0ALERTS", "CPA up 40%", None, key="k")
    bot.update(posted.channel, posted.ts, "CPA back to normal", [{"type": "divider"}])

    [stored] = slack.messages("C0ALERTS")
    assert stored["text"] == "CPA back to normal" and stored["blocks"] == [{"type": "divider"}]
    assert stored["edited"] is True
    assert stored["metadata"]["event_payload"] == {"key": "k"}  # an edit keeps the key


def test_update_of_a_missing_message_is_permanent(bot: SlackBot) -> None:
    with pytest.raises(SlackError) as caught:
        bot.update("C0ALERTS", "1.000000", "x", None)
    assert (caught.value.code, caught.value.permanent) == ("message_not_found", True)


def test_upload_chart_puts_the_png_into_the_thread(bot: SlackBot, slack: FakeSlack, tmp_path: Path) -> None:
    png = tmp_path / "cpa.png"
    png.write_bytes(PNG)
    posted = bot.post("C0ALERTS", "CPA up", None, key="k")
    bot.upload_chart(posted.channel, posted.ts, png, title="CPA, last 8 weeks")

    [file] = slack.files
    assert file["content"] == PNG and file["filename"] == "cpa.png" and file["title"] == "CPA, last 8 weeks"
    assert (file["channel_id"], file["thread_ts"]) == ("C0ALERTS", posted.ts)
    assert slack.methods()[1:] == ["files.getUploadURLExternal", "upload", "files.completeUploadExternal"]


def test_upload_failures_are_classified_and_a_missing_png_is_not_a_slack_error(
    bot: SlackBot, slack: FakeSlack, tmp_path: Path
) -> None:
    png = tmp_path / "cpa.png"
    png.write_bytes(PNG)
    slack.fail_next("upload", status=503)
    with pytest.raises(SlackError) as caught:
        bot.upload_chart("C0ALERTS", "1700000000.000100", png, "t")
    assert (caught.value.code, caught.value.permanent) == ("http_503", False)
    assert slack.files == []
    with pytest.raises(FileNotFoundError):
        bot.upload_chart("C0ALERTS", "1700000000.000100", tmp_path / "missing.png", "t")


# -- failures: status codes, ok:false, dropped connections --------------------------------------


def test_429_is_transient_with_retry_after_and_not_retried(bot: SlackBot, slack: FakeSlack) -> None:
    slack.fail_next("chat.postMessage", status=429, retry_after=1)
    with pytest.raises(SlackError) as caught:
        bot.post("C0ALERTS", "hi", None, key="k")

    assert outcome(caught.value) == ("ratelimited", False, 1.0, False)
    assert str(caught.value) == "Slack rate-limited chat.postMessage to C0ALERTS (retry after 1 s)"
    assert slack.methods() == ["chat.postMessage"] and slack.messages("C0ALERTS") == []


def test_500_is_transient_and_its_outcome_unknown(bot: SlackBot, slack: FakeSlack) -> None:
    slack.fail_next("chat.postMessage", status=500)
    with pytest.raises(SlackError) as caught:
        bot.post("C0ALERTS", "hi", None, key="k")

    assert outcome(caught.value) == ("http_500", False, None, True)
    assert slack.methods() == ["chat.postMessage"]


def test_channel_not_found_is_permanent_with_a_one_line_fix(bot: SlackBot, slack: FakeSlack) -> None:
    slack.fail_next("chat.postMessage", error="channel_not_found")
    with pytest.raises(SlackError) as caught:
        bot.post("C0ALERTS", "hi", None, key="k")

    assert outcome(caught.value) == ("channel_not_found", True, None, False)
    assert caught.value.exit_code == 3
    assert str(caught.value) == (
        "Slack refused chat.postMessage to C0ALERTS: channel_not_found "
        "(invite the bot to the channel or fix `channel` in the config)"
    )
    with pytest.raises(SlackError, match="to #nope: channel_not_found"):  # the fake's own refusal
        bot.post("#nope", "hi", None, key="k")


@pytest.mark.parametrize(
    ("error", "permanent", "unknown_outcome"),
    [
        ("ratelimited", False, False),
        ("service_unavailable", False, False),
        ("request_timeout", False, False),
        ("internal_error", False, True),  # Slack: "some aspect of the operation may have succeeded"
        ("fatal_error", False, True),
        ("not_in_channel", True, False),
        ("invalid_blocks", True, False),
        ("msg_too_long", True, False),
        ("a_code_slack_adds_next_year", True, False),
    ],
)
def test_ok_false_codes(
    bot: SlackBot, slack: FakeSlack, error: str, permanent: bool, unknown_outcome: bool
) -> None:
    slack.fail_next("chat.postMessage", error=error)
    with pytest.raises(SlackError) as caught:
        bot.post("C0ALERTS", "hi", None, key="k")
    assert outcome(caught.value) == (error, permanent, None, unknown_outcome)
    assert "\n" not in str(caught.value)


def test_a_drop_after_accepting_is_unknown_outcome_not_reposted_and_found_by_key(
    bot: SlackBot, slack: FakeSlack
) -> None:
    slack.fail_next("chat.postMessage", drop=True)
    with pytest.raises(SlackError) as caught:
        bot.post("C0ALERTS", "CPA up", None, key="cpa|2024-05-01")

    assert outcome(caught.value) == ("connection", False, None, True)
    assert "may have been sent" in str(caught.value)
    assert slack.methods() == ["chat.postMessage"]  # slack-sdk did not re-send it
    [stored] = slack.messages("C0ALERTS")
    assert bot.find_by_key("C0ALERTS", "cpa|2024-05-01") == Posted("C0ALERTS", stored["ts"])


def test_a_drop_before_processing_is_also_unknown_to_the_client(bot: SlackBot, slack: FakeSlack) -> None:
    slack.fail_next("chat.postMessage", drop_before=True)
    with pytest.raises(SlackError) as caught:
        bot.post("C0ALERTS", "hi", None, key="k")
    assert caught.value.unknown_outcome is True
    assert slack.messages("C0ALERTS") == []
    assert bot.find_by_key("C0ALERTS", "k") is None  # so the delivery step may post again


def test_fail_next_is_consumed_in_order(bot: SlackBot, slack: FakeSlack) -> None:
    slack.fail_next("chat.postMessage", times=2, status=500)
    codes = []
    for _ in range(3):
        try:
            bot.post("C0ALERTS", "hi", None, key="k")
            codes.append("ok")
        except SlackError as err:
            codes.append(err.code)
    assert codes == ["http_500", "http_500", "ok"]


def test_a_refused_connection_is_transient_and_surely_not_sent() -> None:
    bot = SlackBot("xoxb-test", base_url=f"http://127.0.0.1:{free_port()}/api/", timeout=2)
    with pytest.raises(SlackError) as caught:
        bot.post("C0ALERTS", "hi", None, key="k")
    assert outcome(caught.value) == ("connection", False, None, False)


@pytest.mark.parametrize(
    ("exc", "unknown_outcome"),
    [
        (http.client.RemoteDisconnected("Remote end closed connection without response"), True),
        (http.client.IncompleteRead(b"{"), True),
        (ConnectionResetError(104, "Connection reset by peer"), True),
        (TimeoutError("timed out"), True),
        (URLError(TimeoutError("timed out")), True),
        (URLError(ConnectionRefusedError(111, "Connection refused")), False),
        (URLError(socket.gaierror(-2, "Name or service not known")), False),
    ],
)
def test_classify_connection_errors(exc: Exception, unknown_outcome: bool) -> None:
    err = classify(exc, "chat.postMessage", "C0ALERTS")
    assert (err.code, err.permanent, err.unknown_outcome) == ("connection", False, unknown_outcome)
    assert str(err).startswith("Could not reach Slack for chat.postMessage to C0ALERTS (")
    assert "\n" not in str(err)


# -- check ------------------------------------------------------------------------------------


def test_check_resolves_names_and_ids_over_all_pages(bot: SlackBot, slack: FakeSlack) -> None:
    assert bot.check(["#kpi-alerts", "paid-media", "C0PAID"]) == {
        "#kpi-alerts": "C0ALERTS",
        "paid-media": "C0PAID",
        "C0PAID": "C0PAID",
    }
    assert slack.methods() == ["auth.test", "conversations.list", "conversations.list", "conversations.info"]


def test_check_fails_clearly_on_an_unknown_channel(bot: SlackBot) -> None:
    with pytest.raises(SlackError) as caught:
        bot.check(["#kpi-alerts", "#nope"])
    assert caught.value.permanent and caught.value.code == "channel_not_found"
    assert "'#nope'" in str(caught.value) and "invite the bot" in str(caught.value)
    with pytest.raises(SlackError, match="conversations.info to C0NOPE12: channel_not_found"):
        bot.check(["C0NOPE12"])


def test_check_fails_clearly_on_a_bad_token(slack: FakeSlack) -> None:
    with pytest.raises(SlackError) as caught:
        SlackBot("xoxb-revoked", base_url=slack.url).check(["#kpi-alerts"])
    assert (caught.value.code, caught.value.permanent) == ("invalid_auth", True)
    assert str(caught.value).startswith("Slack refused auth.test: invalid_auth (check SLACK_BOT_TOKEN")
    assert "xoxb-revoked" not in str(caught.value)


# -- webhook ----------------------------------------------------------------------------------


def test_webhook_posts_and_can_do_nothing_else(slack: FakeSlack, tmp_path: Path) -> None:
    hook = SlackWebhook(slack.webhook_url, timeout=5)
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*CPA up*"}}]

    assert hook.post("#ignored", "CPA up", blocks, key="k") == Posted(channel="webhook", ts="")
    [stored] = slack.messages("webhook")
    assert (stored["text"], stored["blocks"]) == ("CPA up", blocks)
    assert (hook.supports_threads, hook.supports_files, hook.can_look_up) == (False, False, False)
    assert hook.check(["#kpi-alerts"]) == {} and hook.find_by_key("webhook", "k") is None
    hook.update("webhook", "", "x", None)
    hook.upload_chart("webhook", "", tmp_path / "none.png", "t")
    assert slack.methods() == ["webhook"]


@pytest.mark.parametrize(
    ("fail", "code", "permanent", "retry_after", "unknown_outcome"),
    [
        ({"status": 500}, "http_500", False, None, True),
        ({"status": 429, "retry_after": 2}, "ratelimited", False, 2.0, False),
        ({"status": 404, "error": "no_service"}, "no_service", True, None, False),
        ({"status": 403, "error": "invalid_token"}, "invalid_token", True, None, False),
        ({"status": 400, "error": "invalid_payload"}, "invalid_payload", True, None, False),
        ({"drop": True}, "connection", False, None, True),
    ],
)
def test_webhook_failures(
    slack: FakeSlack,
    fail: dict[str, object],
    code: str,
    permanent: bool,
    retry_after: float | None,
    unknown_outcome: bool,
) -> None:
    slack.fail_next("webhook", **fail)  # type: ignore[arg-type]
    with pytest.raises(SlackError) as caught:
        SlackWebhook(slack.webhook_url, timeout=5).post("", "hi", None, key="k")
    assert outcome(caught.value) == (code, permanent, retry_after, unknown_outcome)
    assert slack.methods() == ["webhook"]  # never re-sent by slack-sdk


def test_webhook_404_says_the_fix(slack: FakeSlack) -> None:
    slack.fail_next("webhook", status=404, error="no_service")
    with pytest.raises(SlackError) as caught:
        SlackWebhook(slack.webhook_url).post("", "hi", None, key="k")
    assert str(caught.value) == (
        "Slack refused webhook: no_service "
        "(the webhook is disabled or the URL is wrong: create a new one, set SLACK_WEBHOOK_URL)"
    )


# -- choosing a notifier ------------------------------------------------------------------------


def test_make_notifier_picks_by_environment(slack: FakeSlack) -> None:
    both = {"SLACK_BOT_TOKEN": "xoxb-test", "SLACK_WEBHOOK_URL": slack.webhook_url}
    # SLACK_API_URL without its trailing slash still reaches /api/<method>.
    notifier = make_notifier({**both, "SLACK_API_URL": slack.url.rstrip("/")})
    assert isinstance(notifier, SlackBot)
    assert notifier.check(["#kpi-alerts"]) == {"#kpi-alerts": "C0ALERTS"}

    webhook = make_notifier({"SLACK_BOT_TOKEN": " ", "SLACK_WEBHOOK_URL": slack.webhook_url})
    assert isinstance(webhook, SlackWebhook)
    webhook.post("", "hi", None, key="k")
    assert len(slack.messages("webhook")) == 1

    assert make_notifier({}) is None


def test_slack_api_url_from_the_environment_is_the_default_base_url(
    slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_API_URL", slack.url)
    assert SlackBot("xoxb-test").post("C0PAID", "hi", None, key="k").channel == "C0PAID"
    assert len(slack.messages("paid-media")) == 1


def test_fake_slack_stamps_messages_from_now_by_default() -> None:
    with FakeSlack() as fake:
        recent_bot = SlackBot("xoxb-test", base_url=fake.url)
        posted = recent_bot.post("C0ALERTS", "hi", None, key="k")
        assert float(posted.ts) > time.time() - 60
        assert recent_bot.find_by_key("C0ALERTS", "k", oldest=time.time() - 3600) == posted
