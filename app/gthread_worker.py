"""gunicorn's gthread worker, with the same deadline as the gevent one (app/shutdown.py).

gunicorn offers no hook for a worker's SIGTERM, so the worker class is
subclassed: on the first SIGTERM it schedules the cut of whatever is still
open shortly before the grace runs out.
"""
from __future__ import annotations

import threading

from gunicorn.workers.gthread import ThreadWorker

from . import shutdown


def _thread(fn) -> None:
    threading.Thread(target=fn, name="octorelay-deadline", daemon=True).start()


class Worker(ThreadWorker):
    def handle_exit(self, sig, frame):
        super().handle_exit(sig, frame)
        shutdown.begin(getattr(self, "wsgi", None), _thread)
