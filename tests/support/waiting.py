"""Polling with a deadline, for what settles a moment later (rows, workers, log lines)."""
from __future__ import annotations

import time


def wait_until(predicate, timeout: float, interval: float = 0.05):
    """Poll `predicate` until it returns something truthy; that value, or the last (falsy) one past `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)
