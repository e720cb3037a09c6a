"""Prometheus metrics: what the relay did, per model and channel.

Under gunicorn, PROMETHEUS_MULTIPROC_DIR is set before workers fork (see
gunicorn_config.py), so every worker writes its own files and /metrics
reports the sum. Labels never carry keys or free text from clients: the
model label is a model some channel names exactly or some price matches,
"other" for anything else a glob channel accepted.
"""
from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)

REQUESTS = Counter("octorelay_requests", "Relayed requests by outcome.", ["status", "model", "channel"])
TOKENS = Counter("octorelay_tokens", "Tokens processed upstream.", ["model", "kind"])
COST = Counter("octorelay_cost_usd", "Cost charged to keys, USD.", ["model"])
LATENCY = Histogram("octorelay_request_duration_seconds", "Time from request to the end of the answer.",
                    ["channel"], buckets=LATENCY_BUCKETS)
TTFT = Histogram("octorelay_time_to_first_token_seconds", "Time from request to the first byte of the answer.",
                 ["channel"], buckets=LATENCY_BUCKETS)
STREAMS = Gauge("octorelay_streams_in_flight", "Streams being relayed now.", multiprocess_mode="livesum")
CHANNEL_FAILURES = Counter("octorelay_channel_failures", "Failed upstream attempts.", ["channel", "reason"])
UNPRICED_REQUESTS = Counter("octorelay_unpriced_requests", "Requests relayed at cost 0: their model has no price.",
                            ["model"])
SESSION_AFFINITY = Counter("octorelay_session_affinity",
                           "Routed requests of a known conversation: kept on its channel, new, or moved.",
                           ["outcome"])
REFUSALS = Counter("octorelay_refusals", "Requests refused before routing, and whether they got a log row.",
                   ["status", "error_type", "logged"])
LIMIT_STORE_ERRORS = Counter("octorelay_limit_store_errors", "Rate-limit store (Redis) failures.", ["during"])
ADMIN_AUTH_FAILURES = Counter("octorelay_admin_auth_failures",
                              "Admin API calls refused for a wrong or missing token, or throttled after too many.",
                              ["outcome"])


def record_request(record) -> None:
    """An on_settled hook: `record` is a settled services.accounting.RequestRecord."""
    channel = str(record.channel_id) if record.channel_id is not None else "-"
    model = record.metric_model if record.channel_id is not None else "-"
    REQUESTS.labels(str(record.status), model, channel).inc()
    if record.channel_id is None:
        return
    usage = record.usage
    for kind in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens",
                 "cache_creation_1h_input_tokens"):
        value = getattr(usage, kind)
        if value:
            TOKENS.labels(model, kind).inc(value)
    if record.cost_nanos:
        COST.labels(model).inc(record.cost_nanos / 1e9)
    LATENCY.labels(channel).observe(record.latency_ms / 1000)
    if record.ttft_ms is not None:
        TTFT.labels(channel).observe(record.ttft_ms / 1000)


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
