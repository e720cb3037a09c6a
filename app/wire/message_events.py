"""A complete Messages API answer as the event stream Anthropic would have sent for it.

One place builds that sequence, for everyone who holds a whole message but
owes a client events: the relay when an upstream answers a streamed request
with one JSON message, the OpenAI adaptor when a server ignored `stream: true`,
and the mock channel, which has no stream of its own.
"""
from __future__ import annotations

import json
from typing import Callable, Iterable, Iterator

Event = tuple[str, dict]

_USAGE_AT_START = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "cache_creation",
                   "service_tier")


def message_events(message: dict, *, start_usage: dict | None = None,
                   text_pieces: Callable[[str], Iterable[str]] | None = None) -> Iterator[Event]:
    """message_start, each content block (start, deltas, stop), message_delta, message_stop.

    `message_start` carries `start_usage` when given, else the input and cache
    counts with at most 1 output token (what Anthropic sends before the answer);
    `message_delta` carries the message's own usage. `text_pieces` splits a
    text block into several text deltas (the mock's word-by-word stream);
    without it each text is one delta. Pings are the caller's: where they go differs.
    """
    usage = message.get("usage") or {}
    if start_usage is None:
        start_usage = {k: usage[k] for k in _USAGE_AT_START if k in usage}
        start_usage["output_tokens"] = min(1, usage.get("output_tokens") or 0)
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}
    yield "message_start", {"type": "message_start", "message": start}
    for index, block in enumerate(message.get("content") or []):
        yield from _block_events(index, block, text_pieces)
    yield "message_delta", {"type": "message_delta",
                            "delta": {"stop_reason": message.get("stop_reason"),
                                      "stop_sequence": message.get("stop_sequence")},
                            "usage": usage}
    yield "message_stop", {"type": "message_stop"}


def _block_events(index: int, block: dict, text_pieces: Callable[[str], Iterable[str]] | None
                  ) -> Iterator[Event]:
    kind = block.get("type")
    if kind == "text":
        text = block.get("text", "")
        empty = {**block, "text": ""}
        deltas = [{"type": "text_delta", "text": piece} for piece in (text_pieces(text) if text_pieces else [text])]
        if block.get("citations"):
            empty["citations"] = []
            deltas += [{"type": "citations_delta", "citation": c} for c in block["citations"]]
    elif kind == "thinking":
        empty = {**block, "thinking": "", "signature": ""}
        deltas = [{"type": "thinking_delta", "thinking": block.get("thinking", "")}]
        if isinstance(block.get("signature"), str):
            # Anthropic closes every thinking block with its signature; an empty one (an upstream
            # that has none) is still sent, as OpenAIStream does for a streamed thinking block.
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
