"""A complete Messages API answer as the event stream Anthropic would have sent for it.

For upstreams that answer a streamed request with one JSON message: the
client asked for events, and its SDK cannot read anything else.
"""
from __future__ import annotations

import json
from typing import Iterator

Event = tuple[str, dict]

_USAGE_AT_START = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "cache_creation",
                   "service_tier")


def message_events(message: dict) -> Iterator[Event]:
    """message_start, each content block (start, deltas, stop), message_delta, message_stop."""
    usage = message.get("usage") or {}
    start_usage = {k: usage[k] for k in _USAGE_AT_START if k in usage}
    start_usage["output_tokens"] = min(1, usage.get("output_tokens") or 0)
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}
    yield "message_start", {"type": "message_start", "message": start}
    for index, block in enumerate(message.get("content") or []):
        yield from _block_events(index, block)
    yield "message_delta", {"type": "message_delta",
                            "delta": {"stop_reason": message.get("stop_reason"),
                                      "stop_sequence": message.get("stop_sequence")},
                            "usage": usage}
    yield "message_stop", {"type": "message_stop"}


def _block_events(index: int, block: dict) -> Iterator[Event]:
    kind = block.get("type")
    if kind == "text":
        empty, deltas = {**block, "text": ""}, [{"type": "text_delta", "text": block.get("text", "")}]
        if block.get("citations"):
            empty["citations"] = []
            deltas += [{"type": "citations_delta", "citation": c} for c in block["citations"]]
    elif kind == "thinking":
        empty = {**block, "thinking": "", "signature": ""}
        deltas = [{"type": "thinking_delta", "thinking": block.get("thinking", "")}]
        if block.get("signature"):
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
    elif kind in ("tool_use", "server_tool_use", "mcp_tool_use"):
        empty = {**block, "input": {}}
        deltas = [{"type": "input_json_delta",
                   "partial_json": json.dumps(block.get("input", {}), ensure_ascii=False, separators=(",", ":"))}]
    else:  # redacted_thinking, tool results and blocks unknown today arrive whole in their start
        empty, deltas = block, []
    yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": empty}
    for delta in deltas:
        yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
    yield "content_block_stop", {"type": "content_block_stop", "index": index}
