"""Per-key admission: budget and token quota (402), rpm / tpm (429), concurrent requests (429).

rpm and tpm use the `limits` library's sliding-window counters, in Redis
when REDIS_URL is set (shared by every worker and instance) and in process
memory otherwise. Concurrency is a set of leases with a TTL, so a worker
that dies mid-request cannot hold a slot for longer than the TTL. Every
check fails closed unless OCTORELAY_LIMITS_FAIL_OPEN is set.
"""
from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from limits import RateLimitItemPerMinute
from limits.storage import storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

from ..errors import BillingError, Overloaded, RateLimited
from ..metrics import LIMIT_STORE_ERRORS
from .auth import KeySnapshot
from .keys import nanos_to_usd

log = logging.getLogger("octorelay.limits")

LEASE_TTL_S = 60.0          # a crashed worker's slot comes back after this long
LEASE_REFRESH_S = 20.0      # live streams renew their lease this often
RECORD_ANYWAY = 2 ** 62     # "limit" used to record tokens that were already spent


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _retry_after(reset_epoch: float) -> str:
    """Whole seconds until the window frees room, rounded up, 1-60 (the SDK waits up to 60)."""
    return str(min(60, max(1, math.ceil(reset_epoch - time.time()))))


class LimitStoreDown(Exception):
    """The shared limit state cannot be reached."""


class MemoryLeases:
    """Concurrency leases in this process (REDIS_URL unset: one worker only)."""

    def __init__(self):
        self._leases: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()

    def acquire(self, name: str, limit: int, lease: str, ttl: float) -> bool:
        now = time.monotonic()
        with self._lock:
            held = {k: t for k, t in self._leases.get(name, {}).items() if t > now}
            if len(held) >= limit:
                self._leases[name] = held
                return False
            held[lease] = now + ttl
            self._leases[name] = held
            return True

    def refresh(self, name: str, lease: str, ttl: float) -> None:
        with self._lock:
            if lease in self._leases.get(name, {}):
                self._leases[name][lease] = time.monotonic() + ttl

    def release(self, name: str, lease: str) -> None:
        with self._lock:
            self._leases.get(name, {}).pop(lease, None)


_ACQUIRE = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[3])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[4])) + 1)
return 1
"""


class RedisLeases:
    """Concurrency leases as a sorted set per key (score = expiry), checked and taken atomically."""

    def __init__(self, client):
        self._client = client
        self._acquire = client.register_script(_ACQUIRE)

    def acquire(self, name: str, limit: int, lease: str, ttl: float) -> bool:
        return bool(self._acquire(keys=[name], args=[time.time(), limit, lease, ttl]))

    def refresh(self, name: str, lease: str, ttl: float) -> None:
        self._client.zadd(name, {lease: time.time() + ttl}, xx=True)
        self._client.expire(name, math.ceil(ttl) + 1)

    def release(self, name: str, lease: str) -> None:
        self._client.zrem(name, lease)


@dataclass
class Admission:
    """What admit() granted: the headers to send and the lease to give back."""
    key: KeySnapshot
    headers: dict = field(default_factory=dict)
    lease: str | None = None
    lease_renewed: float = field(default_factory=time.monotonic)
    released: bool = False


class Limiter:
    def __init__(self, redis_url: str | None, redis_client=None, *, fail_open: bool = False):
        if redis_url:
            self._storage = storage_from_string(redis_url, socket_timeout=1, socket_connect_timeout=1)
            self._leases = RedisLeases(redis_client)
        else:
            self._storage = storage_from_string("memory://")
            self._leases = MemoryLeases()
        self._windows = SlidingWindowCounterRateLimiter(self._storage)
        self.fail_open = fail_open

    # admission --------------------------------------------------------------

    def admit(self, key: KeySnapshot) -> Admission:
        """Refuse (402/429/503) or admit; call `finish` exactly once for every admission."""
        check_budget(key)
        admission = Admission(key)
        if not (key.rpm or key.tpm or key.max_concurrency):
            return admission
        try:
            self._admit_limits(key, admission)
        except (RateLimited, BillingError):
            raise
        except Exception as exc:
            self._store_failed(exc, "admit")
            if not self.fail_open:
                raise Overloaded("rate-limit state is unavailable; retry shortly") from None
        return admission

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
            lease = uuid.uuid4().hex
            if not self._leases.acquire(_lease_set(key.id), key.max_concurrency, lease, LEASE_TTL_S):
                raise RateLimited(
                    f"this API key already has {key.max_concurrency} requests in flight",
                    headers={**admission.headers, "retry-after": "1"})
            admission.lease = lease

    # while it runs, and after -------------------------------------------------

    def keep_alive(self, admission: Admission) -> None:
        """Renew a long stream's lease now and then (cheap to call on every chunk)."""
        if admission.lease is None or time.monotonic() - admission.lease_renewed < LEASE_REFRESH_S:
            return
        admission.lease_renewed = time.monotonic()
        try:
            self._leases.refresh(_lease_set(admission.key.id), admission.lease, LEASE_TTL_S)
        except Exception as exc:
            self._store_failed(exc, "refresh")

    def finish(self, admission: Admission, tokens: int) -> None:
        """Count the tokens against tpm and give the concurrency slot back."""
        if admission.released:
            return
        admission.released = True
        key = admission.key
        try:
            if key.tpm and tokens:
                tpm = RateLimitItemPerMinute(key.tpm)
                self._storage.acquire_sliding_window_entry(
                    tpm.key_for("octorelay", "tpm", str(key.id)), RECORD_ANYWAY, tpm.get_expiry(), tokens)
            if admission.lease is not None:
                self._leases.release(_lease_set(key.id), admission.lease)
        except Exception as exc:
            self._store_failed(exc, "finish")

    def ping(self) -> None:
        if not self._storage.check():
            raise LimitStoreDown("rate-limit store does not answer")

    def _store_failed(self, exc: Exception, during: str) -> None:
        log.error("rate-limit store failed", extra={"fields": {
            "during": during, "error": type(exc).__name__, "fail_open": self.fail_open}})
        LIMIT_STORE_ERRORS.labels(during).inc()


def _lease_set(key_id: int) -> str:
    return f"octorelay:inflight:{key_id}"


def _headers(kind: str, limit: int, remaining: int, reset_epoch: float) -> dict:
    return {
        f"anthropic-ratelimit-{kind}-limit": str(limit),
        f"anthropic-ratelimit-{kind}-remaining": str(max(0, int(remaining))),
        f"anthropic-ratelimit-{kind}-reset": _rfc3339(max(reset_epoch, time.time())),
    }


def check_budget(key: KeySnapshot) -> None:
    if key.budget_nanos is not None and key.used_nanos >= key.budget_nanos:
        raise BillingError(
            f"this API key has used its budget of ${nanos_to_usd(key.budget_nanos):.2f}",
            headers={"x-should-retry": "false"})
    if key.token_quota is not None and key.used_tokens >= key.token_quota:
        raise BillingError(f"this API key has used its quota of {key.token_quota} tokens",
                           headers={"x-should-retry": "false"})
