"""Which channels may serve a model, in what order, and how their health is tracked.

Order: enabled channels serving the model; those not cooling down first,
highest priority first, weighted-random inside a priority; cooling-down
channels last (used only when the others are exhausted). The channel list
is cached per process: reloaded at once after an admin write (services/changes.py),
and at least every `ttl` seconds for health changes made by other workers.
"""
from __future__ import annotations

import fnmatch
import json
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..adaptors.base import Target
from ..channel_types import channel_type
from ..config import ConfigError
from ..crypto import SecretBox
from ..db import connection_then
from ..metrics import CHANNEL_FAILURES
from ..models import Channel, utcnow
from .changes import ChangeFeed, change_feed
from .channels import effective_base_url
from .upstream_policy import DEFAULT_POLICY, UpstreamPolicy

log = logging.getLogger("octorelay.routing")

FAILURES_BEFORE_COOLDOWN = 3
COOLDOWN_BASE_S = 30
COOLDOWN_MAX_S = 600


@dataclass(frozen=True)
class ChannelConfig:
    id: int
    name: str
    type: str
    base_url: str | None
    api_key: str | None
    models: tuple[str, ...]
    model_map: dict
    priority: int
    weight: int
    timeout_s: float
    consecutive_failures: int
    cooldown_until: datetime | None
    options: dict = field(default_factory=dict)
    credentials: dict | None = field(default=None, repr=False)

    def serves(self, model: str) -> bool:
        return model in self.model_map or any(fnmatch.fnmatchcase(model, p) for p in self.models)

    def names(self, model: str) -> bool:
        """Serves `model` by its exact name (not only through a glob)."""
        return model in self.model_map or model in self.models

    def upstream_model(self, model: str) -> str:
        return self.model_map.get(model, model)

    def cooling(self, now: datetime) -> bool:
        return self.cooldown_until is not None and self.cooldown_until > now

    def target(self, model: str, max_timeout_s: float | None = None) -> Target:
        """Where and as whom to send `model` (the client's name): the one way relay and probe build it."""
        timeout = self.timeout_s if max_timeout_s is None else min(self.timeout_s, max_timeout_s)
        return Target(self.base_url or "", self.api_key, self.upstream_model(model), timeout,
                      self.options, self.credentials)


def cooldown_for(failures: int) -> float:
    """Seconds to rest after the n-th consecutive failure: 30 s, doubling, at most 10 min."""
    if failures < FAILURES_BEFORE_COOLDOWN:
        return 0.0
    return float(min(COOLDOWN_BASE_S * 2 ** (failures - FAILURES_BEFORE_COOLDOWN), COOLDOWN_MAX_S))


def weighted_order(channels: list[ChannelConfig], rng: random.Random) -> list[ChannelConfig]:
    """Weighted sampling without replacement (Efraimidis–Spirakis keys)."""
    return sorted(channels, key=lambda c: rng.random() ** (1.0 / max(c.weight, 1)), reverse=True)


def order_candidates(channels: list[ChannelConfig], model: str, now: datetime,
                     rng: random.Random) -> list[ChannelConfig]:
    serving = [c for c in channels if c.serves(model)]
    ready = [c for c in serving if not c.cooling(now)]
    resting = sorted((c for c in serving if c.cooling(now)), key=lambda c: c.cooldown_until or now)  # set when cooling
    ordered = []
    for priority in sorted({c.priority for c in ready}, reverse=True):
        ordered += weighted_order([c for c in ready if c.priority == priority], rng)
    return ordered + resting


def home_first(candidates: list[ChannelConfig], home: int, now: datetime) -> list[ChannelConfig]:
    """A conversation's channel first while it is usable (in the list, so enabled and serving
    the model, and not cooling down); otherwise the list as it is (session affinity)."""
    for i, channel in enumerate(candidates):
        if channel.id == home:
            if i == 0 or channel.cooling(now):
                return candidates
            return [channel, *candidates[:i], *candidates[i + 1:]]
    return candidates


