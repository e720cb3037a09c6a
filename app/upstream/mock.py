"""A local upstream that speaks Anthropic's API: valid messages and event streams, no network.

For demos and curl tests on a machine with no internet. Deterministic text;
usage estimated from the request size, so accounting has real numbers.
"""
from __future__ import annotations

import json
import secrets

from ..wire.message_events import message_events
from ..wire.request import UpstreamRequest
from ..wire.sse import frame
from ..wire.usage import estimate_tokens
from .transport import UpstreamResponse

REPLY = ("Hello from octorelay's mock channel. This answer was generated locally; "
         "add a real channel to talk to Claude.")


def _words(text: str) -> list[str]:
    parts = text.split(" ")
    return [p + " " for p in parts[:-1]] + [parts[-1]]


def _reply_for(max_tokens: int) -> tuple[str, str]:
    """The canned text cut to max_tokens (~1 token a word here), and the stop reason."""
    words = _words(REPLY)
    if max_tokens >= len(words):
        return REPLY, "end_turn"
    return "".join(words[:max_tokens]).rstrip(), "max_tokens"


def _json(status: int, payload: dict) -> UpstreamResponse:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return UpstreamResponse(status, {"content-type": "application/json",
                                     "request-id": "req_mock_" + secrets.token_hex(8)}, iter([body]))


class MockTransport:
    def open(self, request: UpstreamRequest) -> UpstreamResponse:
        try:
            body = json.loads(request.body)
        except ValueError:
            return _json(400, {"type": "error", "error": {"type": "invalid_request_error",
                                                          "message": "mock: body is not JSON"}})
        input_tokens = estimate_tokens(len(request.body))
        if request.url.endswith("/count_tokens"):
            return _json(200, {"input_tokens": input_tokens})
        max_tokens = body.get("max_tokens") if isinstance(body.get("max_tokens"), int) else 1024
        text, stop_reason = _reply_for(max_tokens)
        message = {
            "id": "msg_mock_" + secrets.token_hex(12),
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "mock"),
            "content": [{"type": "text", "text": text}] if text else [],
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0, "output_tokens": len(_words(text)) if text else 0},
        }
        if body.get("stream") is True:
            return UpstreamResponse(200, {"content-type": "text/event-stream; charset=utf-8",
                                          "request-id": "req_mock_" + secrets.token_hex(8)},
                                    iter(_events(message)))
        return _json(200, message)

    def close(self) -> None:
        pass


def _events(message: dict) -> list[bytes]:
    """The message as Anthropic streams it: a word per text delta, a ping after the first
    block opens. The closing usage repeats the input and cache counts next to the output, as
    Anthropic's does (clients such as LangChain read input only from there)."""
    events = [frame(name, data) for name, data in
              message_events(message, start_usage={**message["usage"], "output_tokens": 1}, text_pieces=_words)]
    if message["content"]:
        events.insert(2, frame("ping", {"type": "ping"}))
    return events
