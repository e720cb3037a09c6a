"""gunicorn's gthread worker, with the same deadline as the gevent one (app/shutdown.py).

gunicorn offers no hook for a worker's SIGTERM, so the worker class is
subclassed: on the first SIGTERM it schedules the cut of whatever is still
open shortly before the grace runs out. Connections get the same read
deadlines as under gevent (app/read_deadlines.py).
"""
from __future__ import annotations

import threading

from gunicorn.workers.gthread import ThreadWorker

from . import shutdown
from .config import load_settings
from .read_deadlines import ClientSocket


def _thread(fn) -> None:
    threading.Thread(target=fn, name="octorelay-deadline", daemon=True).start()


class Worker(ThreadWorker):
    def init_process(self):
        settings = load_settings(read_dotenv=False)
        self._deadlines = {"header_s": settings.header_timeout_s, "body_s": settings.body_timeout_s,
                           "keepalive_s": self.cfg.keepalive}
        super().init_process()

    def enqueue_req(self, conn):
        """A new connection's socket is wrapped once, before a thread first reads it."""
        if not isinstance(conn.sock, ClientSocket) and not self.cfg.is_ssl:
            conn.sock = ClientSocket(conn.sock, **self._deadlines)
        super().enqueue_req(conn)

    def handle(self, conn):
        if isinstance(conn.sock, ClientSocket):
            conn.sock.reading_started()
        return super().handle(conn)

    def handle_request(self, req, conn):
        sock = conn.sock
        if isinstance(sock, ClientSocket):
            sock.body_started(on_slow=lambda: setattr(req, "must_close", True))
        try:
            return super().handle_request(req, conn)
        finally:
            if isinstance(sock, ClientSocket):
                sock.body_done()

    def handle_exit(self, sig, frame):
        super().handle_exit(sig, frame)
        shutdown.begin(getattr(self, "wsgi", None), _thread)
