"""What every response shares: a `request-id`, Anthropic's error shape, one access-log line.

Errors from anywhere (our RelayError tree, werkzeug's 404/405/413, a DB
outage, a bug) leave here as `{"type": "error", ...}` with a request id.
"""
from __future__ import annotations

import json
import logging
import secrets
import string
import time

from flask import Response, current_app, g, request
from peewee import InterfaceError, OperationalError
from playhouse.pool import MaxConnectionsExceeded
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from ..errors import InvalidRequest, RelayError, RequestTimeout, RequestTooLarge, error_body, error_type_for
from ..read_deadlines import SlowClient, body_timed_out
from .encodings import check_encoding, decode_body

access_log = logging.getLogger("octorelay.access")
error_log = logging.getLogger("octorelay.error")

_ALPHABET = string.ascii_letters + string.digits


def new_request_id() -> str:
    """`req_` + 24 base62 characters (~142 random bits), like Anthropic's ids."""
    n = int.from_bytes(secrets.token_bytes(18), "big")
    chars = []
    for _ in range(24):
        n, r = divmod(n, 62)
        chars.append(_ALPHABET[r])
    return "req_" + "".join(chars)


def request_id() -> str:
    rid = g.get("request_id")
    if rid is None:
        rid = g.request_id = new_request_id()
    return rid


def json_response(body, status: int = 200, headers: dict | None = None) -> Response:
    try:
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate echoed back from the input
        text = json.dumps(body, separators=(",", ":")).encode()
    return Response(text, status=status, headers=headers, content_type="application/json")


def read_body() -> bytes:
    """The body, decoded from its content-encoding, refusing more than the limit whether or
    not a Content-Length was sent, and whether or not it came compressed.

    With a Content-Length werkzeug refuses an oversized body before reading it;
    a chunked body has none, and werkzeug would silently cut it at the limit.
    Broken framing (bad chunk sizes, a client gone mid-body) is the client's 400; a body
    arriving too slowly is a 408 (app/read_deadlines.py).
    A gzip or deflate body counts at its decoded size (encodings.py); what the
    relay checks and forwards is the decoded bytes, never the encoded ones.
    """
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    coding = check_encoding(request.headers.get("content-encoding"))  # before reading: a 415
    try:
        if request.content_length is not None:
            data = request.get_data(cache=False)
        else:
            data = request.environ["wsgi.input"].read(limit + 1)
    except Exception as exc:
        if body_timed_out(request.environ):  # whatever werkzeug made of it
            raise RequestTimeout(str(exc) if isinstance(exc, SlowClient) else
                                 "the request body arrived too slowly") from None
        if isinstance(exc, HTTPException):
            raise
        raise InvalidRequest("the request body could not be read (broken framing?)") from None
    if len(data) > limit:
        raise RequestTooLarge(f"request body too large (limit {limit} bytes)")
    return decode_body(data, coding, limit)


def error_response(status: int, error_type: str, message: str, headers: dict | None = None) -> Response:
    return json_response(error_body(error_type, message, request_id()), status, headers)


def _relay_error(exc: RelayError):
    return error_response(exc.status, exc.error_type, exc.message, exc.headers)


def _http_error(exc: HTTPException):
    status = exc.code or 500
    if status == 404:
        message = f"not found: {request.method} {request.path}"
    elif status == 405:
        message = f"method {request.method} is not allowed for {request.path}"
    elif status == 413:
        limit = request.max_content_length
        message = "request body too large" + (f" (limit {limit} bytes)" if limit else "")
    else:
        message = exc.description or exc.name
    allowed = exc.valid_methods if isinstance(exc, MethodNotAllowed) else None
    headers = {"allow": allowed and ", ".join(allowed)} if status == 405 else None
    return error_response(status, error_type_for(status), message, headers)


def _db_error(exc: Exception):
    error_log.error("database unavailable", extra={"fields": {
        "request_id": request_id(), "error": type(exc).__name__}})
    return error_response(503, "overloaded_error", "the database is unavailable; retry shortly")


def _unexpected(exc: Exception):
    if isinstance(exc, HTTPException):
        return _http_error(exc)
    error_log.exception("unhandled error", extra={"fields": {"request_id": request_id()}})
    return error_response(500, "api_error", "internal error")


def _start():
    g.request_started = time.perf_counter()
    request_id()


def _finish(response: Response) -> Response:
    rid = request_id()
    response.headers["request-id"] = rid
    fields = {
        "request_id": rid,
        "method": request.method,
        "route": request.url_rule.rule if request.url_rule else request.path,
        "status": response.status_code,
        "key_id": g.get("key_id"),
    }
    started = g.get("request_started", time.perf_counter())

    def log_line():  # runs when the body is fully sent (streams included)
        fields["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
        access_log.info("request", extra={"fields": fields})

    response.call_on_close(log_line)
    return response


def init_app(app) -> None:
    app.before_request(_start)
    app.after_request(_finish)
    app.register_error_handler(RelayError, _relay_error)
    app.register_error_handler(HTTPException, _http_error)
    for exc in (OperationalError, InterfaceError, MaxConnectionsExceeded):
        app.register_error_handler(exc, _db_error)
    app.register_error_handler(Exception, _unexpected)
