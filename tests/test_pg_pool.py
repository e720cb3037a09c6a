"""The PostgreSQL pool hands a connection given back moments ago out without peewee's `SELECT 1`
ping, and still pings (and replaces) one that sat idle, where a restarted server shows up, or
any, once one of them was found broken."""
from __future__ import annotations

import psycopg2
import pytest

from app import db as db_module
from app.db import open_database
from tests.support.constants import PG_URL

pytestmark = pytest.mark.skipif(not PG_URL, reason="the pool is PostgreSQL's: set OCTORELAY_TEST_DATABASE_URL")


def last_statement(pid: int) -> str:
    """What backend `pid` ran last, as PostgreSQL itself reports it."""
    with psycopg2.connect(PG_URL) as watcher, watcher.cursor() as cursor:
        cursor.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", (pid,))
        row = cursor.fetchone()
    watcher.close()
    return row[0] if row else ""


@pytest.fixture
def pool():
    database = open_database(PG_URL, pool_size=1)
    yield database
    database.close_all()


def checkout(pool, sql: str | None = None) -> int:
    """One borrow of the pool's only connection; returns its backend pid."""
    with pool.connection_context():
        if sql:
            pool.execute_sql(sql)
        return pool.connection().get_backend_pid()


def test_a_connection_given_back_moments_ago_is_not_pinged(pool):
    pid = checkout(pool, "SELECT 'marker'")
    assert checkout(pool) == pid
    assert last_statement(pid) == "SELECT 'marker'"  # the second borrow sent nothing


def test_an_idle_connection_is_pinged_and_a_dead_one_replaced(pool, monkeypatch):
    pid = checkout(pool, "SELECT 'marker'")
    monkeypatch.setattr(db_module, "PING_IDLE_S", 0.0)  # every connection counts as idle now
    assert checkout(pool) == pid
    assert last_statement(pid) == "SELECT 1"
    with psycopg2.connect(PG_URL) as admin, admin.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", (pid,))
    admin.close()
    fresh = checkout(pool, "SELECT 'after'")
    assert fresh != pid  # the ping found the server had closed it; a new one was made


def terminate(pids) -> None:
    with psycopg2.connect(PG_URL) as admin, admin.cursor() as cursor:
        for pid in pids:
            cursor.execute("SELECT pg_terminate_backend(%s)", (pid,))
    admin.close()


def test_once_a_connection_is_found_broken_the_others_are_pinged():
    """The server went away while two connections sat in the pool, given back moments ago: the
    first borrow fails, and the second is pinged, found dead and replaced instead of failing too
    (the settlement writer spooled one batch per pooled connection after an outage)."""
    database = open_database(PG_URL, pool_size=2)
    try:
        held = [database._connect(), database._connect()]  # noqa: SLF001 (two borrowed at once)
        pids = {conn.get_backend_pid() for conn in held}
        for conn in held:
            database._close(conn)  # noqa: SLF001 (given back: both in the pool, fresh)
        assert len(pids) == 2
        terminate(pids)
        with pytest.raises(Exception, match="server closed the connection"):
            with database.connection_context():
                database.execute_sql("SELECT 'first'")
        with database.connection_context():
            database.execute_sql("SELECT 'second'")
            assert database.connection().get_backend_pid() not in pids
    finally:
        database.close_all()
