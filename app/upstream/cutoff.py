"""Ending every upstream call of this process at once, for a worker that must stop now.

A stopping worker (SIGTERM, then the platform's SIGKILL) cannot wait out a
stream that lasts minutes. A thread or greenlet blocked reading an upstream
answer cannot be interrupted from outside, but its socket can: shutting it
down wakes the blocked read with an end of file, under gevent and under
threads alike. So the HTTP adapter's connections are tracked as they
connect, and `abort_all()` shuts every one of them down; the relay, told it
is stopping, turns what the readers then see into an `overloaded_error`.
"""
from __future__ import annotations

import socket
import threading
import weakref

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_live: "weakref.WeakSet" = weakref.WeakSet()
_lock = threading.Lock()


class _Tracked:
    def connect(self):
        super().connect()
        with _lock:
            _live.add(self)


class _HTTPConnection(_Tracked, HTTPConnection):
    pass


class _HTTPSConnection(_Tracked, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class TrackedAdapter(HTTPAdapter):
    """requests' adapter, whose connections `abort_all()` can reach."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


def abort_all() -> int:
    """Shut down every upstream connection of this process (idle ones too); returns how many."""
    with _lock:
        conns = list(_live)
    count = 0
    for conn in conns:
        sock = getattr(conn, "sock", None)
        if sock is None:
            continue
        try:
            sock.shutdown(socket.SHUT_RDWR)
            count += 1
        except OSError:  # already closed
            pass
    return count
