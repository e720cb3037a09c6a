"""The database handle: late-bound, built from DATABASE_URL, one connection per thread.

Models bind to `db` (a DatabaseProxy) at import; `open_database` picks the
real class from the URL. SQLite runs in WAL mode with a busy timeout so
several gunicorn workers can share one file; PostgreSQL uses a small pool
(OCTORELAY_DB_POOL per worker): requests borrow a connection for a query and
give it back before they wait on an upstream (`release`), so a few
connections serve every open request, and a request that finds the pool
empty waits a bounded time, then gets a 503.
"""
from __future__ import annotations

import os
import re
import sys
import time
from contextlib import contextmanager

from peewee import DatabaseProxy, PostgresqlDatabase, SqliteDatabase
from playhouse.db_url import parse
from playhouse.migrations import Runner
from playhouse.pool import PooledDatabase, PooledPostgresqlDatabase, PooledSqliteDatabase

from .config import ConfigError

db = DatabaseProxy()

MIGRATIONS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "migrations")

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "busy_timeout": 10000,
    "synchronous": "normal",
    "foreign_keys": 1,
}


POOL_WAIT_S = 15.0  # longest wait for a free pooled connection; then MaxConnectionsExceeded (a 503)


def open_database(url: str, *, pool_size: int = 32, pooled: bool = True):
    """Build (but do not connect) the peewee database for `url`."""
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    params = parse(url)
    if scheme == "sqlite":
        path = params.pop("database")
        if path not in ("", ":memory:"):
            parent = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(parent):
                raise ConfigError(f"DATABASE_URL points into {parent}, which does not exist")
        if pooled and path not in ("", ":memory:"):
            return PooledSqliteDatabase(
                path, pragmas=SQLITE_PRAGMAS, max_connections=pool_size,
                stale_timeout=300, timeout=POOL_WAIT_S, check_same_thread=False, **params)
        return SqliteDatabase(path, pragmas=SQLITE_PRAGMAS, **params)
    if scheme in ("postgres", "postgresql"):
        if _under_gevent():
            _cooperative_psycopg2()
        name = params.pop("database")
        # A database that accepts connections but never answers must not hang a request.
        params.setdefault("connect_timeout", 3)
        if pooled:
            return PostgresPool(
                name, max_connections=pool_size, stale_timeout=300, timeout=POOL_WAIT_S, **params)
        return PostgresqlDatabase(name, **params)
    raise ConfigError(f"unsupported DATABASE_URL scheme {scheme!r}")


_PG_IDLE = 0  # psycopg2.extensions.TRANSACTION_STATUS_IDLE (psycopg2 is imported only for PostgreSQL)
PING_IDLE_S = 1.0  # a pooled PostgreSQL connection idle longer than this is pinged before it is reused


