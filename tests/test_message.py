"""Slack Block Kit messages: content, links, and Slack's limits."""

from __future__ import annotations

import json

from alerting import alert

from alerts.message import (
    MAX_BLOCKS,
    MAX_SECTION_CHARS,
    dashboard_link,
    message_blocks,
    message_text,
    resolved_blocks,
)
from forecaster.types import Severity


def _texts(blocks: list[dict]) -> str:
    return json.dumps(blocks, ensure_ascii=False)


def test_one_alert_has_headline_numbers_hints_and_link():
    blocks = message_blocks([alert(hints=4)], "kpiwatch: 1 anomaly", "https://bi.example.com/{kpi}?s={segment}&d={period}")
    assert blocks[0] == {"type": "header", "text": {"type": "plain_text", "text": "kpiwatch: 1 anomaly", "emoji": True}}
    headline, numbers = blocks[1]["text"]["text"], blocks[2]["text"]["text"]
    assert headline.startswith(":red_circle: *CRITICAL* · *conversion_rate* ↓ · device=mobile\n")
    assert "*Actual* 60 · *expected* 100 (99% band 95 to 105) · *-40.0%*" in numbers
    assert ":moneybag: hint 2 for conversion_rate" in numbers.splitlines()[1]  # impact right under the numbers
    assert "• hint 0 for conversion_rate" in numbers and "• hint 3 for conversion_rate" in numbers
    assert "<https://bi.example.com/conversion_rate?s=device%3Dmobile&d=2025-12-10|Open in the dashboard>" in numbers
    assert blocks[3] == {"type": "divider"}


def test_max_hints_limits_the_hints_shown():
    numbers = message_blocks([alert(hints=5)], "t", max_hints=1)[2]["text"]["text"]
    assert numbers.count("• ") == 1


def test_good_news_and_warning_marks():
    good = message_blocks([alert(severity=Severity.GOOD_NEWS, is_bad=False)], "t")[1]["text"]["text"]
    warning = message_blocks([alert(severity=Severity.WARNING)], "t")[1]["text"]["text"]
    assert good.startswith(":large_green_circle: *GOOD NEWS*")
    assert warning.startswith(":large_orange_circle: *WARNING*")


def test_slack_limits_hold_for_many_long_alerts():
    many = [alert(kpi="k" * 2000 + str(i), hints=5) for i in range(40)]
    blocks = message_blocks(many, "x" * 500)
    assert len(blocks) <= MAX_BLOCKS
    assert len(blocks[0]["text"]["text"]) <= 150
    sections = [b["text"]["text"] for b in blocks if b["type"] == "section"]
    assert max(len(s) for s in sections) <= MAX_SECTION_CHARS
    assert "and 25 more alert(s)" in blocks[-1]["elements"][0]["text"]  # 15 fit, the rest are counted
    with_footer = message_blocks(many, "t", footer="charts elsewhere")
    assert len(with_footer) <= MAX_BLOCKS and with_footer[-1]["elements"][0]["text"] == "charts elsewhere"
    assert len(message_text(many, "title")) <= 40000


def test_control_characters_are_escaped():
    text = message_blocks([alert(kpi="a<b>&c")], "t")[1]["text"]["text"]
    assert "a&lt;b&gt;&amp;c" in text and "<b>" not in text


def test_no_template_no_link():
    assert dashboard_link("", alert()) == ""
    assert "Open in the dashboard" not in _texts(message_blocks([alert()], "t"))


def test_resolved_lines_go_under_the_header_once():
    blocks = message_blocks([alert()], "t")
    once = resolved_blocks(blocks, ["resolved A"])
    twice = resolved_blocks(once, ["resolved A", "resolved B"])
    assert once[1]["block_id"] == "kpiwatch-resolved" and once[1]["elements"][0]["text"] == "resolved A"
    assert [b.get("block_id") for b in twice].count("kpiwatch-resolved") == 1
    assert twice[1]["elements"][0]["text"] == "resolved A\nresolved B"
    assert twice[2:] == blocks[1:]
