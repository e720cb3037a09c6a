"""2. Unknown methods and paths: 404 `not_found_error` / 405 `invalid_request_error`, never a
500 (nor a redirect or an HTML page)."""
from __future__ import annotations

import urllib.parse

from hypothesis import given
from hypothesis import strategies as st

from tests.hostile.checks import Problems, check_error_response, examples

CLIENT_ROUTES = ["/v1/messages", "/v1/messages/count_tokens", "/v1/models", "/v1/models/claude-sonnet-4-5"]
ROUTE_METHODS = {"/v1/messages": {"POST"}, "/v1/messages/count_tokens": {"POST"}, "/v1/models": {"GET", "HEAD"},
                 "/v1/models/claude-sonnet-4-5": {"GET", "HEAD"}}


def check_405(resp, method: str) -> None:
    body = check_error_response(resp)
    assert resp.status_code == 405, (resp.status_code, body)
    assert method not in resp.headers.get("allow", ""), resp.headers.get("allow")


def test_client_routes_refuse_other_methods_with_405(relay):
    problems = Problems()
    for route in CLIENT_ROUTES:
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND"):
            if method in ROUTE_METHODS[route]:
                continue
            for keyed, headers in (("without a key", {}), ("with a key", {"x-api-key": relay.key})):
                resp = relay.client.open(route, method=method, headers=headers, data=b"{}")
                problems.run(f"{method} {route} {keyed}: {resp.status_code} {resp.get_data()[:60]!r}",
                             check_405, resp, method)
    problems.report()


RAW_SEGMENTS = st.sampled_from(["", ".", "..", "%00", "%2e%2e", "%2F", "%ZZ", "%", "%FF%FE", "%0d%0aX-Injected:%201",
                                "v1", "messages", "models", "count_tokens", "admin", "keys", "channels", "prices",
                                "healthz", "readyz", "metrics", "usage", "logs", "1", ";x", "?a=1", "#f"])
SEGMENT = st.one_of(RAW_SEGMENTS, st.text(max_size=12).map(lambda s: urllib.parse.quote(s, safe="")),
                    st.integers(1000, 20_000).map(lambda n: "a" * n))
PREFIX = st.sampled_from(["", "v1", "v1/messages", "v1/models", "admin", "admin/keys", "admin/prices", "healthz"])


@examples(100)
@given(prefix=PREFIX, segments=st.lists(SEGMENT, max_size=4), trailing=st.booleans(),
       method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "FOO"]))
def test_random_paths_and_methods(relay, prefix, segments, trailing, method):
    path = "/" + "/".join([prefix, *segments] if prefix else segments) + ("/" if trailing else "")
    if path.startswith("//"):  # the test client would read "//x" as a host; raw sockets test that
        path = "/v1" + path
    resp = relay.client.open(path, method=method, headers={"x-api-key": relay.key})
    where = f"{method} {path[:200]!r}"
    if resp.status_code == 200 and method == "GET":  # it happened to name a real route
        assert resp.headers["request-id"].startswith("req_"), where
        return
    body = check_error_response(resp, context=where)
    assert resp.status_code in (400, 401, 404, 405), (where, resp.status_code, body)
    assert "x-injected" not in {name.lower() for name in resp.headers.keys()}, where


ODD_PATHS = [
    ("POST", "/v1//messages"), ("GET", "/v1//models"), ("GET", "/healthz//"), ("GET", "/admin//keys"),
    ("GET", "/v1/models//claude-sonnet-4-5"), ("POST", "//v1/messages"), ("GET", "/v1/models/%00"),
    ("GET", "/v1/../admin/keys"), ("GET", "/v1/%2e%2e/admin/keys"), ("GET", "/" + "a" * 30_000),
    ("GET", "/v1/models/%F0%9F%98%80"), ("GET", "/v1/models/%FF%FE"), ("DELETE", "/v1/models"),
]
def check_odd_path(resp) -> None:
    body = check_error_response(resp)
    assert resp.status_code in (401, 404, 405), (resp.status_code, body)


def test_odd_paths_are_anthropic_errors(relay):
    problems = Problems()
    for method, path in ODD_PATHS:
        resp = relay.client.open(path, method=method, headers={"x-api-key": relay.key})
        problems.run(f"{method} {path[:60]}: {resp.status_code} {resp.get_data()[:60]!r}", check_odd_path, resp)
    problems.report()