class PostgresPool(PooledPostgresqlDatabase):
    """peewee pings (`SELECT 1`) every pooled connection it hands out: one more round trip for
    each checkout, and the settlement writer checks out for every batch. A connection given back
    idle less than PING_IDLE_S ago was working then and is handed out as it is; one idle longer
    (where a restarted or failed-over server shows up) is still pinged. A broken connection that
    slips through fails its statement (the writer spools, a request gets a 503), and the pool then
    trusts none of its idle connections without a ping: after an outage one statement fails, not
    one per pooled connection."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._returned: dict[int, float] = {}  # id(connection) -> when it was last given back

    def _is_closed(self, conn) -> bool:
        returned = self._returned.get(id(conn))
        if (returned is not None and not conn.closed and time.monotonic() - returned < PING_IDLE_S
                and conn.get_transaction_status() == _PG_IDLE):
            return False
        return super()._is_closed(conn)

    def _close(self, conn, close_conn=False):
        broken = bool(conn.closed)  # it failed in use: the server went away (restart, failover, outage)
        super()._close(conn, close_conn)
        if broken:  # so every idle connection given back before is pinged before it is used again
            self._returned.clear()
            return
        if close_conn:
            self._returned.pop(id(conn), None)
            return
        if len(self._returned) > 4 * (self._max_connections or 32):  # ids of connections closed as stale
            self._returned.clear()
        self._returned[id(conn)] = time.monotonic()


PG_WAIT_S = 5.0  # under gevent: the longest one socket wait of a query or connect may take


def _under_gevent() -> bool:
    if "gevent" not in sys.modules:
        return False
    from gevent import monkey

    return monkey.is_module_patched("socket")


def _cooperative_psycopg2() -> None:
    """psycopg2 is C and blocks the whole process while it waits on PostgreSQL: under gevent
    that would freeze every stream of the worker. A wait callback makes it wait through
    gevent's hub instead, bounded (libpq's connect_timeout does not apply in this mode), so a
    hung server costs the requests that need it a 503, not the whole worker."""
    import psycopg2
    from gevent.socket import wait_read, wait_write
    from psycopg2 import extensions

    def wait(conn):
        while True:
            state = conn.poll()
            if state == extensions.POLL_OK:
                return
            waiter = wait_read if state == extensions.POLL_READ else wait_write
            if state not in (extensions.POLL_READ, extensions.POLL_WRITE):
                raise psycopg2.OperationalError(f"unexpected poll state {state}")
            waiter(conn.fileno(), timeout=PG_WAIT_S,
                   timeout_exc=psycopg2.OperationalError(f"no answer from PostgreSQL in {PG_WAIT_S:g} s"))

    extensions.set_wait_callback(wait)


def is_postgres(database) -> bool:
    return isinstance(database, PostgresqlDatabase)


@contextmanager
def _migration_lock(database):
    """Serialise concurrent `db upgrade`s (several instances starting at once)."""
    if is_postgres(database):
        database.execute_sql("SELECT pg_advisory_lock(7214103)")
        try:
            yield
        finally:
            database.execute_sql("SELECT pg_advisory_unlock(7214103)")
    else:
        yield


def upgrade(database, target: str | None = None) -> list[str]:
    """Apply pending migrations in order; returns the names applied (idempotent)."""
    with database.connection_context(), _migration_lock(database):
        return Runner(database, MIGRATIONS_DIR).up(target)


def describe_error(exc: Exception) -> str:
    """A database error in one line: its kind and the driver's first line (host, port, database
    name: what to fix), never a password a URL might carry."""
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    first = re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", first)
    first = re.sub(r"(password\s*=\s*)\S+", r"\1***", first, flags=re.I)
    return f"{type(exc).__name__}: {first[:200]}" if first else type(exc).__name__


def pending_migrations(database) -> list[str]:
    with database.connection_context():
        return [m.name for m in Runner(database, MIGRATIONS_DIR).status() if not m.applied]


def release() -> None:
    """Give this thread's (greenlet's) connection back to the pool, unless a transaction holds
    it. The relay calls this before every wait on an upstream: a request that looked up its key
    must not sit on a connection for the minutes a stream lasts."""
    if db.obj is not None and not db.is_closed() and not db.in_transaction():
        try:
            db.close()
        except Exception:  # a connection the server dropped: the pool has let go of it already
            pass


@contextmanager
def connection_then(lock):
    """A pooled connection first, then `lock`: how a cache reloads from the database under a lock.

    Taking them the other way round deadlocks a small pool under a burst: the thread holding the
    lock waits for a connection while the threads holding every connection (a request that just
    looked up its key) wait for that lock, until the pool wait ends in 503s. With the connection
    taken first, whoever holds the lock needs nothing more, and a thread waiting on the pool holds
    no lock. A connection this thread already had is kept; one taken here is given back."""
    opened = db.is_closed()
    if opened:
        db.connect()
    try:
        with lock:
            yield
    finally:
        if opened:
            release()


def init_app(app, settings) -> PooledDatabase:
    """Bind the proxy to the configured database and close connections after each request;
    returns the database bound."""
    # Requests rarely touch the database (key and channel caches, settlements batched by one
    # writer) and hold a connection only for the query, so a few serve a thousand greenlets.
    # PostgreSQL's own limit must hold every worker of every instance: OCTORELAY_DB_POOL is
    # small, and the start checks the budget (app/pg_budget.py). SQLite is one file on one
    # machine: its pool only bounds open handles.
    pool = settings.db_pool if not settings.is_sqlite else min(settings.threads, 24) + 8
    database = open_database(settings.database_url, pool_size=pool)
    db.initialize(database)

    @app.teardown_request
    def _close_db(exc):
        if not db.is_closed():
            db.close()

    return database
