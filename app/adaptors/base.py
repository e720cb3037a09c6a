"""The small interface every adaptor implements, and the usage record they all produce."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Mapping, Protocol
from urllib.parse import urlsplit, urlunsplit

from ..wire.usage import (  # noqa: F401 (re-exported: the adaptors' usage record)
    IMAGE_TOKENS,
    MESSAGE_OVERHEAD_TOKENS,
    TOKEN_FIELDS,
    USAGE_FIELDS,
    Usage,
    estimate_input_tokens,
    estimate_tokens,
)


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
    # read by the relay, never set by it (so a translator may answer them with properties)
    @property
    def usage(self) -> Usage: ...

    @property
    def usage_final(self) -> bool:
        """The upstream sent its closing usage (message_delta or equivalent)."""

    @property
    def output_chars(self) -> int:
        """Text forwarded, for estimating output when usage never came."""

    @property
    def error_type(self) -> str | None:
        """An error the upstream reported inside the stream."""

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
