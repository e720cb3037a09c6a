"""The usage record every channel type reports, and the relay's own token estimate.

Shared by adaptors (which read usage out of answers), the mock upstream (which
makes some up) and services (which price and log it), so it sits on neutral ground.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
# what a log row stores: the four token counts, the 1-hour part of the cache writes, web searches
USAGE_FIELDS = (*TOKEN_FIELDS, "cache_creation_1h_input_tokens", "web_search_requests")


def _count(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_1h_input_tokens: int = 0  # part of cache_creation_input_tokens, billed at the 1-hour rate
    web_search_requests: int = 0

    def merge(self, usage: Mapping | None) -> None:
        """Cumulative counts: a later non-null value wins, a missing or null one never erases.

        Reads Anthropic's nested fields too: `cache_creation.ephemeral_1h_input_tokens` and
        `server_tool_use.web_search_requests`.
        """
        if not usage:
            return
        for name in TOKEN_FIELDS:
            value = _count(usage.get(name))
            if value is not None:
                setattr(self, name, value)
        creation = usage.get("cache_creation")
        if isinstance(creation, Mapping):
            value = _count(creation.get("ephemeral_1h_input_tokens"))
            if value is not None:
                self.cache_creation_1h_input_tokens = value
        tools = usage.get("server_tool_use")
        if isinstance(tools, Mapping):
            value = _count(tools.get("web_search_requests"))
            if value is not None:
                self.web_search_requests = value

    @property
    def total(self) -> int:
        """Tokens the upstream processed (what a token quota counts): the 1-hour writes are
        already inside cache_creation_input_tokens, and searches are not tokens."""
        return (self.input_tokens + self.output_tokens + self.cache_creation_input_tokens
                + self.cache_read_input_tokens)

    @property
    def prompt_tokens(self) -> int:
        """What long-context price tiers compare with their threshold."""
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens


def estimate_tokens(chars: int) -> int:
    """~4 characters per token: the usual rule of thumb for English text and code."""
    return math.ceil(chars / 4) if chars > 0 else 0


IMAGE_TOKENS = 1600  # Anthropic's cost of a ~1.15 megapixel image, the largest before resizing
MESSAGE_OVERHEAD_TOKENS = 4


def estimate_input_tokens(body: Mapping) -> int:
    """A local count_tokens: ~4 characters a token over every string the model would read
    (system, messages, tool definitions), a flat 1600 per image, 4 per message.

    A loop over an explicit stack, not recursion: a body nested as deep as the parser allows
    must not raise RecursionError here (a 500 for what is a valid request)."""
    messages = body.get("messages") or []
    total = 0
    pending = [body.get("system"), messages, body.get("tools")]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            total += len(value)
        elif isinstance(value, dict):
            if value.get("type") == "image":
                total += IMAGE_TOKENS * 4
            else:
                pending.extend(v for k, v in value.items() if k not in ("type", "cache_control", "id"))
        elif isinstance(value, list):
            pending.extend(value)
    return estimate_tokens(total) + MESSAGE_OVERHEAD_TOKENS * len(messages if isinstance(messages, list) else ())
