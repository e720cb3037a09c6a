"""Browser apps calling /v1 from the origins the operator lists (OCTORELAY_CORS_ORIGINS).

Off unless configured. Like Anthropic's API, a browser request must say it
means to hold a key in page code: a cross-origin call without
`anthropic-dangerous-direct-browser-access: true` gets 401 (readable by the
page, so the developer sees why). Auth travels in a header, never a cookie,
so no response ever carries `Access-Control-Allow-Credentials`: a
credentialed fetch is refused by the browser itself, and `*` is safe. Only
/v1 opens to browsers; the admin API and the dashboard never do.
"""
from __future__ import annotations

from flask import Response, g, request

from ..errors import AuthenticationFailed

BROWSER_HEADER = "anthropic-dangerous-direct-browser-access"
ALLOW_METHODS = "GET, POST"
MAX_AGE_S = "3600"  # how long a browser may reuse a preflight answer


class CorsPolicy:
    def __init__(self, origins: tuple[str, ...]):
        self.any_origin = origins == ("*",)
        self.origins = frozenset(origins)

    def allows(self, origin: str) -> bool:
        return self.any_origin or origin.lower() in self.origins

    def before(self):
        if not _is_client_route():
            return None
        origin = request.headers.get("origin")
        if origin is None:
            return None
        preflight = request.method == "OPTIONS" and "access-control-request-method" in request.headers
        if not self.allows(origin):  # no CORS headers: the browser keeps the answer from the page
            return Response(status=204) if preflight else None
        g.cors_origin = origin
        if preflight:
            return self._preflight()
        if request.headers.get(BROWSER_HEADER, "").strip().lower() != "true":
            raise AuthenticationFailed(f"CORS requests must set '{BROWSER_HEADER}' header")
        return None

    def _preflight(self) -> Response:
        response = Response(status=204)
        response.headers["access-control-allow-methods"] = ALLOW_METHODS
        asked = request.headers.get("access-control-request-headers")
        if asked:  # the relay forwards headers from its own allow-list, whatever a page sends
            response.headers["access-control-allow-headers"] = asked[:4096]
        response.headers["access-control-max-age"] = MAX_AGE_S
        response.vary.add("access-control-request-headers")
        return response

    def after(self, response: Response) -> Response:
        if not _is_client_route():
            return response
        if not self.any_origin:
            response.vary.add("origin")
        origin = g.get("cors_origin")
        if origin is not None:
            response.headers["access-control-allow-origin"] = "*" if self.any_origin else origin
            response.headers["access-control-expose-headers"] = "*"  # request-id, retry-after, ratelimits
        return response


def _is_client_route() -> bool:
    return request.path == "/v1" or request.path.startswith("/v1/")


def init_app(app, origins: tuple[str, ...]) -> None:
    if not origins:
        return
    policy = CorsPolicy(origins)
    app.before_request(policy.before)
    app.after_request(policy.after)
