"""gunicorn's gevent worker, with a prompt graceful stop.

The stock worker leaves an idle keep-alive connection open through shutdown
until its keepalive (75 s here) runs out, so every SIGTERM (a deploy, a
scale-down) waited out the whole graceful_timeout. This one closes idle
connections as soon as it is told to stop; a request or stream in flight
still runs to its end (within graceful_timeout), and its connection closes
after it, as under gthread. Streams still open shortly before the grace
runs out are ended and settled (app/shutdown.py).

Every connection's reads have deadlines (app/read_deadlines.py), so clients
sending headers or bodies a byte at a time cannot hold the worker's slots.
"""
from __future__ import annotations

import socket

import gevent
from gunicorn.workers.ggevent import GeventWorker

from . import shutdown
from .config import load_settings
from .read_deadlines import ClientSocket


class Worker(GeventWorker):
    def init_process(self):
        self._open: set = set()
        self._busy: set = set()
        settings = load_settings(read_dotenv=False)
        self._deadlines = {"header_s": settings.header_timeout_s, "body_s": settings.body_timeout_s,
                           "keepalive_s": self.cfg.keepalive}
        super().init_process()

    def handle(self, listener, client, addr):
        if not self.cfg.is_ssl:  # TLS in gunicorn: its handshake wants the socket itself
            client = ClientSocket(client, **self._deadlines)
        self._open.add(client)
        try:
            super().handle(listener, client, addr)
        finally:
            self._open.discard(client)
            self._busy.discard(client)

    def handle_request(self, listener_name, req, sock, addr):
        self._busy.add(sock)
        if isinstance(sock, ClientSocket):
            sock.body_started(on_slow=lambda: setattr(req, "must_close", True))
        try:
            return super().handle_request(listener_name, req, sock, addr)
        finally:
            self._busy.discard(sock)
            if isinstance(sock, ClientSocket):
                sock.body_done()

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
