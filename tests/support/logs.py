"""What octorelay's loggers said during a block (they do not propagate to pytest's caplog)."""
from __future__ import annotations

import logging
from contextlib import contextmanager


@contextmanager
def captured_logs(name: str = "octorelay", level: int = logging.NOTSET, *, formatter=None):
    """Yields a list that receives every record `name` (or a child) logs at `level` or above while
    the block runs; with `formatter`, each record's formatted line instead."""
    records: list = []
    handler = logging.Handler(level)
    handler.emit = (records.append if formatter is None
                    else lambda record: records.append(formatter.format(record)))
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
