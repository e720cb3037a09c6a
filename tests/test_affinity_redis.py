"""Homes in Redis, and each worker's copy of them kept true by pub/sub (services/affinity_redis.py).

Every test here needs Redis: OCTORELAY_TEST_REDIS_URL, or a private redis-server. "Workers" are
stores (or apps) of their own in this process, each with its own subscription, as two gunicorn
workers would have; tests/test_affinity.py runs the two-process version.
"""
from __future__ import annotations

import time

import pytest
import redis

from app.db import db
from app.services.affinity_redis import RedisStore
from app.state import services
from tests.support.admin import AdminClient
from tests.support.affinity import affinity_column, app_with, post, served_by, turn_body
from tests.support.constants import UPSTREAM_KEY
from tests.support.upstream import anthropic_message, error_answer, json_answer


def until(predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@pytest.fixture
def rclient(redis_url):
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=1)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def workers(rclient):
    """Two stores on one Redis, both subscribed."""
    stores = [RedisStore(rclient), RedisStore(rclient)]
    until(lambda: all(s.watch.live() for s in stores))
    yield stores
    for s in stores:
        s.close()


def commands(client) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): v["calls"] for name, v in stats.items()}


def test_a_home_set_by_one_worker_is_known_to_the_other_without_a_round_trip(workers, rclient):
    a, b = workers
    assert a.known("k") is None and b.known("k") is None
    rclient.config_resetstat()
    a.set("k", 1)  # a new home: nobody can hold a copy of it, so nothing is announced
    assert a.known("k") == 1 and b.known("k") is None
    assert b.get("k") == 1 and b.known("k") == 1  # read once, then known
    assert "publish" not in commands(rclient)
    b.set("k", 2)  # a move: announced
    assert commands(rclient).get("publish") == 1
    until(lambda: a.known("k") == 2)
    rclient.config_resetstat()
    assert [a.known("k") for _ in range(20)] == [2] * 20 and [b.known("k") for _ in range(20)] == [2] * 20
    assert "getex" not in commands(rclient) and "get" not in commands(rclient)


def test_a_recorded_turn_that_changes_a_home_is_announced_and_one_that_keeps_it_is_not(workers, rclient):
    a, b = workers
    a.set("k", 1)
    rclient.config_resetstat()
    assert b.record([("k", 1), ("k", None), ("new", 4)]) == [1, 1, None]  # kept, read, new: nothing to tell
    assert "publish" not in commands(rclient)
    assert b.known("k") == 1 and b.known("new") == 4  # what the writer read or wrote is known
    assert b.record([("k", 3)]) == [1]  # moved: told
    assert commands(rclient).get("publish") == 1
    until(lambda: a.known("k") == 3)


def test_a_reply_does_not_undo_a_change_heard_while_it_was_on_its_way(workers):
    a, b = workers
    a.set("k", 1)
    started = time.monotonic()
    b.set("k", 2)  # a move: the change reaches a's copy ...
    until(lambda: a.known("k") == 2)
    a._copy("k", 1, started, a.watch.epoch)  # ... after a read sent before it, answering the old home
    assert a.known("k") == 2


def test_a_dropped_subscription_empties_the_copy_until_it_is_back(workers, rclient):
    a, b = workers
    a.set("k", 1)
    assert b.get("k") == 1 and b.known("k") == 1
    rclient.client_kill_filter(_type="pubsub")
    until(lambda: not b.watch.live())
    assert b.known("k") is None  # a change may have been missed: ask Redis
    a.set("k", 5)  # made while b is not subscribed
    assert b.get("k") == 5
    until(lambda: b.watch.live())  # subscribed again (the watch thread retries each TICK_S)
    assert b.known("k") is None  # nothing copied across the gap
    assert b.get("k") == 5 and b.known("k") == 5


def test_a_copy_is_trusted_for_a_limited_time(rclient):
    store = RedisStore(rclient, fresh_s=0.2)
    try:
        until(store.watch.live)
        store.set("k", 1)
        assert store.known("k") == 1
        time.sleep(0.3)
        assert store.known("k") is None  # Redis confirms it again at the next read
        assert store.get("k") == 1 and store.known("k") == 1
    finally:
        store.close()


