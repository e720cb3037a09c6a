"""Messages API request bodies: the smallest valid one, with what a test needs changed."""
from __future__ import annotations

import json

MODEL = "claude-sonnet-4-6"


def messages_body(model: str = MODEL, max_tokens: int = 100, content: str = "hi", **extra) -> dict:
    """A minimal valid /v1/messages body: one user turn of `content`; `extra` adds fields (stream=True, ...)."""
    return {"model": model, "max_tokens": max_tokens, **extra, "messages": [{"role": "user", "content": content}]}


def messages_bytes(model: str = MODEL, max_tokens: int = 100, content: str = "hi", *, compact: bool = False,
                   **extra) -> bytes:
    """The same body as JSON bytes (compact: no spaces after separators), for raw-socket tests."""
    separators = (",", ":") if compact else None
    return json.dumps(messages_body(model, max_tokens, content, **extra), separators=separators).encode()
