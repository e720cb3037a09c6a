"""Channel test: one minimal Messages request through a single channel, timed.

An operator adding a channel wants to know now whether its URL, key and model
work, without waiting for traffic. A probe is not client traffic: it is not
billed or logged, and it leaves the channel's health alone (a failed test
must not cool a channel down, a passing one must not hide real failures).
"""
from __future__ import annotations

import fnmatch
import json
import re
import time

from ..adaptors import Target
from ..channel_types import ChannelType, channel_type
from ..config import ConfigError
from ..errors import InvalidRequest
from ..models import Channel, ModelPrice
from ..upstream.transport import TransportError
from .catalog import GLOB_CHARS
from .channels import get_channel
from .routing import ChannelDirectory

PROBE_TIMEOUT_S = 30.0  # the admin is waiting on a button: never the channel's own (long) timeout
PROBE_TEXT = "ping"
DATED = re.compile(r"-\d{8}$")  # claude-sonnet-4-5-20250929: a pinned snapshot, not an alias


def probe_model(channel: Channel) -> str:
    """A concrete model the channel serves: an exact `models` entry, else a `model_map` alias,
    else the priced model its globs match that sorts last among undated names (the newest
    of a family: `claude-sonnet-4-6` for `claude-sonnet-*`)."""
    patterns = list(channel.models or [])
    for pattern in patterns:
        if not GLOB_CHARS.search(pattern):
            return pattern
    if channel.model_map:
        return next(iter(channel.model_map))
    priced = [p.model for p in ModelPrice.select(ModelPrice.model) if not GLOB_CHARS.search(p.model)]
    matching = [m for m in priced if any(fnmatch.fnmatchcase(m, p) for p in patterns)]
    if matching:
        return max(matching, key=lambda m: (not DATED.search(m), m))
    raise InvalidRequest("models: no concrete model to test with: add an exact model name "
                         "or a price for a model its patterns match")


def _target(channel: Channel, kind: ChannelType, directory: ChannelDirectory, model: str) -> Target:
    """Where and as whom: routing's own config and target, under the same policy and secret box."""
    try:
        config = directory.config_of(channel)
    except ConfigError as exc:
        raise InvalidRequest(str(exc)) from None
    if not kind.local:
        refusal = directory.policy.refusal(config.base_url or "")
        if refusal:
            raise InvalidRequest(f"base_url: {refusal}")
    return config.target(model, PROBE_TIMEOUT_S)


def _error_message(body: bytes, status: int) -> str:
    try:
        message = json.loads(body)["error"]["message"]
        if isinstance(message, str) and message:
            return message
    except (ValueError, KeyError, TypeError):
        pass
    return f"upstream answered {status}"


def probe_channel(channel_id: int, directory: ChannelDirectory, transports: dict) -> dict:
    """-> {ok, status, latency_ms, error, model}; `status` is the upstream's, or 502/504 (as the relay
    would answer) when no answer came. A channel that cannot be tried at all is a 400."""
    channel = get_channel(channel_id)
    kind = channel_type(channel.type)
    if kind is None or channel.type not in transports:
        raise InvalidRequest(f"type: channels of type {channel.type!r} cannot be tested")
    adaptor, transport = kind.adaptor, channel.type
    model = probe_model(channel)
    body = {"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": PROBE_TEXT}]}
    request = adaptor.build_request(_target(channel, kind, directory, model), body,
                                    json.dumps(body).encode(), {})
    started = time.perf_counter()
    try:
        upstream = transports[transport].open(request)
        try:
            raw = upstream.read()
        finally:
            upstream.close()
    except TransportError as exc:
        status = 504 if exc.kind == "timeout" else 502
        return _result(False, status, started, exc.message, model)
    if 200 <= upstream.status < 300:
        return _result(True, upstream.status, started, None, model)
    status, error_body = adaptor.translate_error(upstream.status, raw)
    return _result(False, status, started, _error_message(error_body, status), model)


def _result(ok: bool, status: int, started: float, error: str | None, model: str) -> dict:
    latency_ms = int((time.perf_counter() - started) * 1000)
    return {"ok": ok, "status": status, "latency_ms": latency_ms, "error": error, "model": model}