def test_stores_on_other_databases_do_not_hear_each_other(redis_url, rclient):
    db_number = rclient.connection_pool.connection_kwargs.get("db", 0)
    other = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + f"/{(db_number + 1) % 16}")
    assert other.connection_pool.connection_kwargs["db"] != db_number
    a, b = RedisStore(rclient), RedisStore(other)
    try:
        until(lambda: a.watch.live() and b.watch.live())
        a.set("k", 1)
        b.set("k", 8)
        b.set("k", 9)  # a move on the other database: announced there
        a.set("z", 1)
        a.set("z", 2)  # a move here: once a knows it, it has drained past b's message
        until(lambda: a.known("z") == 2)
        assert a.known("k") == 1
        other.delete(RedisStore.PREFIX + "k")
    finally:
        a.close()
        b.close()
        other.close()


# through the relay: two apps on one database and one Redis, as two workers -------------------

@pytest.fixture
def two_apps(env, redis_url, upstream):
    apps = [app_with({**env, "REDIS_URL": redis_url}) for _ in range(2)]
    redis.Redis.from_url(redis_url).flushdb()
    yield apps
    for app in apps:
        services(app).close()
    db.obj.close_all()


def test_turns_with_a_known_home_ask_redis_nothing_before_routing_and_a_move_is_followed_at_once(
        two_apps, redis_url, upstream):
    first, second = two_apps
    upstream.set_default(json_answer(anthropic_message()))
    admin = AdminClient(first.test_client())
    for name in "abc":
        admin.create_channel(name=name, type="anthropic", base_url=f"{upstream.url}/{name}",
                             api_key=UPSTREAM_KEY, models=["claude-*"])
    key = admin.create_key(name="k")
    stores = [services(app).relay.affinity.store for app in two_apps]
    until(lambda: all(s.watch.live() for s in stores))
    reads = []  # the store's reads before routing (the settlement writer reads through `record`)
    for store in stores:
        store.get = lambda key, read=store.get: reads.append(key) or read(key)
    rclient = redis.Redis.from_url(redis_url)
    rclient.config_resetstat()
    headers = {"x-claude-code-session-id": "moving"}
    clients = [first.test_client(), second.test_client()]

    def turn(worker, t):
        resp = post(clients[worker], key, turn_body("task", t), headers)
        assert resp.status_code == 200, resp.get_data(as_text=True)

    for t in range(1, 6):
        turn(t % 2, t)  # each worker reads the home once, then knows it
    home = served_by(upstream)[0]
    assert served_by(upstream) == [home] * 5
    assert len(reads) == 2

    upstream.script(error_answer(529, "overloaded_error", "busy"), path=f"/{home}/v1/messages")
    turn(0, 6)  # the home fails: the turn moves, and announces it before answering
    moved_to = served_by(upstream)[-1]
    assert moved_to != home
    for t in range(7, 11):
        turn(t % 2, t)  # the home is healthy again, but the conversation stays where it moved
    assert served_by(upstream)[-4:] == [moved_to] * 4
    assert affinity_column() == ["new"] + ["kept"] * 4 + ["moved"] + ["kept"] * 4
    assert len(reads) == 2 and commands(rclient).get("publish") == 1
    rclient.close()


def test_a_turn_answered_from_the_copy_does_not_undo_a_move_made_meanwhile(workers, rclient):
    """Two turns of one conversation at once (Claude Code's parallel calls share a session): one
    worker routes to the home it knows while the other fails over; the first one's record must
    not put the home back."""
    from app.services.affinity import Affinity, scoped_key

    a, b = workers
    first = Affinity(a)
    key = scoped_key(1, "m", "h:s")
    a.set(key, 1)
    turn = first.lookup(1, "m", {"x-claude-code-session-id": "s"}, {})
    assert turn.key == key and turn.home == 1 and not turn.read  # known: routed to 1 without asking Redis
    assert b.get(key) == 1
    b.set(key, 2)  # meanwhile the other worker's turn failed on 1 and moved to 2
    outcome, pending = first.conclude(turn, 1, moves=True)  # channel 1 answered the first turn
    assert outcome is None and pending is not None
    assert first.record([(pending, 1)]) == ["moved"]  # the turn went where the home no longer is
    assert rclient.get(RedisStore.PREFIX + key) == b"2"  # ... and the home stays where it moved
    until(lambda: a.known(key) == 2)
