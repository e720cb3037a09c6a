"""Claude on AWS Bedrock: Anthropic's body on Bedrock's paths, its event stream back into SSE.

Bedrock runs Anthropic's own Messages API behind `/model/{id}/invoke`: the
body loses `model` and `stream` (the path says both) and gains
`anthropic_version` and the client's `anthropic-beta` values. A stream comes
back in AWS event-stream framing whose `chunk` events carry Anthropic's
events, base64 JSON; they are re-framed as the SSE Anthropic would send.
Bedrock's exceptions (an HTTP error, or an `exception` frame mid-stream) become
Anthropic errors. Signing is the transport's job (app/upstream/aws.py).
"""
from __future__ import annotations

import base64
import json
import re
from typing import Mapping
from urllib.parse import quote

from botocore.eventstream import EventStreamBuffer, ParserError

from ..wire.request import UpstreamAuth, UpstreamRequest
from .anthropic import AnthropicStream
from .base import Target, Usage, join_url
from .openai.errors import clean_message

VERSION = "bedrock-2023-05-31"
REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
# A cross-region inference profile (`us.anthropic.claude-…`): CountTokens wants the bare model id.
PROFILE_PREFIX = re.compile(r"^(?:[a-z]{2,4}|us-gov|global)\.(?=anthropic\.)")
CREDENTIAL_FIELDS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")

# Bedrock exception name (lower-cased, as in `x-amzn-ErrorType` or `:exception-type`) -> (status, type)
EXCEPTIONS = {
    "throttlingexception": (429, "rate_limit_error"),
    "servicequotaexceededexception": (429, "rate_limit_error"),
    "modelnotreadyexception": (429, "rate_limit_error"),
    "validationexception": (400, "invalid_request_error"),
    "resourcenotfoundexception": (404, "not_found_error"),
    "accessdeniedexception": (502, "api_error"),
    "unrecognizedclientexception": (502, "api_error"),
    "invalidsignatureexception": (502, "api_error"),
    "expiredtokenexception": (502, "api_error"),
    "modeltimeoutexception": (504, "timeout_error"),
    "modelerrorexception": (500, "api_error"),
    "modelstreamerrorexception": (500, "api_error"),
    "internalserverexception": (500, "api_error"),
    "serviceunavailableexception": (503, "overloaded_error"),
}
# HTTP status -> (status for the client, type) when the exception name is unknown
STATUSES = {400: (400, "invalid_request_error"), 401: (502, "api_error"), 403: (502, "api_error"),
            404: (404, "not_found_error"), 408: (504, "timeout_error"), 413: (413, "request_too_large"),
            424: (500, "api_error"), 429: (429, "rate_limit_error"), 503: (503, "overloaded_error")}
CREDENTIALS_REFUSED = "the channel's upstream credentials were refused by Bedrock"


def check_credentials(credentials: Mapping) -> None:
    """Raises ValueError naming the field: access keys as AWS hands them out."""
    unknown = sorted(set(credentials) - set(CREDENTIAL_FIELDS))
    if unknown:
        raise ValueError(f"credentials.{unknown[0]}: unknown field (expected {', '.join(CREDENTIAL_FIELDS)})")
    for name in CREDENTIAL_FIELDS[:2]:
        if not isinstance(credentials.get(name), str) or not credentials[name].strip():
            raise ValueError(f"credentials.{name}: required for bedrock channels")
    token = credentials.get("aws_session_token")
    if token is not None and not isinstance(token, str):
        raise ValueError("credentials.aws_session_token: must be a string")


def default_base_url(options: Mapping) -> str | None:
    region = options.get("region")
    return f"https://bedrock-runtime.{region}.amazonaws.com" if region else None


def beta_values(headers: Mapping) -> list[str]:
    values: list[str] = []
    for name, value in headers.items():
        if name.lower() == "anthropic-beta":
            values += [v.strip() for v in str(value).split(",") if v.strip()]
    return values


def invoke_body(body: Mapping, headers: Mapping) -> dict:
    """The client's body without `model`/`stream`, with Bedrock's version and the client's betas."""
    out = {k: v for k, v in body.items() if k not in ("model", "stream")}
    out.setdefault("anthropic_version", VERSION)
    betas = beta_values(headers)
    if betas:
        out.setdefault("anthropic_beta", betas)
    return out


def _dumps(value) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _error(status: int, error_type: str, message: str) -> tuple[int, bytes]:
    return status, _dumps({"type": "error", "error": {"type": error_type, "message": message}})


def _message_of(body: bytes) -> str:
    try:
        payload = json.loads(body) if body else None
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return text if len(text) <= 300 and not text.startswith("<") else ""
    if isinstance(payload, Mapping):
        for key in ("message", "Message"):
            if isinstance(payload.get(key), str):
                return payload[key]
    return ""


def map_exception(name: str | None, status: int, message: str) -> tuple[int, bytes]:
    """A Bedrock exception -> (status, Anthropic error body). A refused credential is the channel's
    fault, never the client's: 502, as for any channel whose upstream refuses its key."""
    key = (name or "").split(":", 1)[0].strip().lower()
    if key and not key.endswith("exception"):
        key += "exception"
    client_status, error_type = EXCEPTIONS.get(key) or STATUSES.get(status) or (
        (status, "invalid_request_error") if 400 <= status < 500 else (500, "api_error"))
    message = clean_message(message)
    if client_status == 502 and error_type == "api_error":
        message = f"{CREDENTIALS_REFUSED}: {message}" if message else CREDENTIALS_REFUSED
    return _error(client_status, error_type, message or f"Bedrock answered HTTP {status}")


