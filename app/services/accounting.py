"""What a request cost, and writing it down: one log row and one atomic charge per request.

Cost is computed in integers: tokens x micro-dollars per million tokens is
pico-dollars, rounded once to the nano-dollars the DB stores, so log rows
and key totals always add up exactly.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from ..adaptors.base import Usage
from ..db import db
from ..models import ApiKey, ModelPrice, RequestLog

log = logging.getLogger("octorelay.accounting")


@dataclass
class RequestRecord:
    """Everything the log row needs; filled in as the request goes."""
    request_id: str
    key_id: int | None
    model: str
    stream: bool
    started: float = field(default_factory=time.perf_counter)
    upstream_model: str | None = None
    channel_id: int | None = None
    status: int = 0
    error_type: str | None = None
    usage: Usage = field(default_factory=Usage)
    ttft_ms: int | None = None
    attempts: int = 0
    client_disconnected: bool = False
    settled: bool = False
    cost_nanos: int = 0
    latency_ms: int = 0


class PriceBook:
    """Prices cached per process for `ttl` seconds (PUT /admin/prices applies within it)."""

    def __init__(self, ttl: float = 5.0):
        self.ttl = ttl
        self._prices: dict[str, tuple[int, int, int, int]] = {}
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()
        self._warned: set[str] = set()

    def _table(self) -> dict[str, tuple[int, int, int, int]]:
        if time.monotonic() - self._loaded_at >= self.ttl:
            with self._lock:
                self._prices = {p.model: (p.input, p.output, p.cache_write, p.cache_read)
                                for p in ModelPrice.select()}
                self._loaded_at = time.monotonic()
        return self._prices

    def cost_nanos(self, model: str | None, usage: Usage) -> int:
        price = self._table().get(model or "")
        if price is None:
            if usage.total and model not in self._warned:
                self._warned.add(model)
                log.warning("no price for model; cost recorded as 0", extra={"fields": {"model": model}})
            return 0
        pico = (usage.input_tokens * price[0] + usage.output_tokens * price[1]
                + usage.cache_creation_input_tokens * price[2] + usage.cache_read_input_tokens * price[3])
        return (pico + 500) // 1000


def settle(record: RequestRecord, prices: PriceBook) -> None:
    """Write the log row and charge the key in one transaction, on a connection of our own.

    Runs at the end of every routed request, streams included (after Flask
    has torn the request down), so it never relies on the request's connection.
    """
    record.settled = True
    usage = record.usage
    cost = record.cost_nanos = prices.cost_nanos(record.upstream_model or record.model, usage)
    latency_ms = record.latency_ms = int((time.perf_counter() - record.started) * 1000)
    try:
        with db.connection_context(), db.atomic():
            RequestLog.create(
                request_id=record.request_id, key_id=record.key_id, channel_id=record.channel_id,
                model=record.model, stream=record.stream, status=record.status,
                error_type=record.error_type, input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_creation_input_tokens=usage.cache_creation_input_tokens,
                cache_read_input_tokens=usage.cache_read_input_tokens, cost_nanos=cost,
                latency_ms=latency_ms, ttft_ms=record.ttft_ms, attempts=record.attempts,
                client_disconnected=record.client_disconnected)
            if record.key_id is not None and (cost or usage.total):
                ApiKey.update(used_nanos=ApiKey.used_nanos + cost,
                              used_tokens=ApiKey.used_tokens + usage.total).where(
                    ApiKey.id == record.key_id).execute()
    except Exception:
        # Never let accounting break the response, but never lose it silently either.
        log.exception("failed to record request", extra={"fields": {
            "request_id": record.request_id, "key_id": record.key_id, "model": record.model,
            "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
            "cache_creation_input_tokens": usage.cache_creation_input_tokens,
            "cache_read_input_tokens": usage.cache_read_input_tokens, "cost_nanos": cost}})
