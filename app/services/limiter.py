"""Per-key admission: budget and token quota (402), rpm / tpm (429), concurrent requests (429).

rpm and tpm use the `limits` library's sliding-window counters, in Redis
when REDIS_URL is set (shared by every worker and instance) and in process
memory otherwise. Concurrency and budget are *leases* with a TTL: a request
holds one slot of `max_concurrency`, and reserves its worst-case cost
against what is left of the budget (and its worst-case tokens against the
quota) until it is settled. A worker that dies mid-request cannot hold them
for longer than the TTL. Every check fails closed unless
OCTORELAY_LIMITS_FAIL_OPEN is set.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field
from datetime import datetime, timezone

from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import SlidingWindowCounterRateLimiter
from peewee import DatabaseError

from ..errors import BillingError, Overloaded, RateLimited
from ..metrics import LIMIT_STORE_ERRORS
from ..models import ApiKey, utcnow
from ..periods import current_usage, resets_at
from ..timefmt import iso
from .auth import KeySnapshot
from .keys import format_usd, nanos_to_usd
from .leases import MemoryLeases, RedisLeases

log = logging.getLogger("octorelay.limits")

LEASE_TTL_S = 10.0          # default: a crashed worker's slots and reservations come back after this long
RECORD_ANYWAY = 2 ** 62     # "limit" used to record tokens that were already spent


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _retry_after(reset_epoch: float) -> str:
    """Whole seconds until the window frees room, rounded up, 1-60 (the SDK waits up to 60)."""
    return str(min(60, max(1, math.ceil(reset_epoch - time.time()))))


@dataclass(frozen=True)
class Estimate:
    """A request's worst case, reserved against budget and quota while it runs."""
    cost_nanos: int = 0
    tokens: int = 0


def window_storage(redis_client=None) -> RedisStorage | MemoryStorage:
    """limits' storage for sliding windows: Redis through the app's own client's connection pool
    (one pool per worker, closed with the app; the pool says where and with which timeouts, the
    URI only names the driver), or this process's memory without Redis."""
    if redis_client is None:
        return MemoryStorage()
    return RedisStorage("redis://", connection_pool=redis_client.connection_pool)


@dataclass
class Admission:
    """What admit() granted: the headers to send and the leases to give back."""
    key: KeySnapshot
    headers: dict = field(default_factory=dict)
    leases: list[tuple[str, str]] = field(default_factory=list)  # concurrency slot: (lease set, lease id)
    reservations: list[tuple[str, str]] = field(default_factory=list)  # budget / quota, until charged
    lease_renewed: float = field(default_factory=time.monotonic)
    released: bool = False