class ChannelDirectory:
    """Enabled channels with decrypted keys, refreshed at most every `ttl` seconds."""

    def __init__(self, box: SecretBox, ttl: float = 1.0, policy: UpstreamPolicy = DEFAULT_POLICY,
                 feed: ChangeFeed | None = None, rng: random.Random | None = None):
        self.box = box
        self.policy = policy
        self.ttl = ttl
        self.feed = feed or change_feed()
        self._channels: list[ChannelConfig] = []
        self._loaded_at = float("-inf")
        self._version = -1
        self._lock = threading.Lock()
        # the randomness of the weighted order: injectable, so a test can seed it
        self.rng = rng or random.Random()
        self._reset_checked: dict[int, float] = {}  # channel id -> when a reset was last tried

    def channels(self) -> list[ChannelConfig]:
        """Reloaded when an admin write moved the change feed, and at least every `ttl` seconds
        (health counts that other workers change are not announced)."""
        version = self.feed.version()
        if version != self._version or time.monotonic() - self._loaded_at >= self.ttl:
            with connection_then(self._lock):  # never wait on the pool while holding the lock
                version = self.feed.version()
                if version != self._version or time.monotonic() - self._loaded_at >= self.ttl:
                    rows = Channel.select().where(Channel.enabled == True)  # noqa: E712
                    configs = (self._config(c) for c in rows if self._allowed(c))
                    self._channels = [c for c in configs if c is not None]
                    self._loaded_at = time.monotonic()
                    self._version = version
        return self._channels

    def _allowed(self, row: Channel) -> bool:
        """Channels made before a tighter OCTORELAY_UPSTREAM_* policy are not used."""
        kind = channel_type(row.type)
        if kind is None or kind.local:
            return kind is not None
        refusal = self.policy.refusal(effective_base_url(row.type, row.base_url, row.options))
        if refusal:
            log.warning("channel skipped by upstream policy", extra={"fields": {
                "channel_id": row.id, "reason": refusal}})
        return refusal is None

    def _config(self, row: Channel) -> ChannelConfig | None:
        """None (and an error line) for a channel whose key cannot be decrypted: one bad
        channel must not take the others down with it."""
        try:
            return self.config_of(row)
        except ConfigError as exc:
            log.error("channel skipped: its upstream key cannot be decrypted", extra={"fields": {
                "channel_id": row.id, "reason": str(exc)}})
            return None

    def config_of(self, row: Channel) -> ChannelConfig:
        """A row with its secrets decrypted (ConfigError when they cannot be): also the probe's way in."""
        api_key = self.box.decrypt(row.api_key_enc) if row.api_key_enc else None
        credentials = json.loads(self.box.decrypt(row.credentials_enc)) if row.credentials_enc else None
        return ChannelConfig(
            id=row.id, name=row.name, type=row.type,
            base_url=effective_base_url(row.type, row.base_url, row.options),
            api_key=api_key,
            models=tuple(row.models or ()), model_map=dict(row.model_map or {}),
            priority=row.priority, weight=row.weight, timeout_s=row.timeout_s,
            consecutive_failures=row.consecutive_failures, cooldown_until=row.cooldown_until,
            options=dict(row.options or {}), credentials=credentials)

    def cached(self) -> list[ChannelConfig]:
        """The channel list as last loaded, without reloading it."""
        return self._channels

    def candidates(self, model: str) -> list[ChannelConfig]:
        return order_candidates(self.channels(), model, utcnow(), self.rng)

    def invalidate(self) -> None:
        self._loaded_at = float("-inf")

    def record_failure(self, channel: ChannelConfig, reason: str) -> None:
        """Count the failure atomically; a channel failing repeatedly starts to cool down.

        Failures of requests already in flight while it cools down are not counted, so
        one burst makes one cooldown; the next one, after it has been tried again, is longer.
        """
        CHANNEL_FAILURES.labels(str(channel.id), reason).inc()
        now = utcnow()
        counted = Channel.update(consecutive_failures=Channel.consecutive_failures + 1).where(
            (Channel.id == channel.id)
            & (Channel.cooldown_until.is_null() | (Channel.cooldown_until <= now))).execute()
        row = Channel.get_or_none(Channel.id == channel.id) if counted else None
        if row is not None:
            rest = cooldown_for(row.consecutive_failures)
            if rest:
                Channel.update(cooldown_until=now + timedelta(seconds=rest)).where(
                    Channel.id == channel.id).execute()
                log.warning("channel cooling down", extra={"fields": {
                    "channel_id": channel.id, "failures": row.consecutive_failures,
                    "cooldown_s": rest, "reason": reason}})
        self._reset_checked.pop(channel.id, None)
        self.invalidate()

    def record_success(self, channel: ChannelConfig) -> None:
        """One success resets the count. A channel this worker believes healthy is re-checked
        at most once a second, since another worker may have counted a failure meanwhile."""
        now = time.monotonic()
        known_bad = channel.consecutive_failures or channel.cooldown_until is not None
        if not known_bad and now - self._reset_checked.get(channel.id, float("-inf")) < 1.0:
            return
        self._reset_checked[channel.id] = now
        reset = Channel.update(consecutive_failures=0, cooldown_until=None).where(
            (Channel.id == channel.id)
            & ((Channel.consecutive_failures > 0) | Channel.cooldown_until.is_null(False))).execute()
        if reset:
            self.invalidate()
