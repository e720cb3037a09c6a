"""Claude on Google Vertex AI: Anthropic's body and SSE, on Vertex's rawPredict paths.

Vertex serves Anthropic's Messages API as a publisher model: the model goes
in the path (`…/models/{model}:rawPredict`, `:streamRawPredict` for a
stream), the body loses `model` and gains `anthropic_version`; answers and
streams are Anthropic's own, so they pass through. Google's own errors
(quota, auth, a wrong project) come in Google's shape and are rewritten.
The OAuth token is the transport's job (app/upstream/google.py).
"""
from __future__ import annotations

import json
import re
from typing import Mapping
from urllib.parse import quote

from ..errors import error_type_for
from ..wire.request import UpstreamAuth, UpstreamRequest
from .anthropic import AnthropicAdaptor, upstream_headers
from .base import Target, join_url
from .openai.errors import clean_message

VERSION = "vertex-2023-10-16"
REGION = re.compile(r"^(global|[a-z]+(-[a-z]+)*\d+|us|eu)$")
PROJECT = re.compile(r"^[a-z][a-z0-9-]{4,61}[a-z0-9]$|^\d{1,20}$")
REQUIRED_CREDENTIALS = ("type", "client_email", "private_key")
CREDENTIALS_REFUSED = "the channel's upstream credentials were refused by Vertex AI"

# google.rpc status names -> Anthropic types, for Google-shaped errors
GOOGLE_STATUSES = {
    "INVALID_ARGUMENT": "invalid_request_error", "FAILED_PRECONDITION": "invalid_request_error",
    "OUT_OF_RANGE": "invalid_request_error", "NOT_FOUND": "not_found_error",
    "RESOURCE_EXHAUSTED": "rate_limit_error", "UNAVAILABLE": "overloaded_error",
    "DEADLINE_EXCEEDED": "timeout_error", "INTERNAL": "api_error",
}


def check_credentials(credentials: Mapping) -> None:
    """Raises ValueError naming the field: a service-account key file as Google hands it out."""
    for name in REQUIRED_CREDENTIALS:
        if not isinstance(credentials.get(name), str) or not credentials[name].strip():
            raise ValueError(f"credentials.{name}: required (a service-account JSON key)")
    if credentials["type"] != "service_account":
        raise ValueError("credentials.type: must be \"service_account\"")
    if "PRIVATE KEY" not in credentials["private_key"]:
        raise ValueError("credentials.private_key: not a PEM private key")
    token_uri = credentials.get("token_uri")
    if token_uri is not None and (not isinstance(token_uri, str) or not token_uri.startswith(("https://", "http://"))):
        raise ValueError("credentials.token_uri: must be an http(s) URL")


def default_base_url(options: Mapping) -> str | None:
    region = options.get("region")
    if not region:
        return None
    return "https://aiplatform.googleapis.com" if region == "global" else f"https://{region}-aiplatform.googleapis.com"


def _dumps(value) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


class VertexAdaptor(AnthropicAdaptor):
    """Anthropic's own answers and events (as on Anthropic's API); only the request and errors differ."""

    def build_request(self, target: Target, body: dict, raw: bytes, headers: Mapping,
                      *, count_tokens: bool = False) -> UpstreamRequest:
        project, region = target.options.get("project_id"), target.options.get("region")
        models = join_url(target.base_url, f"/v1/projects/{quote(str(project), safe='')}"
                          f"/locations/{quote(str(region), safe='')}/publishers/anthropic/models")
        out_headers = upstream_headers(headers, None)  # anthropic-beta and friends; no key
        out_headers.pop("anthropic-version", None)  # Vertex takes the version in the body
        if count_tokens:
            url = f"{models}/count-tokens:rawPredict"
            payload = {**body, "model": target.model}  # this endpoint names the model in the body
        else:
            stream = body.get("stream") is True
            url = f"{models}/{quote(target.model, safe='@')}:{'streamRawPredict' if stream else 'rawPredict'}"
            payload = {k: v for k, v in body.items() if k != "model"}
            if stream:
                out_headers["accept"] = "text/event-stream"
        payload.setdefault("anthropic_version", VERSION)
        auth = UpstreamAuth("google-service-account", target.credentials or {})  # read, never changed
        return UpstreamRequest(url, out_headers, _dumps(payload), target.timeout_s, auth=auth)

    def translate_error(self, status: int, body: bytes) -> tuple[int, bytes]:
        """Anthropic's own errors pass; Google's (`{"error": {code, message, status}}`, sometimes in
        a list) are rewritten. A refused credential is the channel's fault: 502."""
        try:
            payload = json.loads(body) if body else None
        except ValueError:
            payload = None
        if isinstance(payload, list) and payload:
            payload = payload[0]
        if status in (401, 403):
            message = _google_message(payload) or ""
            message = f"{CREDENTIALS_REFUSED}: {clean_message(message)}" if message else CREDENTIALS_REFUSED
            return 502, _dumps({"type": "error", "error": {"type": "api_error", "message": message}})
        if isinstance(payload, dict) and payload.get("type") == "error":
            return status, body
        error = payload.get("error") if isinstance(payload, dict) else None
        google_status = error.get("status") if isinstance(error, dict) else None
        error_type = (isinstance(google_status, str) and GOOGLE_STATUSES.get(google_status)) or error_type_for(status)
        message = clean_message(_google_message(payload) or "") or f"Vertex AI answered HTTP {status}"
        return status, _dumps({"type": "error", "error": {"type": error_type, "message": message}})


def _google_message(payload) -> str | None:
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(error, str):
            return payload.get("error_description") or error
    return None
