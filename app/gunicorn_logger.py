"""gunicorn's own log lines in the app's format: one JSON object per line on stderr, so a log
shipper reads the master's and the workers' lines like every other line."""
from gunicorn.glogging import Logger

from .logs import JsonFormatter


class JsonLogger(Logger):
    def setup(self, cfg):
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(JsonFormatter())


def drop_handlers() -> None:
    """At a worker's exit, while gevent is intact: flush and close every log handler and forget
    logging's weak references to them. Left to interpreter teardown, each handler freed then
    runs a weakref callback that takes logging's lock through gevent's half-torn-down threading
    and prints a traceback on an otherwise clean stop."""
    import logging

    logging.shutdown()
    # the weakrefs (and their callbacks) go; nothing logs after this. _handlerList is logging's
    # private list, absent from typeshed: the attribute is real (CPython's Lib/logging/__init__.py)
    del logging._handlerList[:]  # type: ignore[attr-defined]