class Limiter:
    def __init__(self, redis_client=None, *, fail_open: bool = False,
                 lease_ttl_s: float = LEASE_TTL_S):
        self.lease_ttl = lease_ttl_s
        self.lease_refresh = lease_ttl_s / 3  # live streams renew their leases this often
        self._storage = window_storage(redis_client)  # tpm is counted in a sliding window
        self._leases: RedisLeases | MemoryLeases = (RedisLeases(redis_client) if redis_client is not None
                                                    else MemoryLeases())
        self._windows = SlidingWindowCounterRateLimiter(self._storage)
        self.fail_open = fail_open
        self._live: dict[int, Admission] = {}  # admissions holding leases, renewed in the background
        self._live_lock = threading.Lock()
        self._renewer_pid: int | None = None
        self.clock = utcnow  # naive UTC now: which budget period a request is admitted in (tests inject one)

    # admission --------------------------------------------------------------

    def admit_before_body(self, key: KeySnapshot) -> Admission:
        """What can be refused before the request body is read and parsed (a 32 MB body costs a
        worker far more to parse than this costs): a budget or quota already used up (as of the
        cached snapshot: 402), tpm and rpm (429), and a concurrency slot (429), taken here and
        held while the body arrives. `admit(key, estimate, admission)` then reserves the budget."""
        admission = Admission(key)
        now = self.clock()
        check_budget(key, *key.usage(now), now)
        if not (key.rpm or key.tpm or key.max_concurrency):
            return admission
        try:
            self._admit_limits(key, admission)
        except RateLimited:
            self._give_back(admission)
            raise
        except Exception as exc:
            self._give_back(admission)
            self._store_failed(exc, "admit")
            if not self.fail_open:
                raise Overloaded("rate-limit state is unavailable; retry shortly") from None
        if admission.leases:
            self._track(admission)
        return admission

    def admit(self, key: KeySnapshot, estimate: Estimate = Estimate(),
              admission: Admission | None = None) -> Admission:
        """Refuse (402/429/503) or admit; call `finish` exactly once for every admission.
        `admission`: what `admit_before_body` granted, to which only the budget and quota
        reservation (it needs the body's size and max_tokens) is added; without it, both steps."""
        if admission is None:
            admission = self.admit_before_body(key)
        if key.budget_nanos is None and key.token_quota is None:
            return admission
        try:
            self._reserve(key, admission, estimate)
        except (RateLimited, BillingError, DatabaseError):
            self._give_back(admission)  # the concurrency slot too: this request goes no further
            raise
        except Exception as exc:
            self._release(admission, "reservations")
            self._store_failed(exc, "admit")
            if not self.fail_open:
                self._give_back(admission)
                raise Overloaded("rate-limit state is unavailable; retry shortly") from None
            now = self.clock()
            check_budget(key, *_fresh_usage(key, now), now)  # failing open never waives the budget itself
        if admission.leases or admission.reservations:
            self._track(admission)
        return admission

    def abandon(self, admission: Admission) -> None:
        """A request that ended before it was settled (a bad body, a refused model): give back
        what it holds. Settled requests (`finish` was called) are left alone."""
        if not admission.released:
            self._give_back(admission)

    # leases outlive the wait for a slow answer ------------------------------------

    def _track(self, admission: Admission) -> None:
        """Held leases are renewed by one background thread per process, so a request that waits
        minutes for its answer (non-streaming, or a slow first byte) keeps its slot and its
        reservation; a crashed worker's leases still run out after the TTL."""
        with self._live_lock:
            self._live[id(admission)] = admission
            if self._renewer_pid != os.getpid():  # none yet, or forked (threads do not survive a fork)
                self._renewer_pid = os.getpid()
                threading.Thread(target=_renew_forever, args=(weakref.ref(self),), daemon=True,
                                 name="octorelay-lease-renewer").start()

    def _untrack(self, admission: Admission) -> None:
        if not (admission.leases or admission.reservations):
            with self._live_lock:
                self._live.pop(id(admission), None)

    def renew_live(self) -> None:
        """Renew every held lease that is due, in one round trip to Redis."""
        now = time.monotonic()
        with self._live_lock:
            due = [a for a in self._live.values() if now - a.lease_renewed >= self.lease_refresh]
        pairs = [pair for a in due for pair in a.leases + a.reservations]
        if not pairs:
            return
        for admission in due:
            admission.lease_renewed = now
        try:
            self._leases.refresh_many(pairs, self.lease_ttl)
        except Exception as exc:
            self._store_failed(exc, "refresh")

    def admit_free(self, key: KeySnapshot, kind: str, per_minute: int) -> None:
        """A free call (count_tokens): not billed, but not unlimited either. Refused once the key's
        budget is used up (as of its cached snapshot), and past `per_minute` calls of `kind`;
        separate from the key's rpm, which counts Messages requests."""
        now = self.clock()
        check_budget(key, *key.usage(now), now)
        item = RateLimitItemPerMinute(per_minute)
        try:
            allowed = self._windows.hit(item, "octorelay", kind, str(key.id))
        except Exception as exc:
            self._store_failed(exc, "admit")
            if not self.fail_open:
                raise Overloaded("rate-limit state is unavailable; retry shortly") from None
            return
        if not allowed:
            stats = self._windows.get_window_stats(item, "octorelay", kind, str(key.id))
            raise RateLimited(f"this API key is over its limit of {per_minute} {kind} calls per minute",
                              headers={"retry-after": _retry_after(stats.reset_time)})

    def _reserve(self, key: KeySnapshot, admission: Admission, estimate: Estimate) -> None:
        """Reserve the request's worst case, then compare with fresh totals: 402 when the budget
        is used up or this request alone could cost more than is left; 429 while the rest is
        committed to requests in flight. Reservations never add up past what is left, so the
        most a key overspends is each in-flight request's real cost beyond its reservation.

        Reserving before reading closes the race with a request settling meanwhile: it
        commits its charge before dropping its reservation, so it is counted in one or both.
        """
        held = []
        for kind, cap, weight in (("budget", key.budget_nanos, estimate.cost_nanos),
                                  ("quota", key.token_quota, estimate.tokens)):
            if cap is not None:
                name, lease = f"octorelay:{kind}:{key.id}", uuid.uuid4().hex
                others = self._leases.add(name, lease, weight, self.lease_ttl)
                admission.reservations.append((name, lease))
                held.append((kind, cap, others, weight))
        now = self.clock()
        used_nanos, used_tokens = _fresh_usage(key, now)
        check_budget(key, used_nanos, used_tokens, now)
        for kind, cap, others, weight in held:
            used = used_nanos if kind == "budget" else used_tokens
            if used + others + weight <= cap:
                continue
            if others == 0 or used + weight > cap:
                raise BillingError(_too_dear(kind, cap - used, weight), headers={"x-should-retry": "false"})
            raise RateLimited(f"the rest of this API key's {kind} is committed to requests in flight",
                              headers={"retry-after": "1"})

    def _admit_limits(self, key: KeySnapshot, admission: Admission) -> None:
        if key.tpm:
            tpm = RateLimitItemPerMinute(key.tpm)
            stats = self._windows.get_window_stats(tpm, "octorelay", "tpm", str(key.id))
            admission.headers.update(_headers("tokens", key.tpm, stats.remaining, stats.reset_time))
            if not self._windows.test(tpm, "octorelay", "tpm", str(key.id)):
                raise RateLimited(f"this API key is over its limit of {key.tpm} tokens per minute",
                                  headers={**admission.headers, "retry-after": _retry_after(stats.reset_time)})
        if key.rpm:
            rpm = RateLimitItemPerMinute(key.rpm)
            allowed = self._windows.hit(rpm, "octorelay", "rpm", str(key.id))
            stats = self._windows.get_window_stats(rpm, "octorelay", "rpm", str(key.id))
            admission.headers.update(_headers("requests", key.rpm, stats.remaining, stats.reset_time))
            if not allowed:
                raise RateLimited(f"this API key is over its limit of {key.rpm} requests per minute",
                                  headers={**admission.headers, "retry-after": _retry_after(stats.reset_time)})
        if key.max_concurrency:
            lease, name = uuid.uuid4().hex, f"octorelay:inflight:{key.id}"
            if not self._leases.acquire(name, key.max_concurrency, lease, 1, self.lease_ttl):
                raise RateLimited(
                    f"this API key already has {key.max_concurrency} requests in flight",
                    headers={**admission.headers, "retry-after": "1"})
            admission.leases.append((name, lease))

    # while it runs, and after -------------------------------------------------

    def keep_alive(self, admission: Admission) -> None:
        """Renew a long stream's leases now and then (cheap to call on every chunk)."""
        if not (admission.leases or admission.reservations) \
                or time.monotonic() - admission.lease_renewed < self.lease_refresh:
            return
        admission.lease_renewed = time.monotonic()
        try:
            for name, lease in admission.leases + admission.reservations:
                self._leases.refresh(name, lease, self.lease_ttl)
        except Exception as exc:
            self._store_failed(exc, "refresh")

    def finish(self, admission: Admission, tokens: int) -> None:
        """When the request ends: count its tokens against tpm, give its concurrency slot back.
        Budget and quota reservations stay until `release_reservations` (after the charge)."""
        if admission.released:
            return
        admission.released = True
        key = admission.key
        if key.tpm and tokens:
            tpm = RateLimitItemPerMinute(key.tpm)
            try:
                self._storage.acquire_sliding_window_entry(
                    tpm.key_for("octorelay", "tpm", str(key.id)), RECORD_ANYWAY, tpm.get_expiry(), tokens)
            except Exception as exc:
                self._store_failed(exc, "finish")
        self._release(admission, "leases")

    def release_reservations(self, admission: Admission) -> None:
        """Once the request's charge is committed: it now counts in the key's totals instead."""
        self._release(admission, "reservations")

    def _give_back(self, admission: Admission) -> None:
        self._release(admission, "leases")
        self._release(admission, "reservations")

    def _release(self, admission: Admission, kind: str) -> None:
        """Release one kind of the admission's leases; one that cannot be released expires with its TTL."""
        leases = getattr(admission, kind)
        setattr(admission, kind, [])
        self._untrack(admission)
        for name, lease in leases:
            try:
                self._leases.release(name, lease)
            except Exception as exc:
                self._store_failed(exc, "release")

    def _store_failed(self, exc: Exception, during: str) -> None:
        log.error("rate-limit store failed", extra={"fields": {
            "during": during, "error": type(exc).__name__, "fail_open": self.fail_open}})
        LIMIT_STORE_ERRORS.labels(during).inc()


