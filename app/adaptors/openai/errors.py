"""An OpenAI-compatible server's error (an HTTP answer or an object inside a stream) -> Anthropic's.

Its message is kept when there is one, with anything shaped like a
credential masked and the length capped; the type follows the HTTP status,
or the words the server used.
"""
from __future__ import annotations

import json
import re
from typing import Any, Mapping

from ...errors import error_type_for

# Upstream HTTP status -> Anthropic error type (translate_error). 502 and 503
# from an OpenAI-compatible server mean "the model behind me is down or busy"
# (OpenRouter, vLLM behind a proxy), which Anthropic calls overloaded_error;
# clients retry both alike.
STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",  # FastAPI/vLLM validation errors; sent to the client as 400
    429: "rate_limit_error",
    500: "api_error",
    502: "overloaded_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
STATUS_REWRITES = {422: 400}
DEFAULT_MESSAGES = {
    400: "the upstream rejected the request",
    401: "the upstream rejected the channel's credentials",
    403: "the upstream refused the channel access",
    404: "the upstream does not know this model or route",
    413: "the request is too large for the upstream",
    422: "the upstream rejected the request",
    429: "the upstream is rate limiting this channel",
    500: "the upstream failed",
    502: "the upstream's model is unavailable",
    503: "the upstream is overloaded",
    504: "the upstream timed out",
}
MAX_ERROR_MESSAGE = 1000

# Anything shaped like a credential in an upstream's error text is masked before
# it reaches the client (some gateways echo the key they were sent).
_SECRET = re.compile(r"\b((?:sk|rk)-[A-Za-z0-9]{0,4})[A-Za-z0-9_\-*.]{8,}|(?i:\b(bearer)\s+)[^\s\"',]+")


def error_text(payload: Any) -> str:
    """The human message in the many error shapes OpenAI-compatible servers use."""
    if not isinstance(payload, Mapping):
        return ""
    error = payload.get("error")
    if isinstance(error, Mapping) and isinstance(error.get("message"), str):
        return error["message"]
    if isinstance(error, str):  # Ollama: {"error": "model 'x' not found"}
        return error
    if isinstance(payload.get("message"), str):
        return payload["message"]
    detail = payload.get("detail")  # FastAPI validation errors (vLLM 422)
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        pieces = []
        for item in detail:
            if isinstance(item, Mapping):
                loc = ".".join(str(x) for x in item.get("loc") or [])
                pieces.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", "")))
        return "; ".join(pieces)
    return ""


def clean_message(message: str) -> str:
    message = _SECRET.sub(lambda m: (m.group(1) + "…") if m.group(1) else f"{m.group(2)} …", message)
    message = message.strip()
    return message if len(message) <= MAX_ERROR_MESSAGE else message[:MAX_ERROR_MESSAGE] + "…"


def error_type_in_stream(error: Any) -> str:
    """An error object sent inside a stream -> Anthropic error type.

    An HTTP status in `code` or `status`, as a number (OpenRouter: 429) or a
    string of digits (LiteLLM and other gateways: "429"), decides; otherwise
    the words in `type`, `code` and `status` ("rate_limit_exceeded",
    "RESOURCE_EXHAUSTED", "server_error") are matched to the nearest Anthropic type.
    """
    if not isinstance(error, Mapping):
        return "api_error"
    for name in ("code", "status"):
        status = _http_status(error.get(name))
        if status is not None:
            return STATUS_TYPES.get(status) or error_type_for(status)
    words = " ".join(str(error.get(k) or "") for k in ("type", "code", "status")).lower()
    for needle, kind in (("rate_limit", "rate_limit_error"), ("quota", "rate_limit_error"),
                         ("resource_exhausted", "rate_limit_error"), ("too_many_requests", "rate_limit_error"),
                         ("overload", "overloaded_error"), ("capacity", "overloaded_error"),
                         ("unavailable", "overloaded_error"),
                         ("timeout", "timeout_error"), ("auth", "authentication_error"),
                         ("api_key", "authentication_error"), ("permission", "permission_error"),
                         ("not_found", "not_found_error"), ("invalid_request", "invalid_request_error"),
                         ("context_length", "invalid_request_error"), ("bad_request", "invalid_request_error")):
        if needle in words:
            return kind
    return "api_error"


def _http_status(value: Any) -> int | None:
    """429 or "429" -> 429; anything that is not an HTTP error status -> None."""
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) == 3:
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool) and 400 <= value < 600:
        return value
    return None


def translate_error(status: int, body: bytes) -> tuple[int, bytes]:
    error_type = STATUS_TYPES.get(status) or error_type_for(status)
    try:
        payload = json.loads(body) if body else None
        message = error_text(payload)
    except (ValueError, RecursionError):
        # Not JSON: a short plain-text answer is worth showing, a proxy's HTML page is not.
        text = body.decode("utf-8", "replace").strip()
        message = text if text and len(text) <= 300 and not text.startswith("<") else ""
    message = clean_message(message) or DEFAULT_MESSAGES.get(status) or f"the upstream answered HTTP {status}"
    out = {"type": "error", "error": {"type": error_type, "message": message}}
    body = json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode()
    return STATUS_REWRITES.get(status, status), body
