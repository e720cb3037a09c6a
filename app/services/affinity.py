"""Session affinity: keep each conversation on the channel that served it, so its prompt cache hits.

Anthropic's prompt cache lives with the upstream account. A conversation
whose turns are spread over channels writes its prefix into every
channel's cache and pays the write (1.25x or 2x input) where a read
(0.1x) would do. So each conversation remembers its channel ("home"):

- identity, first found: the `x-claude-code-session-id` header; the
  `session_id` of a `metadata.user_id` that is a JSON object string
  (Claude Code), else that string itself; else a hash of the prefix
  (`system`, the tools' names, the first message; `cache_control` left
  out). Scoped per key and model, and only a digest is stored: no client
  text in memory or in Redis.
- the home is remembered for `ttl` seconds (1 hour) after the last turn:
  in process (bounded LRU) or in Redis when REDIS_URL is set, so every
  worker and instance agrees. With Redis, each worker also keeps a copy
  of the homes it has seen, kept true by pub/sub (affinity_redis.py): a
  turn whose home the worker knows asks nothing before routing, and the
  settlement writer pushes the expiry out after the answer; otherwise one
  round trip (GETEX, which also pushes the expiry out). One more, before
  the answer, only when the home changes.
- a model served by one channel has nothing to choose: its turns go
  there without asking the store, and the settlement writer records the
  home and the outcome after the answer (`record`, one pipelined round
  trip per batch), so the conversation is known when a second channel
  joins and the request itself never waits on Redis for it.
- Redis being away never fails a request: the turn is routed as a new one,
  and the store is left alone for `RETRY_S` so that no turn waits out a
  connect timeout meanwhile.

The relay asks `lookup()` before routing and `settle()` after a channel
answered (or hands `Lookup.pending()` to the writer); routing order itself
stays in services/routing.py. The outcome counter is kept here.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Mapping

from ..metrics import LIMIT_STORE_ERRORS, SESSION_AFFINITY

log = logging.getLogger("octorelay.affinity")

TTL_S = 3600.0
MAX_LOCAL_ENTRIES = 100_000
SESSION_HEADER = "x-claude-code-session-id"
KEPT, NEW, MOVED = "kept", "new", "moved"
_WARN_EVERY_S = 60.0
RETRY_S = 5.0  # after a store failure, turns skip the store this long


def conversation_id(headers: Mapping, body: dict) -> str | None:
    """The client's name for this conversation (see the module docstring); None when the body
    has nothing to tell conversations apart by."""
    session = headers.get(SESSION_HEADER)
    if session:
        return "h:" + session
    metadata = body.get("metadata")
    user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
    if isinstance(user_id, str) and user_id:
        if user_id[:1] == "{":
            try:
                parsed = json.loads(user_id)
            except ValueError:
                parsed = None
            session = parsed.get("session_id") if isinstance(parsed, dict) else None
            if isinstance(session, str) and session:
                return "s:" + session
        return "u:" + user_id
    messages = body.get("messages")
    first = messages[0] if isinstance(messages, list) and messages else None
    if first is None and not body.get("system"):
        return None
    content = first.get("content") if isinstance(first, dict) else first
    try:
        prefix = json.dumps([_unmarked(body.get("system")), _tool_names(body.get("tools")), _unmarked(content)],
                            separators=(",", ":"), ensure_ascii=False, sort_keys=True, default=str)
    except RecursionError:  # nested about as deep as the parser allows: routed on its own
        return None
    return "p:" + hashlib.blake2b(prefix.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _tool_names(tools):
    """Tools by name and type: serialising Claude Code's 60 KB of tool schemas on every turn
    would cost ~0.3 ms; a toolset is told apart by its names."""
    if not isinstance(tools, list):
        return tools
    return [[t.get("name"), t.get("type")] if isinstance(t, dict) else t for t in tools]


def _unmarked(blocks):
    """Blocks without their `cache_control`: clients move the breakpoint to the newest message on
    every turn (Claude Code does), so the first message is marked on turn 1 and not after."""
    if not isinstance(blocks, list):
        return blocks
    return [{k: v for k, v in b.items() if k != "cache_control"} if isinstance(b, dict) else b for b in blocks]


def scoped_key(key_id: int | None, model: str, conversation: str) -> str:
    """One short digest per (key, model, conversation): fixed size, and no client text kept."""
    raw = f"{key_id}\x00{model}\x00{conversation}".encode("utf-8", "surrogatepass")
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


class LocalStore:
    """Homes in this process: an LRU of at most `max_entries`, each expiring `ttl` after its last use."""

    def __init__(self, ttl: float = TTL_S, max_entries: int = MAX_LOCAL_ENTRIES, clock=time.monotonic):
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, touch: bool = True) -> int | None:
        """The home; `touch` (a turn) pushes its expiry back to `ttl` from now."""
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[1] <= now:
                del self._entries[key]
                return None
            if touch:
                self._entries[key] = (entry[0], now + self.ttl)
                self._entries.move_to_end(key)
            return entry[0]

    def set(self, key: str, channel_id: int, since: float | None = None) -> None:
        """`since`: when the value was true (default now); an entry learned after that is newer
        and is kept (RedisStore's cache: a reply must not undo a change heard meanwhile)."""
        learned = self._clock() if since is None else since
        with self._lock:
            entry = self._entries.get(key)
            if since is not None and entry is not None and entry[1] - self.ttl > since:
                return
            self._entries[key] = (channel_id, learned + self.ttl)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def known(self, key: str) -> int | None:
        """Homes here are read without a round trip anyway: `get` is the lookup."""
        return None

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def record(self, turns: list[tuple[str, int | None]]) -> list[int | None]:
        """Each (key, channel): the home before, and `channel` the home now (None: only read)."""
        out = []
        for key, channel_id in turns:
            out.append(self.get(key))
            if channel_id is not None:
                self.set(key, channel_id)
        return out

    def __len__(self) -> int:
        return len(self._entries)


def outcome(home: int | None, channel_id: int) -> str:
    if home is None:
        return NEW
    return KEPT if channel_id == home else MOVED


def _counted(result: str) -> str:
    """Every outcome is counted here, whether decided before routing or by the writer."""
    SESSION_AFFINITY.labels(result).inc()
    return result


@dataclass
class Lookup:
    """One request's conversation: where it lives (None: new, or not read) and the store key."""
    key: str
    home: int | None
    read: bool = True  # False: routed without asking the store; the writer records the turn

    def pending(self, moves: bool) -> tuple[str, bool]:
        """The turn as `Affinity.record` takes it, with the channel that answered: that channel
        becomes the home when `moves`; otherwise (a client error keeps the home) it is only read."""
        return (self.key, moves)


class Affinity:
    """Where conversations live. `enabled=False` (OCTORELAY_SESSION_AFFINITY=off): every turn is
    routed on its own."""

    def __init__(self, store=None, enabled: bool = True):
        self.store = store if store is not None else LocalStore()
        self.enabled = enabled
        self._warned_at = float("-inf")
        self._skip_until = float("-inf")

    def lookup(self, key_id: int | None, model: str, headers: Mapping, body: dict,
               read: bool = True) -> Lookup | None:
        """The conversation's home, or None when affinity is off or the request names no conversation.
        `read=False` (nothing to choose between): the conversation only, the store is not asked."""
        if not self.enabled:
            return None
        conversation = conversation_id(headers, body)
        if conversation is None:
            return None
        key = scoped_key(key_id, model, conversation)
        if not read:
            return Lookup(key, None, read=False)
        home = None
        if time.monotonic() >= self._skip_until:
            try:
                home = self.store.known(key)
                if home is not None:  # current as far as every worker's changes go: no round trip
                    return Lookup(key, home, read=False)
                home = self.store.get(key)
            except Exception as exc:
                self._store_failed(exc)
        return Lookup(key, home)

    def conclude(self, lookup: Lookup, channel_id: int, moves: bool) -> tuple[str | None, tuple[str, bool] | None]:
        """After routing: (the outcome, None), or for a turn routed without a lookup (None, the turn
        the writer records). `moves`: `channel_id` answered and becomes the home."""
        if not lookup.read:
            if lookup.home is None:  # nothing to choose: the writer records the turn and its home
                return None, lookup.pending(moves)
            if moves and channel_id != lookup.home:
                return self.settle(lookup, channel_id), None  # leaving a known home: every worker hears it now
            # answered from this worker's copy: the writer only confirms the home (and pushes its
            # expiry out); writing it again could undo a move another worker made meanwhile
            return None, lookup.pending(False)
        return (self.settle(lookup, channel_id) if moves else self.outcome(lookup, channel_id)), None

    def settle(self, lookup: Lookup, channel_id: int) -> str:
        """`channel_id` served the turn: it becomes the home if it was not. Returns the outcome."""
        result = self.outcome(lookup, channel_id)
        if result != KEPT and time.monotonic() >= self._skip_until:
            try:
                self.store.set(lookup.key, channel_id)
            except Exception as exc:
                self._store_failed(exc)
        return result

    def outcome(self, lookup: Lookup, channel_id: int) -> str:
        """The turn's outcome against the home read before routing, counted; nothing is written."""
        return _counted(outcome(lookup.home, channel_id))

    def record(self, turns: list[tuple[tuple[str, bool], int]]) -> list[str]:
        """Turns routed without a lookup (`Lookup.pending()`, with the channel that answered), from
        the settlement writer: each channel becomes its conversation's home where the turn moves it,
        all in one store call; returns the outcomes, counted. A store that fails makes them `new`,
        as a failed lookup would have."""
        homes: list[int | None] = [None] * len(turns)
        if time.monotonic() >= self._skip_until:
            try:
                homes = self.store.record([(key, channel_id if moves else None)
                                           for (key, moves), channel_id in turns])
            except Exception as exc:
                self._store_failed(exc)
        return [_counted(outcome(home, channel_id)) for home, (_, channel_id) in zip(homes, turns, strict=True)]

    def close(self) -> None:
        """Stop listening for changes of homes (a worker's exit, the end of a test)."""
        close = getattr(self.store, "close", None)
        if close is not None:
            close()

    def _store_failed(self, exc: Exception) -> None:
        LIMIT_STORE_ERRORS.labels("affinity").inc()
        now = time.monotonic()
        self._skip_until = now + RETRY_S
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            log.warning("session affinity store unavailable; routing turns as new conversations",
                        extra={"fields": {"error": type(exc).__name__}})