def _renew_forever(ref) -> None:
    """The renewer thread: ends once its limiter is gone (apps built and dropped by tests)."""
    while True:
        limiter = ref()
        if limiter is None:
            return
        pause = limiter.lease_refresh
        try:
            limiter.renew_live()
        except Exception:
            log.exception("lease renewal failed")
        del limiter
        time.sleep(pause)


def _headers(kind: str, limit: int, remaining: int, reset_epoch: float) -> dict:
    return {
        f"anthropic-ratelimit-{kind}-limit": str(limit),
        f"anthropic-ratelimit-{kind}-remaining": str(max(0, int(remaining))),
        f"anthropic-ratelimit-{kind}-reset": _rfc3339(max(reset_epoch, time.time())),
    }


def _fresh_usage(key: KeySnapshot, now) -> tuple[int, int]:
    """A budgeted key's totals straight from the DB (the cached snapshot may be a second old),
    as of `now`: 0 once the budget period they count has ended."""
    row = ApiKey.select(ApiKey.used_nanos, ApiKey.used_tokens, ApiKey.budget_period, ApiKey.period_start) \
        .where(ApiKey.id == key.id).first()
    if row is None:
        return key.usage(now)
    return current_usage(row.budget_period, row.period_start, row.used_nanos, row.used_tokens, now)


def _too_dear(kind: str, left: int, weight: int) -> str:
    if kind == "budget":
        return (f"this request could cost up to ${nanos_to_usd(weight):.4f} (its input and all of max_tokens at "
                f"the model's dearest rates) and ${nanos_to_usd(max(left, 0)):.4f} of this API key's budget "
                "is left: lower max_tokens, or raise the budget")
    return (f"this request could use up to {weight} tokens (its input and all of max_tokens) and "
            f"{max(left, 0)} of this API key's token quota are left: lower max_tokens, or raise the quota")


def check_budget(key: KeySnapshot, used_nanos: int, used_tokens: int, now=None) -> None:
    resets = resets_at(key.budget_period, now or utcnow())
    until = f" (it resets at {iso(resets)})" if resets else ""
    if key.budget_nanos is not None and used_nanos >= key.budget_nanos:
        raise BillingError(
            f"this API key has used its budget of {format_usd(key.budget_nanos)}{until}",
            headers={"x-should-retry": "false"})
    if key.token_quota is not None and used_tokens >= key.token_quota:
        raise BillingError(f"this API key has used its quota of {key.token_quota} tokens{until}",
                           headers={"x-should-retry": "false"})
