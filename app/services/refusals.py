"""Requests refused before routing (400, 402, 403, 413, 415, 429) leave a log row too, so an
operator sees who is refused and why: key, model, status, error type; no channel, no cost.

Bounded: at most `per_minute` rows per key per minute in each process, so a flood of bad
requests cannot fill the database; every refusal is counted in a metric either way.
"""
from __future__ import annotations

import threading
import time

from ..metrics import REFUSALS
from .accounting import Ledger, RequestRecord

LOGGED_STATUSES = frozenset({400, 402, 403, 413, 415, 429})
MAX_TRACKED_KEYS = 10_000


class RefusalLog:
    def __init__(self, ledger: Ledger, per_minute: int = 60):
        self.ledger = ledger
        self.per_minute = per_minute
        self._windows: dict[int, list[float | int]] = {}  # key id -> [window start, rows written]
        self._lock = threading.Lock()

    def record(self, request_id: str, key_id: int, model: str | None, stream: bool, status: int,
               error_type: str) -> bool:
        """One refused request; returns whether it got a row (False past the key's bound)."""
        logged = self._admit(key_id)
        REFUSALS.labels(str(status), error_type, "yes" if logged else "no").inc()
        if logged:
            record = RequestRecord(request_id, key_id, (model or "-")[:200], stream)
            record.status, record.error_type = status, error_type
            self.ledger.settle(record)
        return logged

    def _admit(self, key_id: int) -> bool:
        now = time.monotonic()
        with self._lock:
            window = self._windows.get(key_id)
            if window is None or now - window[0] >= 60:
                if len(self._windows) >= MAX_TRACKED_KEYS:
                    self._windows.clear()
                window = self._windows[key_id] = [now, 0]
            if window[1] >= self.per_minute:
                return False
            window[1] += 1
            return True
