"""Deadlines on reading a request, so slow clients cannot hold a worker's connection slots.

A worker serves a fixed number of connections at once (OCTORELAY_THREADS). A client that
sends its headers or its body a byte at a time (slowloris) holds one for as long as the
server keeps waiting, and a thousand such clients stall the worker. gunicorn bounds only
the wait for a request's headers, by its keep-alive timeout (75 s here), and never a body.

`ClientSocket` wraps a connection's socket for the worker, and every read goes through it:
- waiting for a request: the first on a connection must start within `header_s`, a later one
  (keep-alive) within `keepalive_s`;
- from its first byte, the request line and headers must be in within `header_s`;
- the body gets `body_s`, plus one second per MIN_RATE bytes received (the rule of Apache's
  mod_reqtimeout): a client sending at least MIN_RATE bytes a second is never cut, one that
  trickles is cut within `body_s` plus what it sent divided by MIN_RATE.
A connection past its header deadline reads as closed (the worker drops it, no answer); one
past its body deadline raises SlowClient, answered with a 408 and the connection closed.
Plain Python over the socket API: the same for gevent's and the standard library's sockets.
"""
from __future__ import annotations

import socket
import time

MIN_RATE = 8192  # bytes a second a body must keep arriving at (a slow mobile link does 50 KB/s)


class SlowClient(OSError):
    """The request body did not arrive in time."""


class ClientSocket:
    """A client connection's socket with read deadlines; everything else is the socket's own."""

    def __init__(self, sock, *, header_s: float, body_s: float, keepalive_s: float, clock=time.monotonic):
        self._sock = sock
        self._header_s, self._body_s, self._keepalive_s = header_s, body_s, keepalive_s
        self._clock = clock
        self.sendall = sock.sendall  # the hot path (every streamed chunk) skips __getattr__
        self.send = sock.send
        self.body_timed_out = False
        self._phase = "waiting"
        self._deadline = clock() + header_s  # a new connection: its first request, promptly
        self._received = 0
        self._on_slow = None

    def __getattr__(self, name):
        return getattr(self._sock, name)

    # the worker moves the phases: a request's body is read between these two calls
    def reading_started(self) -> None:
        """gthread hands a connection to a thread once data is there, perhaps after a wait in
        its queue: the request's deadline counts from here, not from the accept."""
        if self._phase == "waiting":
            self._deadline = self._clock() + self._header_s

    def body_started(self, on_slow=None) -> None:
        """`on_slow()` runs if the body misses its deadline (the worker marks the connection to close)."""
        self._phase, self._received, self._on_slow = "body", 0, on_slow
        self._deadline = self._clock() + self._body_s

    def body_done(self) -> None:
        self._phase = "waiting"
        self._deadline = self._clock() + self._keepalive_s

    def recv(self, size: int, *flags) -> bytes:
        remaining = self._deadline + self._received / MIN_RATE - self._clock() if self._phase == "body" \
            else self._deadline - self._clock()
        if remaining <= 0:
            return self._expired()
        previous = self._sock.gettimeout()
        self._sock.settimeout(remaining)
        try:
            data = self._sock.recv(size, *flags)
        except socket.timeout:
            return self._expired()
        finally:
            self._sock.settimeout(previous)
        if self._phase == "body":
            self._received += len(data)
        elif self._phase == "waiting" and data:
            self._phase = "header"  # the first byte of a request: the rest of its headers promptly
            self._deadline = self._clock() + self._header_s
        return data

    def _expired(self) -> bytes:
        if self._phase == "body":
            self.body_timed_out = True
            if self._on_slow is not None:
                self._on_slow()
            raise SlowClient(f"the request body arrived slower than {MIN_RATE} bytes a second "
                             f"after its first {self._body_s:g} s")
        return b""  # headers (or a keep-alive wait) too slow: the worker sees a closed connection


def body_timed_out(environ: dict) -> bool:
    """Whether this request's body read stopped on its deadline (and not a client gone)."""
    return getattr(environ.get("gunicorn.socket"), "body_timed_out", False)