class BedrockStream:
    """AWS event-stream frames in, Anthropic SSE out; usage read from the SSE it produces."""

    def __init__(self):
        self._frames = EventStreamBuffer()
        self._sse = AnthropicStream()  # reads usage, output size and errors from what we emit
        self._failed = False

    @property
    def usage(self) -> Usage:
        return self._sse.usage

    @property
    def usage_final(self) -> bool:
        return self._sse.usage_final

    @property
    def output_chars(self) -> int:
        return self._sse.output_chars

    @property
    def error_type(self) -> str | None:
        return self._sse.error_type

    def feed(self, chunk: bytes) -> bytes:
        if self._failed:
            return b""
        self._frames.add_data(chunk)
        out = []
        try:
            for message in self._frames:
                out.append(self._event(message.headers, message.payload))
        except (ParserError, KeyError, ValueError, UnicodeDecodeError):
            # a corrupt frame (bad CRC, bad length, bad header): nothing after it can be trusted
            self._failed = True
            out.append(_sse("error", _dumps({"type": "error", "error": {
                "type": "api_error", "message": "Bedrock sent a corrupt event-stream frame"}})))
        data = b"".join(out)
        return self._sse.feed(data) if data else b""

    def finish(self) -> bytes:
        return self._sse.finish()

    def _event(self, headers: Mapping, payload: bytes) -> bytes:
        kind = headers.get(":message-type")
        if kind == "event" and headers.get(":event-type") == "chunk":
            return _chunk_to_sse(payload)
        if kind in ("exception", "error"):
            name = headers.get(":exception-type") or headers.get(":error-code")
            message = headers.get(":error-message") or _message_of(payload)
            _, body = map_exception(name, 500, message)
            return _sse("error", body)
        return b""  # other events (initial-response, unknown ones) carry nothing for the client


def _chunk_to_sse(payload: bytes) -> bytes:
    """`{"bytes": "<base64 of an Anthropic event>"}` -> `event: TYPE\\ndata: JSON\\n\\n`, with the
    event's own bytes (Bedrock's invocation metrics, which Anthropic never sends, removed)."""
    try:
        data = base64.b64decode(json.loads(payload)["bytes"])
        event = json.loads(data)
    except (ValueError, KeyError, TypeError):
        return b""
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return b""
    if "amazon-bedrock-invocationMetrics" in event or b"\n" in data or b"\r" in data:
        event.pop("amazon-bedrock-invocationMetrics", None)
        data = _dumps(event)
    return _sse(event["type"], data)


def _sse(event: str, data: bytes) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


def _auth(target: Target, headers: dict) -> UpstreamAuth | None:
    """Access keys: a SigV4 signature the transport adds. A Bedrock API key: a bearer token."""
    if target.credentials:
        return UpstreamAuth("aws-sigv4", {**target.credentials, "region": target.options.get("region"),
                                          "service": "bedrock"})
    if target.api_key:
        headers["authorization"] = f"Bearer {target.api_key}"
    return None


class BedrockAdaptor:
    def build_request(self, target: Target, body: dict, raw: bytes, headers: Mapping,
                      *, count_tokens: bool = False) -> UpstreamRequest:
        payload = invoke_body(body, headers)
        out_headers = {"content-type": "application/json", "accept": "application/json",
                       "accept-encoding": "identity"}
        if count_tokens:
            payload.setdefault("max_tokens", 1)  # an InvokeModel body needs it; counting ignores it
            model = PROFILE_PREFIX.sub("", target.model)
            url = join_url(target.base_url, f"/model/{quote(model, safe='')}/count-tokens")
            data = _dumps({"input": {"invokeModel": {"body": base64.b64encode(_dumps(payload)).decode()}}})
        else:
            action = "invoke-with-response-stream" if body.get("stream") is True else "invoke"
            url = join_url(target.base_url, f"/model/{quote(target.model, safe='')}/{action}")
            data = _dumps(payload)
        auth = _auth(target, out_headers)
        return UpstreamRequest(url, out_headers, data, target.timeout_s, auth=auth)

    def translate_response(self, body: bytes) -> tuple[bytes, Usage]:
        """An Anthropic message as is; a CountTokens answer (`inputTokens`) in Anthropic's shape."""
        usage = Usage()
        try:
            payload = json.loads(body)
        except ValueError:
            return body, usage
        if isinstance(payload, dict):
            if isinstance(payload.get("inputTokens"), int) and "type" not in payload:
                return _dumps({"input_tokens": payload["inputTokens"]}), usage
            usage.merge(payload.get("usage"))
        return body, usage

    def translate_stream(self, request: Mapping | None = None) -> BedrockStream:
        return BedrockStream()

    def translate_error(self, status: int, body: bytes) -> tuple[int, bytes]:
        name = None
        try:
            payload = json.loads(body) if body else None
            if isinstance(payload, Mapping):
                name = payload.get("__type") or payload.get("code")
        except ValueError:
            pass
        return map_exception(name if isinstance(name, str) else None, status, _message_of(body))
