"""Requests of a worker that died still leave their row and charge.

A worker killed outright (SIGKILL, the OOM killer) runs no `finally`: the
requests it was serving would vanish from the log and from their keys'
spend. So each admitted request is noted in `request_journal` (batched with
the settlements, services/accounting.py) until it is settled, and every
worker says it is alive in `worker_beat` every couple of seconds. A live
worker's sweeper settles the journal entries of workers not seen for
`dead_after_s` at their reservation, as `orphaned` rows.

The window it cannot cover: a request admitted less than one writer batch
(services/writer.py gathers one for 10 ms) before the kill, whose entry was
not yet written.
"""
from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import weakref
from datetime import timedelta

from ..db import db
from ..models import RequestJournal, WorkerBeat, utcnow

log = logging.getLogger("octorelay.journal")

BEAT_S = 2.0
DEAD_AFTER_S = 15.0
SWEEP_BATCH = 200

_worker: tuple[int, str] | None = None


def worker_id() -> str:
    """This process's name in the journal: host, pid and a random part (pids are reused)."""
    global _worker
    if _worker is None or _worker[0] != os.getpid():
        _worker = (os.getpid(), f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}")
    return _worker[1]


class Sweeper:
    """One thread per process: the heartbeat, then the sweep of dead workers' entries."""

    def __init__(self, ledger, beat_s: float = BEAT_S, dead_after_s: float = DEAD_AFTER_S):
        self.ledger = ledger
        self.beat_s = beat_s
        self.dead_after_s = dead_after_s
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._database = None
        self._thread: threading.Thread | None = None

    def ensure_started(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid() and not self._stop.is_set():  # none yet, or forked
                self._pid = os.getpid()
                self._database = db.obj  # this app's database: the thread ends if the app's is replaced
                self._thread = threading.Thread(target=_run, args=(weakref.ref(self), self._stop), daemon=True,
                                                name="octorelay-journal")
                self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread (a worker exiting, an app torn down in tests)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout)

    def tick(self) -> int:
        """Say this worker is alive; if that worked, settle what dead workers left. Returns the
        number of orphans settled."""
        if db.obj is not self._database:  # another app took over the process's database (tests)
            self._stop.set()
            return 0
        now = utcnow()
        with db.connection_context():
            (WorkerBeat.insert(worker=worker_id(), seen_at=now)
             .on_conflict(conflict_target=[WorkerBeat.worker], update={WorkerBeat.seen_at: now}).execute())
        cutoff = now - timedelta(seconds=self.dead_after_s)
        with db.connection_context():
            alive = WorkerBeat.select(WorkerBeat.worker).where(WorkerBeat.seen_at >= cutoff)
            orphans = list(RequestJournal.select()
                           .where(RequestJournal.worker.not_in(alive) & (RequestJournal.started_at < cutoff))
                           .limit(SWEEP_BATCH))
            WorkerBeat.delete().where(WorkerBeat.seen_at < now - timedelta(days=1)).execute()
        settled = sum(1 for entry in orphans if self.ledger.settle_orphan(entry))
        if settled:
            log.warning("requests of a dead worker settled at their reservation",
                        extra={"fields": {"rows": settled, "workers": sorted({o.worker for o in orphans})[:10]}})
        return settled


def _run(ref, stop: threading.Event) -> None:
    """Ends when stopped, or once its sweeper is gone."""
    while not stop.is_set():
        sweeper = ref()
        if sweeper is None:
            return
        pause = sweeper.beat_s
        try:
            sweeper.tick()
        except Exception as exc:  # the database is away: try again next beat
            if not stop.is_set():
                log.warning("journal heartbeat failed", extra={"fields": {"error": type(exc).__name__}})
        del sweeper
        stop.wait(pause)
