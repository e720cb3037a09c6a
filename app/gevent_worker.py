"""gunicorn's gevent worker, with a prompt graceful stop.

The stock worker leaves an idle keep-alive connection open through shutdown
until its keepalive (75 s here) runs out, so every SIGTERM (a deploy, a
scale-down) waited out the whole graceful_timeout. This one closes idle
connections as soon as it is told to stop; a request or stream in flight
still runs to its end (within graceful_timeout), and its connection closes
after it, as under gthread. Streams still open shortly before the grace
runs out are ended and settled (app/shutdown.py).
"""
from __future__ import annotations

import socket

import gevent
from gunicorn.workers.ggevent import GeventWorker

from . import shutdown


class Worker(GeventWorker):
    def init_process(self):
        self._open: set = set()
        self._busy: set = set()
        super().init_process()

    def handle(self, listener, client, addr):
        self._open.add(client)
        try:
            super().handle(listener, client, addr)
        finally:
            self._open.discard(client)
            self._busy.discard(client)

    def handle_request(self, listener_name, req, sock, addr):
        self._busy.add(sock)
        try:
            return super().handle_request(listener_name, req, sock, addr)
        finally:
            self._busy.discard(sock)

    def handle_exit(self, sig, frame):
        super().handle_exit(sig, frame)
        gevent.spawn(self._close_idle)  # out of the signal handler
        shutdown.begin(getattr(self, "wsgi", None), gevent.spawn)

    def _close_idle(self) -> None:
        for sock in list(self._open - self._busy):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
