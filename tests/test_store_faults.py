"""A SQLite store under faults (issue 17, 11b and 11c): made read-only for a while, it fails one
write with a clear error and then recovers on the same `Store`, and a message left `sending` by
that failed write goes out once afterwards (with its charts); deleted or replaced under a running
store, the next operation says so at once instead of writing into an unlinked file."""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alerting import alert, report
from fakeslack import FakeSlack

from alerts.delivery import DeliveryPolicy, deliver
from alerts.incidents import evaluation_records, plan_cycle
from alerts.slack import SlackBot
from alerts.store import OutboxItem, Store, StoreError
from forecaster.settings import parse_config

from test_delivery import CONFIG, NOW, Clock, posts

READ_ONLY = r"state store sqlite:///.* failed: attempt to write a readonly database; make the store's file and its folder writable"


class ReadOnlyWindow:
    """Makes a store's SQLite file read-only for its connections, and writable again.

    SQLite opens a file it may not write read-only, and such a handle stays read-only for good:
    that is the pooled handle of the incident. As a normal user the file and its folder are
    chmod-ed; as root (CI, this machine) chmod does not bite, so every connection opened in the
    window is opened with SQLite's own `mode=ro` (SQLAlchemy's public `do_connect` hook): the
    same handle, the same error. Either way the pool is emptied when the window opens, as when
    the daemon's threads open new connections during it.
    """

    def __init__(self, store: Store, path: Path) -> None:
        self.store, self.path, self.closed = store, path, False
        self.simulate = os.geteuid() == 0
        sa.event.listen(store.engine, "do_connect", self._connect)

    def _connect(self, dialect: Any, record: Any, cargs: list[Any], cparams: dict[str, Any]) -> Any:
        if self.closed and self.simulate:
            return sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, **cparams)
        return None  # SQLAlchemy connects as usual

    def close(self) -> None:
        self.closed = True
        if not self.simulate:
            self.path.chmod(0o444)
            self.path.parent.chmod(0o555)
        self.store.engine.dispose()

    def open(self) -> None:
        self.closed = False
        if not self.simulate:
            self.path.parent.chmod(0o755)
            self.path.chmod(0o644)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.db"


@pytest.fixture
def store(path: Path) -> Iterator[Store]:
    opened = Store(f"sqlite:///{path}")
    yield opened
    opened.close()


@pytest.fixture
def window(store: Store, path: Path) -> Iterator[ReadOnlyWindow]:
    made = ReadOnlyWindow(store, path)
    yield made
    made.open()


def item(key: str) -> OutboxItem:
    return OutboxItem(key, "message", "#kpi-alerts", "text")


def test_a_read_only_store_fails_one_write_clearly_and_recovers_when_writable(store, window):
    store.queue([item("before")])
    window.close()
    if window.simulate:  # (with chmod SQLite may refuse reads too: WAL needs its -shm file)
        assert [row.key for row in store.due(NOW + timedelta(days=3650))] == ["before"]  # reads still work
    with pytest.raises(StoreError, match=READ_ONLY if window.simulate else "state store sqlite:///.* failed: "):
        store.queue([item("during")])
    window.open()
    assert store.queue([item("after")]) == 1  # the same Store object: no restart needed
    assert [row.key for row in store.due(NOW + timedelta(days=3650))] == ["before", "after"]


def test_a_message_left_sending_by_a_failed_write_goes_out_once_when_writable(store, window):
    """The post reached Slack, then the store turned read-only before `mark_sent`: the row stays
    `sending`. Writable again, the next delivery finds it in the channel by its key (no second
    post) and then sends its charts, which waited for it."""
    settings = parse_config(CONFIG)
    checked = report([alert("conversion_rate")])
    store.record_cycle(evaluation_records(checked), plan_cycle(checked, settings, {}, [], NOW, charts=True), NOW)

    class ReadOnlyBeforeMarkSent:
        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

        def mark_sent(self, *args: Any, **kwargs: Any) -> None:
            window.close()
            store.mark_sent(*args, **kwargs)

    with FakeSlack() as slack:
        bot = SlackBot("xoxb-test", base_url=slack.url)
        ids = bot.check(["#kpi-alerts"])
        clock = Clock(NOW)
        with pytest.raises(StoreError, match="state store sqlite:///.* failed: "):
            deliver(ReadOnlyBeforeMarkSent(), bot, ids, DeliveryPolicy(), clock=clock, sleep=clock.sleep)
        [message] = [row for row in store.waiting() if row.kind == "message"]
        assert message.state == "sending" and len(posts(slack)) == 1

        window.open()
        clock.now += timedelta(seconds=DeliveryPolicy().lease + 1)  # the lease of the lost attempt ends
        result = deliver(store, bot, ids, DeliveryPolicy(), clock=clock, sleep=clock.sleep)
        assert len(posts(slack)) == 1 and slack.methods().count("chat.postMessage") == 1
        assert len(slack.files) == 1 and result.sent == 2  # the message (settled) and its chart
        assert store.counts() == {"pending": 0, "sending": 0, "sent": 2, "dead": 0}


def test_a_deleted_store_file_is_reported_at_the_next_operation(store, path):
    store.queue([item("before")])
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    with pytest.raises(StoreError, match=f"state store file {path} was deleted while kpiwatch was using it; "
                                         "nothing more is written: restore it from a backup"):
        store.queue([item("lost")])
    with pytest.raises(StoreError, match="was deleted"):  # reads too: the state they show is gone
        store.counts()
    assert not path.exists()  # nothing was written anywhere, not even a new empty file


def test_a_store_file_replaced_under_a_running_store_is_reported(store, path, tmp_path):
    store.queue([item("before")])
    shutil.copy(path, tmp_path / "backup.db")
    os.replace(tmp_path / "backup.db", path)
    with pytest.raises(StoreError, match=f"state store file {path} was replaced by another file"):
        store.queue([item("after")])
