"""Client authentication: octorelay key -> a snapshot of the key's row, or 401.

Lookups are cached per process for at most `ttl` seconds (1 s by default),
so a busy key costs one indexed SELECT per second, not one per request, and
its spend totals are at most that old. Admin writes (revoke, disable, new
limits) do not wait for the ttl: the change feed drops every entry at once.
"""
from __future__ import annotations

import fnmatch
import hmac
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from ..errors import AuthenticationFailed, PermissionDenied
from ..models import ApiKey, utcnow
from ..periods import current_usage
from .changes import ChangeFeed, change_feed
from .keys import KEY_PREFIX, hash_key


@dataclass(frozen=True)
class KeySnapshot:
    id: int
    name: str
    models: tuple[str, ...]
    budget_nanos: int | None
    used_nanos: int
    token_quota: int | None
    used_tokens: int
    rpm: int | None
    tpm: int | None
    max_concurrency: int | None
    expires_at: datetime | None
    enabled: bool
    revoked: bool
    budget_period: str | None = None  # day / week / month: used_* count from period_start
    period_start: datetime | None = None

    @classmethod
    def of(cls, row: ApiKey) -> "KeySnapshot":
        return cls(
            id=row.id, name=row.name, models=tuple(row.models or ()),
            budget_nanos=row.budget_nanos, used_nanos=row.used_nanos,
            token_quota=row.token_quota, used_tokens=row.used_tokens,
            rpm=row.rpm, tpm=row.tpm, max_concurrency=row.max_concurrency,
            expires_at=row.expires_at, enabled=row.enabled, revoked=row.revoked_at is not None,
            budget_period=row.budget_period, period_start=row.period_start,
        )

    def usage(self, now: datetime) -> tuple[int, int]:
        """(used nanos, used tokens) as of `now`: 0 once the budget period they count has ended."""
        return current_usage(self.budget_period, self.period_start, self.used_nanos, self.used_tokens, now)

    def may_use(self, model: str) -> bool:
        """Empty `models` means every model; otherwise one glob must match."""
        return not self.models or any(fnmatch.fnmatchcase(model, g) for g in self.models)

    def check_model(self, model: str) -> None:
        if not self.may_use(model):
            raise PermissionDenied(f"this API key is not allowed to use model {model!r}")


class KeyCache:
    """hash -> (snapshot, fetched_at, change version); bounded in age and in size.

    Unknown keys are remembered too (for `miss_ttl` seconds, or until the next admin write), so
    a client retrying with a wrong key costs no database read per request.
    """

    def __init__(self, ttl: float = 1.0, max_entries: int = 10_000, feed: ChangeFeed | None = None,
                 miss_ttl: float = 30.0):
        self.ttl = ttl
        self.miss_ttl = miss_ttl
        self.max_entries = max_entries
        self.feed = feed or change_feed()
        self._entries: dict[str, tuple[KeySnapshot, float, int]] = {}
        self._misses: dict[str, tuple[float, int]] = {}
        self._refreshing: set[str] = set()
        self._lock = threading.Lock()

    def lookup(self, key_hash: str) -> KeySnapshot | None:
        now = time.monotonic()
        version = self.feed.version()
        hit = self._entries.get(key_hash)
        if hit is not None and hit[2] == version:
            if now - hit[1] < self.ttl or not self._claim(key_hash):
                return hit[0]  # aged out, but another request of this worker is reading it again
            try:
                return self._load(key_hash, now, version)
            finally:
                self._refreshing.discard(key_hash)
        miss = self._misses.get(key_hash)
        if miss is not None and now - miss[0] < self.miss_ttl and miss[1] == version:
            return None
        return self._load(key_hash, now, version)

    def _claim(self, key_hash: str) -> bool:
        """One reload per aged-out key at a time: the ~64 requests in flight when it ages out
        would otherwise each read it. (An admin write moves the version: that is never served
        from the old entry.)"""
        with self._lock:
            if key_hash in self._refreshing:
                return False
            self._refreshing.add(key_hash)
            return True

    def _load(self, key_hash: str, now: float, version: int) -> KeySnapshot | None:
        row = ApiKey.get_or_none(ApiKey.key_hash == key_hash)
        if row is None or not hmac.compare_digest(row.key_hash, key_hash):
            with self._lock:
                self._entries.pop(key_hash, None)
                if len(self._misses) >= self.max_entries:
                    self._misses.clear()
                self._misses[key_hash] = (now, version)
            return None
        snapshot = KeySnapshot.of(row)
        if self.ttl > 0:
            with self._lock:
                if len(self._entries) >= self.max_entries:
                    self._entries.clear()
                self._entries[key_hash] = (snapshot, now, version)
        return snapshot

    def clear(self) -> None:
        self._entries.clear()
        self._misses.clear()


def key_from_headers(headers) -> str | None:
    """`x-api-key` wins; else `Authorization: Bearer KEY` (recent SDKs send that)."""
    raw = headers.get("x-api-key")
    if raw:
        return raw.strip()
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def authenticate(raw_key: str | None, cache: KeyCache) -> KeySnapshot:
    if not raw_key:
        raise AuthenticationFailed(
            "missing API key: send it in the x-api-key header or as Authorization: Bearer")
    if not raw_key.startswith(KEY_PREFIX) or len(raw_key) > 200:
        raise AuthenticationFailed("invalid API key")
    snapshot = cache.lookup(hash_key(raw_key))
    if snapshot is None:
        raise AuthenticationFailed("invalid API key")
    if snapshot.revoked:
        raise AuthenticationFailed("this API key has been revoked")
    if not snapshot.enabled:
        raise AuthenticationFailed("this API key is disabled")
    if snapshot.expires_at is not None and snapshot.expires_at <= utcnow():
        raise AuthenticationFailed("this API key has expired")
    return snapshot
