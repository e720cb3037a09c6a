"""Anthropic's own API: a byte-for-byte passthrough that only reads usage on the way."""
from __future__ import annotations

import json
from typing import Mapping

from ..wire.request import UpstreamRequest
from ..wire.sse import SSEParser
from .base import Target, Usage, join_url

DEFAULT_VERSION = "2023-06-01"
# Client headers that never go upstream even though they start with anthropic-.
_NEVER = frozenset({"anthropic-admin-key"})


def upstream_headers(client_headers: Mapping, api_key: str | None) -> dict:
    """Allow-list: anthropic-* from the client (version defaulted), our channel key, nothing else."""
    out = {
        "content-type": "application/json",
        "accept": "application/json",
        "accept-encoding": "identity",
        "anthropic-version": DEFAULT_VERSION,
    }
    for name, value in client_headers.items():
        lower = name.lower()
        if lower.startswith("anthropic-") and lower not in _NEVER:
            out[lower] = value
    if api_key:
        out["x-api-key"] = api_key
    return out


def body_for(target: Target, body: dict, raw: bytes) -> bytes:
    """The client's own bytes unless model_map renamed the model."""
    if body.get("model") == target.model:
        return raw
    return json.dumps({**body, "model": target.model}, ensure_ascii=False,
                      separators=(",", ":")).encode()


class AnthropicStream:
    """Passes bytes through unchanged while collecting usage from the events."""

    _WATCHED = frozenset({"message_start", "message_delta", "content_block_delta", "error"})

    def __init__(self):
        self.usage = Usage()
        self.usage_final = False
        self.output_chars = 0
        self.error_type = None
        self._parser = SSEParser()

    def feed(self, chunk: bytes) -> bytes:
        for event, data in self._parser.feed(chunk):
            if event in self._WATCHED:
                self._observe(event, data)
        return chunk

    def finish(self) -> bytes:
        for event, data in self._parser.flush():
            if event in self._WATCHED:
                self._observe(event, data)
        return b""

    def _observe(self, event: str, data: str) -> None:
        try:
            payload = json.loads(data)
        except ValueError:
            return
        if not isinstance(payload, dict):
            return
        if event == "message_start":
            self.usage.merge((payload.get("message") or {}).get("usage"))
        elif event == "message_delta":
            usage = payload.get("usage")
            self.usage.merge(usage)
            self.usage_final = self.usage_final or isinstance((usage or {}).get("output_tokens"), int)
        elif event == "content_block_delta":
            delta = payload.get("delta") or {}
            for name in ("text", "thinking", "partial_json"):
                value = delta.get(name)
                if isinstance(value, str):
                    self.output_chars += len(value)
        elif event == "error":
            self.error_type = (payload.get("error") or {}).get("type") or "api_error"


class AnthropicAdaptor:
    def build_request(self, target: Target, body: dict, raw: bytes, headers: Mapping,
                      *, count_tokens: bool = False) -> UpstreamRequest:
        path = "/v1/messages/count_tokens" if count_tokens else "/v1/messages"
        out_headers = upstream_headers(headers, target.api_key)
        if body.get("stream") is True and not count_tokens:
            out_headers["accept"] = "text/event-stream"
        return UpstreamRequest(join_url(target.base_url, path), out_headers,
                               body_for(target, body, raw), target.timeout_s)

    def translate_response(self, body: bytes) -> tuple[bytes, Usage]:
        usage = Usage()
        try:
            payload = json.loads(body)
            if isinstance(payload, dict):
                usage.merge(payload.get("usage"))
        except ValueError:
            pass
        return body, usage

    def translate_stream(self, request: Mapping | None = None) -> AnthropicStream:
        return AnthropicStream()

    def translate_error(self, status: int, body: bytes) -> tuple[int, bytes]:
        return status, body
