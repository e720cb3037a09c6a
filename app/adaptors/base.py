"""The small interface every adaptor implements, and the usage record they all produce."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Mapping, Protocol
from urllib.parse import urlsplit, urlunsplit

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


def join_url(base_url: str, path: str) -> str:
    """`path` appended to the path of `base_url`. The base was checked when written (no query,
    no fragment); whatever a stored one still carries is dropped, so nothing in it can turn
    the relay's path into a query string or a fragment."""
    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + "/" + path.lstrip("/"), "", ""))


def estimate_missing_usage(message: bytes, request: Mapping) -> tuple[bytes, Usage]:
    """A whole answer whose upstream reported no usage at all (an OpenAI-compatible server that
    omits it): the relay's own counts -- input as `estimate_input_tokens` counts the request,
    output ~4 characters a token of the answer's content -- written into the message's `usage`
    as well, so the client sees what is billed. A body that is not a message is left as it is."""
    usage = Usage(input_tokens=estimate_input_tokens(request))
    try:
        payload = json.loads(message)
        content = payload.get("content") if isinstance(payload, dict) else None
        if not isinstance(content, list):
            return message, usage
        chars = 0
        for block in content:
            if isinstance(block, dict):
                chars += sum(len(block[k]) for k in ("text", "thinking") if isinstance(block.get(k), str))
                if "input" in block:
                    chars += len(json.dumps(block["input"], ensure_ascii=False, separators=(",", ":")))
        usage.output_tokens = estimate_tokens(chars)
        counted = payload.get("usage") if isinstance(payload.get("usage"), dict) else {}
        payload["usage"] = {**counted, **{name: getattr(usage, name) for name in TOKEN_FIELDS}}
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode(), usage
    except (ValueError, RecursionError):
        return message, usage


@dataclass(frozen=True)
class Target:
    """Where and as whom to send: what an adaptor needs to know of a channel."""
    base_url: str
    api_key: str | None
    model: str  # the upstream model name, after model_map
    timeout_s: float = 600.0
    options: Mapping = field(default_factory=dict)  # the type's settings (region, project_id)
    credentials: Mapping | None = field(default=None, repr=False)  # the type's secrets, decrypted


class StreamTranslator(Protocol):
    usage: Usage
    usage_final: bool       # the upstream sent its closing usage (message_delta or equivalent)
    output_chars: int       # text forwarded, for estimating output when usage never came
    error_type: str | None  # an error the upstream reported inside the stream

    def feed(self, chunk: bytes) -> bytes:
        """Upstream bytes in, bytes for the client out (possibly empty)."""

    def finish(self) -> bytes:
        """The stream ended cleanly: any last bytes for the client."""


class Adaptor(Protocol):
    def build_request(self, target: Target, body: dict, raw: bytes, headers: Mapping,
                      *, count_tokens: bool = False):
        """-> app.wire.request.UpstreamRequest"""

    def translate_response(self, body: bytes) -> tuple[bytes, Usage]:
        """A 2xx non-streaming body -> (Anthropic message JSON bytes, usage)."""

    def translate_stream(self, request: Mapping | None = None) -> StreamTranslator:
        """A fresh translator for one streamed answer to `request` (the client's Messages body),
        which a translator may read to estimate what its upstream reports late or never."""

    def translate_error(self, status: int, body: bytes) -> tuple[int, bytes]:
        """An upstream error answer -> (status, Anthropic error body) for the client."""
