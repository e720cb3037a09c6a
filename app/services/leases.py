"""Weighted leases with a TTL: the concurrency slots and budget/quota reservations of requests in
flight. In process memory for one worker, in Redis (sorted set + hash, one Lua script per
acquire) for many; a lease not renewed within its TTL is gone, so a dead worker's slots return.
"""
from __future__ import annotations

import threading
import time


class MemoryLeases:
    """Weighted leases in this process (REDIS_URL unset: one worker only)."""

    def __init__(self):
        self._leases: dict[str, dict[str, tuple[float, int]]] = {}  # name -> lease -> (expiry, weight)
        self._lock = threading.Lock()

    def acquire(self, name: str, capacity: int, lease: str, weight: int, ttl: float) -> bool:
        """Take the lease if the live leases' weights add up to less than `capacity`."""
        now = time.monotonic()
        with self._lock:
            held = {k: v for k, v in self._leases.get(name, {}).items() if v[0] > now}
            self._leases[name] = held
            if sum(w for _, w in held.values()) >= capacity:
                return False
            held[lease] = (now + ttl, weight)
            return True

    def add(self, name: str, lease: str, weight: int, ttl: float) -> int:
        """Take the lease unconditionally; returns the weight the other live leases hold."""
        now = time.monotonic()
        with self._lock:
            held = {k: v for k, v in self._leases.get(name, {}).items() if v[0] > now}
            self._leases[name] = held
            others = sum(w for _, w in held.values())
            held[lease] = (now + ttl, weight)
            return others

    def refresh(self, name: str, lease: str, ttl: float) -> None:
        with self._lock:
            held = self._leases.get(name, {})
            if lease in held:
                held[lease] = (time.monotonic() + ttl, held[lease][1])

    def refresh_many(self, pairs: list[tuple[str, str]], ttl: float) -> None:
        for name, lease in pairs:
            self.refresh(name, lease, ttl)

    def release(self, name: str, lease: str) -> None:
        with self._lock:
            self._leases.get(name, {}).pop(lease, None)


# Expiries are on Redis' own clock (TIME), never a client's: instances with skewed clocks
# must agree on which leases are live.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# KEYS[1]: zset lease -> expiry; KEYS[2]: hash lease -> weight.
# ARGV: unused, capacity (-1: take unconditionally), lease, weight, ttl.
# Returns -1 when refused, else the weight the other live leases hold.
_ACQUIRE = _NOW + """
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, lease in ipairs(expired) do
  redis.call('ZREM', KEYS[1], lease)
  redis.call('HDEL', KEYS[2], lease)
end
local total = 0
for _, weight in ipairs(redis.call('HVALS', KEYS[2])) do total = total + tonumber(weight) end
local capacity = tonumber(ARGV[2])
if capacity >= 0 and total >= capacity then return -1 end
local ttl = tonumber(ARGV[5])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], math.ceil(ttl) + 1)
redis.call('EXPIRE', KEYS[2], math.ceil(ttl) + 1)
return total
"""

# KEYS as above; ARGV: lease, ttl. Renews a lease that is still held.
_REFRESH = _NOW + """
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(ttl) + 1)
redis.call('EXPIRE', KEYS[2], math.ceil(ttl) + 1)
return 1
"""


class RedisLeases:
    """Weighted leases shared by every worker: checked and taken in one Lua script."""

    def __init__(self, client):
        self._client = client
        self._acquire = client.register_script(_ACQUIRE)
        self._refresh = client.register_script(_REFRESH)

    def acquire(self, name: str, capacity: int, lease: str, weight: int, ttl: float) -> bool:
        return self._run(name, capacity, lease, weight, ttl) >= 0

    def add(self, name: str, lease: str, weight: int, ttl: float) -> int:
        return self._run(name, -1, lease, weight, ttl)

    def _run(self, name: str, capacity: int, lease: str, weight: int, ttl: float) -> int:
        return int(self._acquire(keys=[name, name + ":w"], args=[0, capacity, lease, weight, ttl]))

    def refresh(self, name: str, lease: str, ttl: float) -> None:
        self._refresh(keys=[name, name + ":w"], args=[lease, ttl])

    def refresh_many(self, pairs: list[tuple[str, str]], ttl: float) -> None:
        pipe = self._client.pipeline(transaction=False)
        for name, lease in pairs:
            self._refresh(keys=[name, name + ":w"], args=[lease, ttl], client=pipe)
        pipe.execute()

    def release(self, name: str, lease: str) -> None:
        pipe = self._client.pipeline()
        pipe.zrem(name, lease)
        pipe.hdel(name + ":w", lease)
        pipe.execute()
