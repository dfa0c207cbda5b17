"""Every Slack text the daemon sends is built in `alerts.message` (issue 17, #10): a newcomer
changes the "No data" message there, not in the daemon, which only schedules and calls."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pandas as pd

import alerts.daemon
from alerts.message import back_text, failing_text, late_text, no_data_text

EMOJI = re.compile(r":[a-z_]+:")


def test_the_daemon_builds_no_slack_text_itself():
    tree = ast.parse(Path(alerts.daemon.__file__).read_text())
    literals = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    texts = [text for text in literals if EMOJI.search(text) or "No data" in text or "Source back" in text]
    assert texts == []


def test_the_daemons_messages_read_as_before():
    since = pd.Timestamp("2025-12-05T06:00", tz="UTC")
    assert no_data_text("signups", "Fri 05 Dec 2025", "has 40% of its usual rows", 6.2) == (
        ":grey_question: No data: signups for Fri 05 Dec 2025 has 40% of its usual rows 6 h after it ended; it is "
        "not judged (a gap is not a drop). Check the export or the source.")
    assert failing_text("leads", "source", 3, since, "no such file") == (
        ":warning: Source failing: leads could not be read for 3 cycles in a row (since 2025-12-05 06:00 UTC): no "
        "such file. Its last state is kept; missed periods are judged when it is back.")
    assert failing_text("leads", "job", 3, since, "stopped after 900 s").startswith(
        ":warning: Cannot judge: leads failed 3 cycles in a row (since 2025-12-05 06:00 UTC): stopped after 900 s.")
    assert back_text("leads", "source") == (":white_check_mark: Source back: leads is read again; the missed "
                                            "periods were judged.")
    assert back_text("leads", "job") == ":white_check_mark: Judged again: leads; the missed periods were judged."
    latest = pd.Timestamp("2025-12-10", tz="UTC")
    assert late_text(latest - pd.Timedelta(days=2), latest, "D") == (
        "Late: judged 2 days after it closed (kpiwatch was down or the data was late).")
