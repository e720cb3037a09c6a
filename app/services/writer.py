"""Settlements written after the response, in batches, by one thread per process.

The hot path only queues a row; this thread writes whatever has queued up
within WINDOW_S (10 ms) of a batch's first row in one transaction (rows in
multi-row INSERTs, charges folded per key into one UPDATE each), then runs
each row's `done` callback, which is where budget reservations are given
back: a reservation outlives its request until the charge is committed, so
the budget check never misses a charge.

`flush()` waits until everything queued so far is written; `close()` (also
registered with atexit, so a gracefully stopping worker writes its tail)
flushes and stops the thread. A thread with nothing queued for IDLE_S runs
`on_idle` (the ledger writes what it spooled while the database was away, so
a quiet worker does not keep it until its next request).
"""
from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
from typing import Callable

log = logging.getLogger("octorelay.accounting")

_STOP = object()
WINDOW_S = 0.01  # a batch gathers rows this long after its first one
IDLE_S = 5.0  # with nothing queued this long, on_idle runs


class SettlementWriter:
    """Feeds queued rows to `write_batch(rows) -> [cost, ...]` and calls each row's `done(cost)`.

    `write_batch` must never raise (the ledger spools what the database refuses);
    a `done` callback that raises is logged and does not stop the others.
    """

    def __init__(self, write_batch: Callable[[list[dict]], list[int]], *, max_batch: int = 100,
                 window_s: float = WINDOW_S, on_idle: Callable[[], None] | None = None):
        self._write_batch = write_batch
        self._on_idle = on_idle
        self.idle_s = IDLE_S
        self._max_batch = max_batch
        self._window_s = window_s
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._running_in: int | None = None  # the pid whose writer thread is running
        self._closed = False
        atexit.register(self.close)

    def submit(self, row: dict, done: Callable[[int], None] | None = None) -> None:
        if self._closed:  # after close (interpreter exit): write in the caller's thread
            self._write([(row, done)])
            return
        self._ensure_thread()
        self._queue.put((row, done))

    def flush(self, timeout: float = 30.0) -> bool:
        """Block until every row queued before this call is written (True) or `timeout` passes."""
        if self._thread is None or not self._thread.is_alive():
            return True
        written = threading.Event()
        self._queue.put((None, lambda _cost: written.set()))
        return written.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        if self._closed:
            return
        self._closed = True
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(_STOP)
            thread.join(timeout)
        self._drain_here()  # anything submitted while closing

    def _ensure_thread(self) -> None:
        # started lazily, in the process that serves requests (gunicorn forks after importing); runs on
        # every submit, so it compares a pid (is_alive() costs ~2 µs under gevent): `_running_in` is
        # cleared when the loop ends, and a fork changes the pid
        if self._running_in == os.getpid():
            return
        with self._lock:
            if self._running_in != os.getpid():
                self._thread = threading.Thread(target=self._run, name="octorelay-settle", daemon=True)
                self._running_in = os.getpid()
                self._thread.start()

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._running_in = None

    def _loop(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self.idle_s) if self._on_idle else self._queue.get()
            except queue.Empty:
                self._idle()
                continue
            batch, stop = [], item is _STOP
            if not stop:
                batch.append(item)
            # gather for up to window_s (a flush, a stop or a full batch end it at once): a request
            # that ends within it settles in the same batch as its journal entry, which is then
            # never written, and each transaction carries more rows
            deadline = time.monotonic() + self._window_s
            waiting = not stop and item[0] is not None
            while len(batch) < self._max_batch:
                remaining = deadline - time.monotonic() if waiting else 0.0
                try:
                    item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop, waiting = True, False
                    continue
                batch.append(item)
                if item[0] is None:  # someone flushes: write what is here now
                    waiting = False
            if batch:
                self._write(batch)
            if stop:
                return

    def _idle(self) -> None:
        if self._on_idle is None:
            return
        try:
            self._on_idle()
        except Exception:  # like write_batch, on_idle handles an outage itself: this is a bug
            log.exception("settlement writer: idle work failed")

    def _drain_here(self) -> None:
        batch = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                batch.append(item)
        if batch:
            self._write(batch)

    def _write(self, batch: list) -> None:
        rows = [row for row, _ in batch if row is not None]
        try:
            costs = iter(self._write_batch(rows) if rows else ())
        except Exception:  # write_batch spools; this is a bug, not an outage
            log.exception("settlement batch failed")
            costs = iter(())
        for n, (row, done) in enumerate(batch, 1):
            cost = next(costs, 0) if row is not None else 0
            if done is not None:
                try:
                    done(cost)
                except Exception:
                    log.exception("settlement callback failed")
            if n % 20 == 0:
                _yield()
        _yield()


def _yield() -> None:
    """Let the request threads (or, under gevent, the open streams' greenlets) run: 200 streams
    ending together must not stall every other stream for one long batch."""
    time.sleep(0)
