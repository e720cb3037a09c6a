"""Admin writes in force for the next request: one change counter that every cache checks.

The hot path keeps its caches (keys, channels, prices) and reads no database
to serve a request; instead each cache remembers the version it was loaded at
and reloads when `ChangeFeed.version()` moves. A writer calls `announce()`
once its change is committed; that moves the counter in its own process at
once, and tells every other process through the database they share:

- PostgreSQL: `NOTIFY octorelay_changes`. Each worker LISTENs on one extra
  connection and drains it with a non-blocking `poll()` (a recv on a socket,
  no round trip) before it answers from a cache. At commit PostgreSQL signals
  every listening backend, and each then sends the notification to its
  worker on its own, a moment later: so the writer does not answer until its
  own listener has heard it (at most WAIT_ECHO_S). Backends signalled at the
  same moment deliver within microseconds of each other, so by the time the
  admin client has the answer and sends its next request, every instance on
  the database has the notification waiting on its socket.
- SQLite: a marker file beside the database, replaced on every change; each
  process compares its inode and mtime (one stat). SQLite is one machine, so
  this covers every worker and the CLI.

When the listening connection is lost, the feed moves once a second until it
is back (and once more on reconnecting): caches are then at most a second
stale, never stale forever.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import deque

from peewee import PostgresqlDatabase, SqliteDatabase

from ..db import db

log = logging.getLogger("octorelay.changes")

CHANNEL = "octorelay_changes"
RETRY_S = 1.0
WAIT_ECHO_S = 0.5  # longest a writer waits for its own listener to hear its notification

_lock = threading.Lock()
_version = 0


def _bump() -> int:
    global _version
    with _lock:
        _version += 1
        return _version


def marker_path(database) -> str | None:
    """The SQLite change marker for a file database; None in memory."""
    path = getattr(database, "database", None)
    if not path or path == ":memory:" or str(path).startswith("file::memory:"):
        return None
    return os.path.abspath(path) + ".changes"


def announce() -> None:
    """Tell every process that keys, channels or prices changed. Call after the commit."""
    _bump()
    database = db.obj
    if isinstance(database, PostgresqlDatabase):
        token = uuid.uuid4().hex
        database.execute_sql(f"NOTIFY {CHANNEL}, '{token}'")
        _shared.await_echo(token, WAIT_ECHO_S)
    elif isinstance(database, SqliteDatabase):
        path = marker_path(database)
        if path:
            tmp = f"{path}.{os.getpid()}.{uuid.uuid4().hex}"
            with open(tmp, "w", encoding="ascii") as fh:
                fh.write(uuid.uuid4().hex)
            os.replace(tmp, path)  # a new inode every time: readers cannot miss it


class ChangeFeed:
    """This process's view of the change counter; cheap enough to ask on every request."""

    def __init__(self):
        self._poll_lock = threading.Lock()
        self._pid: int | None = None
        self._conn = None           # PostgreSQL LISTEN connection (per process)
        self._conn_for: tuple | None = None  # the database it listens on
        self._target_of = None  # the database object _target_key was worked out for
        self._target_key: tuple = ()
        self._retry_at = 0.0
        self._connecting = False
        self._heard: deque[str] = deque(maxlen=256)  # payloads this process's listener received
        self._marker: tuple[int, int] | None = None
        self._marker_db = None
        self._marker_path: str | None = None

    def version(self) -> int:
        database = db.obj
        if isinstance(database, PostgresqlDatabase):
            self._poll_postgres(database)
        elif isinstance(database, SqliteDatabase):
            self._poll_marker(database)
        return _version

    # SQLite ------------------------------------------------------------------

    def _poll_marker(self, database) -> None:
        if self._marker_db is not database:  # the path is worked out once per database
            self._marker_db, self._marker_path = database, marker_path(database)
        path = self._marker_path
        if path is None:
            return
        try:
            st = os.stat(path)
            seen = (st.st_ino, st.st_mtime_ns)
        except FileNotFoundError:
            seen = (0, 0)
        if seen != self._marker:
            first = self._marker is None
            self._marker = seen
            if not first:
                _bump()

    # PostgreSQL --------------------------------------------------------------

    def _poll_postgres(self, database) -> None:
        with self._poll_lock:
            if self._pid != os.getpid():  # forked: the parent's socket (and connecting thread) are not ours
                self._conn, self._pid, self._connecting = None, os.getpid(), False
            target = self._target(database)
            if self._conn is not None and self._conn_for != target:  # the app now uses another database
                self._close()
            if self._conn is None:
                self._conn_for = target
                self._connect(database)
                return
            try:
                self._conn.poll()
            except Exception as exc:
                log.warning("change feed lost its connection; caches refresh every second until "
                            "it is back", extra={"fields": {"error": type(exc).__name__}})
                self._close()
                self._connect(database)
                return
            if self._conn.notifies:
                self._heard.extend(n.payload for n in self._conn.notifies)
                self._conn.notifies.clear()
                _bump()

    def _target(self, database) -> tuple:
        """Which database a listener is for, worked out once per database object (this runs on every
        cache check)."""
        if self._target_of is not database:
            self._target_of = database
            self._target_key = (database.database, tuple(sorted(_plain_params(database.connect_params).items())))
        return self._target_key

    def await_echo(self, token: str, timeout: float) -> bool:
        """Wait until this process's listener has received the notification carrying `token`
        (False: no listener here, as in the CLI, or none within `timeout`)."""
        database = db.obj
        deadline = time.monotonic() + timeout
        while True:
            if self._conn is None:
                return False
            self._poll_postgres(database)
            if token in self._heard:
                return True
            if time.monotonic() >= deadline:
                log.warning("change feed: a notification was not heard back in time",
                            extra={"fields": {"timeout_s": timeout}})
                return False
            time.sleep(0.001)  # cooperative under gevent

    def _connect(self, database) -> None:
        """Start (re)connecting in the background: a request must never wait on a database that
        does not answer. Until the connection is up, the feed moves once a second."""
        now = time.monotonic()
        if now < self._retry_at:
            return
        self._retry_at = now + RETRY_S
        _bump()  # down or (re)connecting: whatever happened meanwhile was missed
        if self._connecting:
            return
        self._connecting = True
        threading.Thread(target=self._listen, args=(database, self._conn_for, os.getpid()), daemon=True,
                         name="octorelay-change-feed").start()

    def _listen(self, database, target, pid) -> None:
        conn = None
        try:
            import psycopg2

            conn = psycopg2.connect(dbname=database.database, **_plain_params(database.connect_params))
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f"LISTEN {CHANNEL}")
        except Exception as exc:
            log.warning("change feed cannot listen; caches refresh every second",
                        extra={"fields": {"error": type(exc).__name__}})
            conn = None
        with self._poll_lock:
            self._connecting = False
            if conn is not None and self._conn is None and self._conn_for == target and self._pid == pid:
                self._conn = conn
                _bump()  # changes made while connecting were not heard
            elif conn is not None:
                conn.close()

    def _close(self) -> None:
        try:
            if self._conn is not None:
                self._conn.close()
        except Exception:
            pass
        self._conn = None

    def close(self) -> None:
        with self._poll_lock:
            self._close()


_shared = ChangeFeed()


def change_feed() -> ChangeFeed:
    """The process's feed: one LISTEN connection per process, however many apps it builds."""
    return _shared


def _plain_params(params: dict) -> dict:
    return {k: v for k, v in params.items() if k not in ("max_connections", "stale_timeout", "timeout")}
