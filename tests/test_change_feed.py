"""The change feed: a writer answers only once the change can be seen by every worker."""
import os
import time

import pytest

from app.services import changes
from app.services.changes import change_feed


def test_an_admin_write_returns_after_its_own_listener_heard_it(app, admin):
    """PostgreSQL delivers a NOTIFY to each listening backend a moment after the commit, so the
    writer waits for its own listener's echo; backends signalled together deliver together."""
    if not os.environ.get("OCTORELAY_TEST_DATABASE_URL"):
        pytest.skip("LISTEN/NOTIFY needs PostgreSQL: set OCTORELAY_TEST_DATABASE_URL")
    feed = change_feed()
    feed.version()  # this process starts listening
    for _ in range(200):
        if feed._conn is not None:
            break
        time.sleep(0.01)
    assert feed._conn is not None
    before = feed.version()
    feed._heard.clear()  # bounded (the newest 256): earlier tests' notifications may fill it
    admin.create_channel(name="echo", models=["echo-*"])
    assert len(feed._heard) >= 1  # heard before the write returned
    assert feed.version() > before


def test_without_a_listener_the_writer_does_not_wait(app):
    """The CLI (or a process whose listener is down) has no echo to wait for."""
    feed = changes.ChangeFeed()
    assert feed.await_echo("nobody-sent-this", timeout=5) is False
