"""One exception tree for everything a client can be told, in Anthropic's terms.

Each class knows its HTTP status and Anthropic error type, so services raise
meaning ("not allowed") and the web layer only renders it.
"""
from __future__ import annotations


class RelayError(Exception):
    status = 500
    error_type = "api_error"

    def __init__(self, message: str, *, headers: dict | None = None):
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def body(self, request_id: str) -> dict:
        return error_body(self.error_type, self.message, request_id)


class InvalidRequest(RelayError):
    status = 400
    error_type = "invalid_request_error"


class AuthenticationFailed(RelayError):
    status = 401
    error_type = "authentication_error"


class BillingError(RelayError):
    status = 402
    error_type = "billing_error"


class PermissionDenied(RelayError):
    status = 403
    error_type = "permission_error"


class NotFound(RelayError):
    status = 404
    error_type = "not_found_error"


class RequestTooLarge(RelayError):
    status = 413
    error_type = "request_too_large"


class RequestTimeout(RelayError):
    """The client sent its body too slowly (app/read_deadlines.py); the connection is closed after."""
    status = 408
    error_type = "invalid_request_error"


class UnsupportedEncoding(RelayError):
    """A request body in a `content-encoding` the relay does not decode."""
    status = 415
    error_type = "invalid_request_error"


class RateLimited(RelayError):
    status = 429
    error_type = "rate_limit_error"


class UpstreamError(RelayError):
    status = 502
    error_type = "api_error"


class UpstreamTimeout(RelayError):
    status = 504
    error_type = "timeout_error"


class Overloaded(RelayError):
    status = 503
    error_type = "overloaded_error"


# HTTP status -> Anthropic error type, for errors raised outside our tree
# (werkzeug's 404/405/413, upstream statuses with non-Anthropic bodies).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type_for(status: int) -> str:
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def error_body(error_type: str, message: str, request_id: str) -> dict:
    return {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": request_id,
    }
