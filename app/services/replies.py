"""What a client is told about an upstream's answer or failure: Anthropic's shapes, headers,
and the relay's own error replies (a refused channel credential, a transport failure, a stop).

Kept apart from relay.py, which decides *when* each is sent; these decide *what* is sent.
"""
from __future__ import annotations

import html
import json
import logging
import re
from dataclasses import dataclass
from typing import Generator, Iterator, Mapping

from ..errors import error_body, error_type_for
from ..upstream.transport import TransportError, UpstreamResponse
from ..wire.message_events import message_events
from ..wire.sse import frame
from .accounting import RequestRecord
from .routing import ChannelConfig

log = logging.getLogger("octorelay.relay")

STOPPING_MESSAGE = "octorelay is restarting; retry the request"


@dataclass
class Reply:
    status: int
    headers: dict
    body: bytes | Iterator[bytes]
    error_type: str | None = None


def anthropic_error(body: bytes) -> bool:
    """Anthropic's error shape: {"type": "error", "error": {"type": str, "message": str}, ...}."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    error = payload.get("error") if isinstance(payload, dict) else None
    return (payload.get("type") == "error" and isinstance(error, dict)
            and isinstance(error.get("type"), str) and isinstance(error.get("message"), str))


TAGS = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.S | re.I)
UPSTREAM_TEXT_MAX = 300


def upstream_text(status: int, body: bytes) -> str:
    """What the upstream said, fit for a message: a JSON error's message if it has one, else its
    text without markup, whitespace folded, cut short."""
    text = body.decode("utf-8", "replace")
    try:
        payload = json.loads(text)
        if isinstance(payload, dict):
            error = payload.get("error")
            found = (error.get("message") if isinstance(error, dict) else error) or payload.get("message") \
                or payload.get("detail")
            if isinstance(found, str):
                text = found
    except ValueError:
        pass
    text = " ".join(html.unescape(TAGS.sub(" ", text)).split())
    if len(text) > UPSTREAM_TEXT_MAX:
        text = text[:UPSTREAM_TEXT_MAX - 1] + "…"
    return f"upstream answered {status}: {text}" if text else f"upstream answered {status}"


def credentials_refused(channel: ChannelConfig, refused: Reply, request_id: str) -> Reply:
    """An upstream 401/403 blames the channel's credentials: the client's key was fine, so it must
    not see an authentication error (it would suspect its own key)."""
    log.warning("upstream refused the channel's credentials", extra={"fields": {
        "channel_id": channel.id, "status": refused.status, "upstream_error_type": refused.error_type}})
    message = (f"the upstream refused the credentials of channel {channel.id} ({refused.status} "
               f"{refused.error_type}); your API key was accepted: an operator must fix the channel")
    body = json.dumps(error_body("api_error", message, request_id)).encode()
    return Reply(502, {"content-type": "application/json"}, body, "api_error")


def answered_json(upstream: UpstreamResponse) -> bool:
    return (header(upstream.headers, "content-type") or "").lower().startswith("application/json")


def as_event_stream(reply: Reply, record: RequestRecord) -> Reply:
    """The message in `reply` as Anthropic's events; a body that is no message is the upstream's
    fault (502), never an empty 200 stream."""
    try:
        if not isinstance(reply.body, bytes):  # a whole answer, never a stream
            raise TypeError("not a whole body")
        message = json.loads(reply.body)
        if not (isinstance(message, dict) and message.get("type") == "message"):
            raise ValueError("not a message")
        events = b"".join(frame(name, payload) for name, payload in message_events(message))
    except (ValueError, TypeError, AttributeError):
        record.status, record.error_type = 502, "api_error"
        body = json.dumps(error_body("api_error", "the upstream answered a streaming request with a body "
                                     "that is neither an event stream nor a message", record.request_id))
        return Reply(502, {"content-type": "application/json"}, body.encode(), "api_error")
    headers = {k: v for k, v in reply.headers.items() if k != "content-type"}
    return Reply(200, {**stream_headers_plain(), **headers}, events)


def header(headers: Mapping, name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def upstream_request_id(upstream: UpstreamResponse) -> str | None:
    """The upstream's own request id: Anthropic's header, or Bedrock's."""
    return header(upstream.headers, "request-id") or header(upstream.headers, "x-amzn-requestid")


def json_headers(upstream: UpstreamResponse) -> dict:
    out = {"content-type": header(upstream.headers, "content-type") or "application/json"}
    upstream_id = upstream_request_id(upstream)
    if upstream_id:
        out["upstream-request-id"] = upstream_id
    return out


def stream_headers_plain() -> dict:
    return {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache",
            "x-accel-buffering": "no"}


def stream_headers(upstream: UpstreamResponse) -> dict:
    out = stream_headers_plain()
    upstream_id = upstream_request_id(upstream)
    if upstream_id:
        out["upstream-request-id"] = upstream_id
    return out


def error_type_of(body: bytes, status: int) -> str:
    try:
        payload = json.loads(body)
        error_type = payload["error"]["type"]
        if isinstance(error_type, str):
            return error_type
    except (ValueError, KeyError, TypeError):
        pass
    return error_type_for(status)


def with_request_id(body: bytes, request_id: str) -> bytes:
    try:
        payload = json.loads(body)
    except ValueError:
        return body
    if isinstance(payload, dict) and "request_id" not in payload:
        payload["request_id"] = request_id
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return body


def stopping_reply(request_id: str) -> Reply:
    body = json.dumps(error_body("overloaded_error", STOPPING_MESSAGE, request_id)).encode()
    return Reply(503, {"content-type": "application/json"}, body, "overloaded_error")


def transport_reply(exc: TransportError, request_id: str) -> Reply:
    status, error_type = (504, "timeout_error") if exc.kind == "timeout" else (502, "api_error")
    body = json.dumps(error_body(error_type, exc.message, request_id)).encode()
    return Reply(status, {"content-type": "application/json"}, body, error_type)


class PrimedStream:
    """A stream body whose generator has already started.

    The first chunk is fetched before the response head goes out, so the
    generator's `finally` (close upstream, settle) is guaranteed to run on
    close() even if the server never iterates the body.
    """

    def __init__(self, gen: Generator[bytes, None, None]):
        self._gen = gen
        self._head = [chunk for chunk in [next(gen, None)] if chunk is not None]

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        if self._head:
            return self._head.pop()
        return next(self._gen)

    def close(self) -> None:
        self._gen.close()
