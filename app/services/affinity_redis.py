"""Conversation homes in Redis, with a per-worker copy that Redis pub/sub keeps true.

Homes are shared by every worker and instance, and read before routing
whenever a model has several channels: a Redis round trip per turn, about
a tenth of a loaded worker's CPU under gevent. But a home changes only
when a conversation starts or moves, so each worker keeps the homes it
has seen and is told of every change:

- a write that replaces a home (a move: `set`, or a `record` that changed
  one) publishes `key channel` on one channel per Redis database; a new
  home is not announced, since no worker can hold a copy of a home that
  did not exist (a worker copies what it reads or hears). Each worker
  subscribes on one extra connection and, before it answers from its
  copy, reads what has arrived there (HomeWatch);
- `known()` answers from that copy, without a round trip, only while the
  subscription is up; a dropped or silent one (no answer to a ping within
  HEARTBEAT_S) empties the copy and turns go back to asking Redis until
  it is subscribed again;
- a turn answered from the copy still reaches Redis, from the settlement
  writer in its batched call, and only reads (GETEX): that pushes the
  expiry back to an hour after the last turn and tells the true outcome,
  and cannot undo a move another worker made meanwhile. A turn that leaves
  its home (failover) writes and publishes before the answer goes back, so
  the next turn finds the new home on every worker;
- a copy is trusted for `fresh_s` (a minute) after Redis last confirmed
  it, so a change missed in a way the listener could not see is undone
  within that time, and no copy outlives its key in Redis.

A reply read from Redis is copied only if no message about that home
arrived after the command was sent (`LocalStore.set(since=…)`): a change
heard meanwhile is newer than the reply.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from .affinity import TTL_S, LocalStore

log = logging.getLogger("octorelay.affinity")

FRESH_S = 60.0        # a copied home is trusted this long after Redis last confirmed it
HEARTBEAT_S = 5.0     # a quiet subscription is pinged; no answer within as long again: dropped
TICK_S = 1.0          # the watch thread's pace: subscribing again, draining a quiet worker
MAX_COPIES = 100_000  # homes copied per worker (LRU)


class RedisStore:
    """Homes in Redis, shared by every worker and instance; each key expires `ttl` after its last use."""

    PREFIX = "octorelay:affinity:"

    def __init__(self, client, ttl: float = TTL_S, fresh_s: float = FRESH_S):
        self.client = client
        self.ttl_ms = max(int(ttl * 1000), 1)
        db = client.connection_pool.connection_kwargs.get("db", 0)
        self.channel = f"{self.PREFIX}changes:{db}"  # pub/sub ignores databases; deployments may not
        self.copies = LocalStore(ttl=min(fresh_s, ttl / 4), max_entries=MAX_COPIES)
        self.watch = HomeWatch(client, self.channel, self._heard, self.copies.clear)

    # before routing ---------------------------------------------------------------------------

    def known(self, key: str) -> int | None:
        """The home as this worker last heard it, while that is sure to be current; None: ask `get`."""
        if not self.watch.live():
            return None
        return self.copies.get(key, touch=False)

    def get(self, key: str) -> int | None:
        since, epoch = time.monotonic(), self.watch.epoch
        value = self.client.getex(self.PREFIX + key, px=self.ttl_ms)
        home = int(value) if value is not None else None
        if home is not None:
            self._copy(key, home, since, epoch)
        return home

    # after routing ----------------------------------------------------------------------------

    def set(self, key: str, channel_id: int) -> None:
        """A new or moved home. Only a home that replaced another is announced (one more round trip):
        no worker can hold a copy of a home that did not exist."""
        since, epoch = time.monotonic(), self.watch.epoch
        old = self.client.set(self.PREFIX + key, channel_id, px=self.ttl_ms, get=True)
        if old is not None and int(old) != channel_id:
            self.client.publish(self.channel, f"{key} {channel_id}")
        self._copy(key, channel_id, since, epoch)

    def record(self, turns: list[tuple[str, int | None]]) -> list[int | None]:
        """LocalStore.record in one pipelined round trip (SET … GET: Redis 6.2, as GETEX); the homes it
        replaced are announced in one more."""
        since, epoch = time.monotonic(), self.watch.epoch
        pipe = self.client.pipeline(transaction=False)
        for key, channel_id in turns:
            if channel_id is None:
                pipe.getex(self.PREFIX + key, px=self.ttl_ms)
            else:
                pipe.set(self.PREFIX + key, channel_id, px=self.ttl_ms, get=True)
        before = [int(value) if value is not None else None for value in pipe.execute()]
        changed = []
        for (key, channel_id), old in zip(turns, before, strict=True):
            now = old if channel_id is None else channel_id
            if now is not None:
                self._copy(key, now, since, epoch)
            if channel_id is not None and old is not None and old != channel_id:
                changed.append((key, channel_id))
        if changed:
            pipe = self.client.pipeline(transaction=False)
            for key, channel_id in changed:
                pipe.publish(self.channel, f"{key} {channel_id}")
            pipe.execute()
        return before

    def close(self) -> None:
        self.watch.close()

    # the copy ---------------------------------------------------------------------------------

    def _copy(self, key: str, home: int, since: float, epoch: int) -> None:
        """Keep what Redis said at `since`, if the subscription held all along (same epoch)."""
        if self.watch.subscribed() and self.watch.epoch == epoch:
            self.copies.set(key, home, since=since)

    def _heard(self, payload: bytes) -> None:
        key, _, channel = payload.decode("ascii", "replace").partition(" ")
        try:
            self.copies.set(key, int(channel))
        except ValueError:
            log.warning("session affinity: an unreadable change message was ignored")


class HomeWatch:
    """One subscription per process to the changes of homes; `live()` says whether it is up.

    Whoever asks `live()` first drains what has arrived (a non-blocking read, no round trip), so
    a turn that starts after another worker's change was answered already sees it: Redis writes
    a message into every subscriber's socket before it answers the publisher. A thread per
    process subscribes (a request never waits on that), drains a quiet worker every TICK_S and
    pings a quiet subscription. `epoch` moves whenever the subscription starts or ends: a copy
    taken across a move could have missed a message.
    """

    def __init__(self, client, channel: str, on_message, on_gap):
        self.client = client
        self.channel = channel
        self.on_message = on_message
        self.on_gap = on_gap
        self.epoch = 0
        self._pubsub: Any = None  # a redis PubSub, subscribed; read only under _lock
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heard_at = 0.0
        self._pinged_at: float | None = None
        self._warned_at = float("-inf")

    def live(self) -> bool:
        with self._lock:
            if self._pid != os.getpid():
                self._start()
            if self._pubsub is None:
                return False
            try:
                self._drain()
            except Exception as exc:  # noqa: BLE001 - any failure: forget the copies, subscribe again
                self._drop(exc)
                return False
            return True

    def subscribed(self) -> bool:
        """Up in this process, without draining: the epoch tells whether it held meanwhile."""
        return self._pid == os.getpid() and self._pubsub is not None

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._drop(None)

    def _start(self) -> None:
        """In a new process (or the first time): the parent's subscription is not ours."""
        self._pid, self._pubsub = os.getpid(), None
        self._moved()
        if not self._stop.is_set():
            threading.Thread(target=self._run, args=(self._pid,), daemon=True,
                             name="octorelay-affinity-watch").start()

    def _drain(self) -> None:
        pubsub, now = self._pubsub, time.monotonic()
        while (message := pubsub.get_message(timeout=0)) is not None:
            self._heard_at = now
            if message.get("type") == "message":
                self.on_message(message["data"])
        if now - self._heard_at >= HEARTBEAT_S:  # quiet: is the subscription still there?
            if self._pinged_at is None or self._pinged_at < self._heard_at:
                pubsub.ping()
                self._pinged_at = now
            elif now - self._pinged_at >= HEARTBEAT_S:
                raise TimeoutError("no answer to a ping")

    def _drop(self, exc: Exception | None) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is None:
            return
        self._moved()
        try:
            pubsub.close()
        except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is gone either way
            pass
        if exc is not None:
            self._warn(exc)

    def _moved(self) -> None:
        self.epoch += 1
        self.on_gap()

    def _run(self, pid: int) -> None:
        while not self._stop.is_set() and os.getpid() == pid:
            if self._pubsub is None:
                self._subscribe(pid)
            else:
                self.live()  # a worker without requests still drains and pings
            self._stop.wait(TICK_S)

    def _subscribe(self, pid: int) -> None:
        pubsub = None
        try:
            pubsub = self.client.pubsub()
            pubsub.subscribe(self.channel)
            deadline = time.monotonic() + HEARTBEAT_S
            while True:  # the confirmation: from here on every change reaches this socket
                message = pubsub.get_message(timeout=max(deadline - time.monotonic(), 0.0))
                if message is not None and message.get("type") == "subscribe":
                    break
                if time.monotonic() >= deadline:
                    raise TimeoutError("no subscription confirmed")
        except Exception as exc:  # noqa: BLE001
            if pubsub is not None:
                pubsub.close()
            if not self._stop.is_set():
                self._warn(exc)
            return
        with self._lock:
            if self._stop.is_set() or os.getpid() != pid or self._pubsub is not None:
                pubsub.close()
                return
            self._pubsub, self._heard_at, self._pinged_at = pubsub, time.monotonic(), None
            self._moved()  # copies from before this point may have missed a message

    def _warn(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at >= 60.0:
            self._warned_at = now
            log.warning("session affinity: not subscribed to home changes; every turn asks Redis until "
                        "it is back", extra={"fields": {"error": type(exc).__name__}})
