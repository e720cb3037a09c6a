"""Caches that reload under a lock take their pooled connection before the lock (app/db.py,
connection_then), so a small pool cannot deadlock under a burst (issue 21).

The deadlock this guards against: a request holding a pooled connection (it just looked up its
key) waits for a cache's lock, while the thread holding that lock waits for a connection from
the pool that such requests have emptied. Nobody moves until the pool wait runs out, and the
lock holder's request gets a 503. It took the journal's writer and sweeper (two more threads
wanting connections) to make it show in a burst of budgeted requests on PostgreSQL.
"""
from __future__ import annotations

import threading
import time

import pytest
from playhouse.pool import MaxConnectionsExceeded

import app.db as app_db
from app.db import db, open_database, release
from app.models import ApiKey
from app.services.pricing import PriceBook
from app.services.routing import ChannelDirectory
from app.state import services

POOL = 2
WAIT_S = 3.0  # the pool wait in these tests: a deadlock ends in MaxConnectionsExceeded after it


@pytest.fixture
def tiny_pool(app, env, monkeypatch):
    """The app's database, reopened with a pool of two connections and a short pool wait."""
    monkeypatch.setattr(app_db, "POOL_WAIT_S", WAIT_S)
    original = db.obj
    tiny = open_database(env["DATABASE_URL"], pool_size=POOL)
    assert tiny._max_connections == POOL and tiny._wait_timeout == WAIT_S
    db.initialize(tiny)
    try:
        yield tiny
    finally:
        tiny.close_all()
        db.initialize(original)


def caches(app):
    """A price book and a channel directory that reload on every call (ttl 0): a forced reload."""
    directory = services(app).relay.directory
    return {"prices": (PriceBook(ttl=0), "table"),
            "channels": (ChannelDirectory(directory.box, ttl=0), "channels")}


def borrow() -> None:
    """What a request does when it looks up its key: a query on a pooled connection, kept."""
    ApiKey.select().count()


@pytest.mark.parametrize("name", ["prices", "channels"])
def test_a_reload_under_the_lock_never_waits_on_a_pool_its_waiters_hold(app, tiny_pool, name):
    """Every connection is held by a request about to need the cache; a request without one
    reaches the reload first. Before the fix it took the lock, then waited on the pool while
    the connection holders waited on the lock: MaxConnectionsExceeded after the pool wait."""
    cache, method = caches(app)[name]
    reload = getattr(cache, method)
    errors: list[BaseException] = []
    holding = threading.Barrier(POOL + 1)
    go = threading.Event()

    def holder():
        try:
            borrow()
            holding.wait(10)
            go.wait(10)
            reload()
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)
        finally:
            release()

    def latecomer():
        try:
            reload()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            release()

    holders = [threading.Thread(target=holder, daemon=True) for _ in range(POOL)]
    for t in holders:
        t.start()
    holding.wait(10)  # the pool is empty now
    late = threading.Thread(target=latecomer, daemon=True)
    late.start()
    deadline = time.monotonic() + 1.0  # before the fix the latecomer takes the lock at once
    while not cache._lock.locked() and time.monotonic() < deadline:
        time.sleep(0.01)
    go.set()
    for t in [*holders, late]:
        t.join(WAIT_S * 4)
    assert not any(t.is_alive() for t in [*holders, late])
    assert not errors, [type(e).__name__ + ": " + str(e) for e in errors]


def test_a_burst_with_forced_reloads_on_a_pool_of_two(app, tiny_pool):
    """Many requests at once, some holding a connection when they reach the caches, every cache
    call a reload: all of them get through, none waits out the pool."""
    cached = [getattr(cache, method) for cache, method in caches(app).values()]
    errors: list[BaseException] = []
    start = threading.Barrier(24)

    def request(n: int):
        try:
            start.wait(10)
            for i in range(15):
                if (n + i) % 2:
                    borrow()
                for reload in cached:
                    reload()
                release()  # the request ends (or waits on its upstream)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            release()

    threads = [threading.Thread(target=request, args=(n,), daemon=True) for n in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert not [e for e in errors if isinstance(e, MaxConnectionsExceeded)], len(errors)
    assert not errors, [type(e).__name__ for e in errors[:5]]
