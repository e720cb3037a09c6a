"""Failed admin sign-ins, counted per client address: past a few a minute, that address waits.

The admin token is long (32+ characters), so guessing it is hopeless; the
throttle keeps a script from trying, and from filling the log while it
tries. Counts live with the rate limits (Redis when REDIS_URL is set, so
every worker and instance shares them); if that store fails they fall back
to this process's memory: the admin API stays usable, and still throttled.
"""
from __future__ import annotations

import hmac
import ipaddress
import logging
import math
import threading
import time

from limits import RateLimitItemPerMinute
from limits.strategies import SlidingWindowCounterRateLimiter

from ..errors import AuthenticationFailed, RateLimited
from ..metrics import ADMIN_AUTH_FAILURES, LIMIT_STORE_ERRORS
from .limiter import window_storage

log = logging.getLogger("octorelay.admin")

FAILURES_PER_MINUTE = 10


class AdminGuard:
    def __init__(self, redis_client=None, trusted_proxies: tuple[str, ...] = ("127.0.0.1",),
                 per_minute: int = FAILURES_PER_MINUTE):
        self._item = RateLimitItemPerMinute(per_minute)
        self._memory = SlidingWindowCounterRateLimiter(window_storage())
        self._shared = (SlidingWindowCounterRateLimiter(window_storage(redis_client))
                        if redis_client is not None else None)
        self._trusted = trusted_proxies
        self._noted: dict[str, float] = {}  # address -> when this process last logged its throttling
        self._lock = threading.Lock()

    def client_address(self, peer: str | None, forwarded_for: str | None) -> str:
        """The peer, or, when the peer is a trusted proxy (FORWARDED_ALLOW_IPS, as gunicorn uses
        it), the address that proxy saw: the last X-Forwarded-For entry, which it appended."""
        peer = peer or "-"
        if forwarded_for and ("*" in self._trusted or peer in self._trusted):
            last = forwarded_for.rsplit(",", 1)[-1].strip()
            try:
                return str(ipaddress.ip_address(last))
            except ValueError:
                pass  # not an address: count the proxy's
        return peer

    def authorize(self, expected: str, authorization: str, address: str, path: str, refusal: str) -> None:
        """Let a request through if its `Authorization: Bearer` is `expected`; else 401 with
        `refusal` (counted and logged), or 429 while its address is throttled."""
        self.check(address, path)
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode()):
            return
        self.failed(address, path, "wrong token" if given.strip() else "no bearer token")
        raise AuthenticationFailed(refusal)

    def check(self, address: str, path: str) -> None:
        """429 while `address` is over its failures; before the token is even compared."""
        windows = self._shared or self._memory
        try:
            allowed = windows.test(self._item, "octorelay", "admin-failures", address)
        except Exception as exc:
            self._store_failed(exc)
            windows, allowed = self._memory, self._memory.test(self._item, "octorelay", "admin-failures", address)
        if allowed:
            return
        reset = windows.get_window_stats(self._item, "octorelay", "admin-failures", address).reset_time
        retry = min(60, max(1, math.ceil(reset - time.time())))
        ADMIN_AUTH_FAILURES.labels("throttled").inc()
        if self._first_note(address, retry):
            log.warning("admin sign-ins throttled", extra={"fields": {
                "client": address, "path": path, "per_minute": self._item.amount, "retry_after": retry}})
        raise RateLimited(f"too many failed admin sign-ins from this address: try again in {retry} s",
                          headers={"retry-after": str(retry)})

    def failed(self, address: str, path: str, reason: str) -> None:
        """Count and log one failed attempt (never the token that was sent)."""
        ADMIN_AUTH_FAILURES.labels("refused").inc()
        log.warning("admin sign-in failed", extra={"fields": {"client": address, "path": path, "reason": reason}})
        try:
            (self._shared or self._memory).hit(self._item, "octorelay", "admin-failures", address)
        except Exception as exc:
            self._store_failed(exc)
            self._memory.hit(self._item, "octorelay", "admin-failures", address)

    def _first_note(self, address: str, retry: int) -> bool:
        """One 'throttled' line per address per window in this process, however many attempts."""
        now = time.monotonic()
        with self._lock:
            if self._noted.get(address, 0) > now:
                return False
            if len(self._noted) > 10_000:
                self._noted.clear()
            self._noted[address] = now + retry
            return True

    def _store_failed(self, exc: Exception) -> None:
        log.error("rate-limit store failed", extra={"fields": {"during": "admin", "error": type(exc).__name__}})
        LIMIT_STORE_ERRORS.labels("admin").inc()
