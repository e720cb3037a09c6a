"""A worker's graceful stop, fitted inside the platform's SIGTERM-to-SIGKILL window.

Platforms send SIGTERM, wait (Heroku 30 s; others 10-30 s), then SIGKILL.
gunicorn stops accepting at SIGTERM and lets requests in flight finish for
`graceful_timeout` (= OCTORELAY_SHUTDOWN_GRACE_S); a Claude Code stream can
last minutes, and a SIGKILL would lose it with no event for the client, no
log row and no charge. So each worker, on its first SIGTERM, schedules its
deadline: `reserve_s` before the grace runs out it ends every upstream call
still open (streams get an SSE `overloaded_error` event, waiting requests a
503 `overloaded_error`, each settled with the usage seen so far), then
flushes the settlement writer, timed and logged, while there is still time.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from .state import find_services

log = logging.getLogger("octorelay.shutdown")

_begun = False
_state: dict = {}  # "cutting": the deadline came; "done": an Event, set when its work is over


def reserve_s(grace_s: float) -> float:
    """The end of the grace kept for ending streams, the settlement flush and the worker's exit."""
    return min(5.0, max(1.5, grace_s * 0.2))


def begin(app, spawn: Callable[[Callable[[], None]], None]) -> None:
    """Called from the worker's SIGTERM handler; only the first call counts. `spawn` runs the
    deadline off the signal handler (a greenlet under gevent, a thread under gthread)."""
    global _begun
    state = find_services(app)
    if _begun or state is None:
        return
    _begun = True
    relay = state.relay
    grace = app.config["OCTORELAY"].shutdown_grace_s
    deadline = time.monotonic() + grace
    done = _state["done"] = threading.Event()  # built now: under gevent, after the patching

    def run() -> None:
        try:
            at_deadline(relay, deadline, reserve_s(grace))
        finally:
            done.set()

    spawn(run)


def at_deadline(relay, deadline: float, reserve: float) -> dict:
    """Sleep until `deadline - reserve`; then cut what is still open and flush. Returns what it
    did (also logged). A worker with nothing open has exited long before: this never runs."""
    time.sleep(max(0.0, deadline - reserve - time.monotonic()))
    _state["cutting"] = True
    cut_at = time.monotonic()
    in_flight = relay.stop_upstreams()
    settle_by = cut_at + min(1.0, reserve / 3)
    while relay.in_flight() and time.monotonic() < settle_by:  # readers wake, answer, settle
        time.sleep(0.02)
    flush_started = time.monotonic()
    flushed = relay.flush(timeout=max(0.1, deadline - 0.5 - flush_started))
    done = time.monotonic()
    report = {"in_flight": in_flight, "unsettled": relay.in_flight(), "flushed": flushed,
              "settle_ms": round((flush_started - cut_at) * 1000, 1),
              "flush_ms": round((done - flush_started) * 1000, 1),
              "left_of_grace_s": round(deadline - done, 2)}
    log.warning("shutdown deadline: open upstream calls ended, settlements flushed",
                extra={"fields": report})
    return report


def flush_at_exit(app) -> None:
    """The worker is leaving (gunicorn's worker_exit): write the settlements still queued. A
    worker whose last streams the deadline ended leaves as they end: let the deadline's flush
    (and its report) finish first."""
    state = find_services(app)
    if state is None:
        return
    if _state.get("cutting"):
        _state["done"].wait(3.0)
    started = time.monotonic()
    state.close()
    log.info("worker exit: settlements flushed", extra={"fields": {
        "flush_ms": round((time.monotonic() - started) * 1000, 1)}})
