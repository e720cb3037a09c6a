"""Structured logging: one JSON object per line on stderr, for people and log shippers alike.

Callers pass facts in `extra={"fields": {...}}`; never a key, a prompt or an answer.
"""
from __future__ import annotations

import json
import logging
import sys
import time


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                  + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


class _JsonHandler(logging.StreamHandler):
    """The handler configure_logging installs (its type marks it, so a second call adds none)."""


def configure_logging(level: str) -> None:
    """Install the JSON handler on the `octorelay` logger (idempotent)."""
    logger = logging.getLogger("octorelay")
    logger.setLevel(level)
    if not any(isinstance(h, _JsonHandler) for h in logger.handlers):
        handler = _JsonHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
        logger.propagate = False
