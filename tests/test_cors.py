"""CORS for browser apps: OCTORELAY_CORS_ORIGINS, preflights, and Anthropic's browser-access header.

First the headers through the test client, then a real headless Chromium
(tests/support/browser.py) on a page served from another loopback origin, calling the
relay with `fetch` and with the official TypeScript SDK (`@anthropic-ai/sdk`,
loaded as ES modules from npm's install, `dangerouslyAllowBrowser: true`).
Without the SDK its tests skip, unless OCTORELAY_REQUIRE_CLAUDE=1 (as in CI)
makes that a failure; without the browser, see tests/support/browser.py.
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import pathlib
import threading

import pytest

from app.config import ConfigError, load_settings
from app.models import RequestLog
from tests.support.app import anthropic_channel, assert_error, settled, wait_for_row
from tests.support.bodies import messages_body
from tests.support.upstream import anthropic_message, anthropic_stream_events, json_answer, sse_answer

REPO = pathlib.Path(__file__).resolve().parent.parent
SDK_CANDIDATES = [os.environ.get("OCTORELAY_NODE_MODULES", ""), str(REPO / ".ci/node/node_modules"),
                  str(REPO / "node_modules")]
BROWSER_HEADER = "anthropic-dangerous-direct-browser-access"
BODY = messages_body("claude-sonnet-4-5", 20, "Hello")
ASKED = "anthropic-version,content-type,x-api-key," + BROWSER_HEADER


# a static page server on loopback: the browser app's own origin -----------------------------

IMPORT_MAP = {"imports": {
    "@anthropic-ai/sdk": "/node_modules/@anthropic-ai/sdk/index.mjs",
    "@opentelemetry/api": "/node_modules/@opentelemetry/api/dist/index.mjs",
    # the SDK's webhook helper imports this CommonJS package; nothing here verifies webhooks
    "standardwebhooks": "/stub-standardwebhooks.mjs",
}}


class _Static(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript"}

    def log_message(self, *args):
        pass


class Site:
    """A page server on 127.0.0.1 (another port is another origin); serves the SDK when given."""

    def __init__(self, root: pathlib.Path):
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Static, directory=str(root)))
        self.origin = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def site_root(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_text(
        "<!doctype html><meta charset=utf-8><title>browser app</title>"
        f'<link rel="icon" href="data:,"><script type="importmap">{json.dumps(IMPORT_MAP)}</script>')
    (root / "stub-standardwebhooks.mjs").write_text(
        "export class Webhook { constructor() { throw new Error('webhooks are not used here'); } }\n")
    return root


@pytest.fixture
def sites(site_root):
    """Two page origins: `allowed` (listed in OCTORELAY_CORS_ORIGINS) and `other` (not)."""
    allowed, other = Site(site_root), Site(site_root)
    yield {"allowed": allowed, "other": other}
    allowed.close()
    other.close()


@pytest.fixture
def cors_mode():
    return "exact"  # tests parametrize it: "exact" (the allowed site's origin), "*", or "off"


@pytest.fixture
def env(env, sites, cors_mode):
    setting = {"exact": sites["allowed"].origin, "*": "*", "off": ""}[cors_mode]
    return {**env, "OCTORELAY_CORS_ORIGINS": setting}


@pytest.fixture
def key(admin, upstream):
    anthropic_channel(admin, upstream)
    return admin.create_key(name="browser")["key"]


# headers, through the test client -----------------------------------------------------------

def preflight(client, path, origin, asked=ASKED, method="POST"):
    return client.options(path, headers={"origin": origin, "access-control-request-method": method,
                                         "access-control-request-headers": asked})


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens", "/v1/models",
                                  "/v1/models/claude-sonnet-4-5"])
def test_a_preflight_from_a_listed_origin_is_answered(client, sites, path):
    origin = sites["allowed"].origin
    resp = preflight(client, path, origin, method="GET" if "models" in path else "POST")
    assert resp.status_code == 204, resp.get_data(as_text=True)
    assert resp.headers["access-control-allow-origin"] == origin
    assert resp.headers["access-control-allow-methods"] == "GET, POST"
    assert resp.headers["access-control-allow-headers"] == ASKED
    assert int(resp.headers["access-control-max-age"]) > 0
    assert "access-control-allow-credentials" not in resp.headers  # auth is a header, never a cookie
    assert "origin" in resp.headers["vary"].lower()
    assert resp.headers["request-id"].startswith("req_")


def test_a_preflight_from_another_origin_gets_no_cors_headers(client, sites):
    resp = preflight(client, "/v1/messages", sites["other"].origin)
    assert resp.status_code == 204
    assert not [h for h in resp.headers.keys() if h.lower().startswith("access-control-")]


def test_requests_from_a_listed_origin_need_the_browser_access_header(client, sites, key, upstream):
    origin = sites["allowed"].origin
    headers = {"x-api-key": key, "origin": origin}
    resp = client.post("/v1/messages", json=BODY, headers=headers)
    assert_error(resp, 401, "authentication_error",
                 contains="CORS requests must set 'anthropic-dangerous-direct-browser-access' header")
    assert resp.headers["access-control-allow-origin"] == origin  # the page can read why
    assert not upstream.requests

    resp = client.post("/v1/messages", json=BODY, headers={**headers, BROWSER_HEADER: "true"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.headers["access-control-allow-origin"] == origin
    assert resp.headers["access-control-expose-headers"] == "*"
    assert "access-control-allow-credentials" not in resp.headers
    assert upstream.requests[-1].headers[BROWSER_HEADER] == "true"

    models = client.get("/v1/models", headers={**headers, BROWSER_HEADER: "true"})
    assert models.status_code == 200 and models.headers["access-control-allow-origin"] == origin
    # an error before any route (unknown path) is readable too
    missing = client.get("/v1/nothing-here", headers={**headers, BROWSER_HEADER: "true"})
    assert_error(missing, 404, "not_found_error")
    assert missing.headers["access-control-allow-origin"] == origin


def test_other_origins_and_server_clients_are_untouched(client, sites, key):
    for headers in ({"origin": sites["other"].origin}, {}):  # a page elsewhere; curl and the SDKs
        resp = client.post("/v1/messages", json=BODY, headers={"x-api-key": key, **headers})
        assert resp.status_code == 200, resp.get_data(as_text=True)
        assert "access-control-allow-origin" not in resp.headers


def test_the_admin_api_and_dashboard_never_open_to_browsers(client, sites):
    origin = sites["allowed"].origin
    for path in ("/admin/keys", "/dashboard/", "/healthz"):
        resp = preflight(client, path, origin, method="GET")
        assert resp.status_code in (404, 405), (path, resp.status_code)
        assert "access-control-allow-origin" not in resp.headers
        resp = client.get(path, headers={"origin": origin})
        assert "access-control-allow-origin" not in resp.headers


@pytest.mark.parametrize("cors_mode", ["*"])
def test_any_origin_with_star(client, sites, key, cors_mode):
    resp = preflight(client, "/v1/messages", sites["other"].origin)
    assert resp.status_code == 204 and resp.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in resp.headers
    resp = client.post("/v1/messages", json=BODY,
                       headers={"x-api-key": key, "origin": "https://anywhere.example", BROWSER_HEADER: "true"})
    assert resp.status_code == 200 and resp.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize("cors_mode", ["off"])
def test_off_by_default(client, sites, key, cors_mode):
    assert load_settings({}, read_dotenv=False).cors_origins == ()
    resp = preflight(client, "/v1/messages", sites["allowed"].origin)
    assert_error(resp, 405, "invalid_request_error")
    resp = client.post("/v1/messages", json=BODY, headers={"x-api-key": key, "origin": sites["allowed"].origin})
    assert resp.status_code == 200 and "access-control-allow-origin" not in resp.headers


@pytest.mark.parametrize("value, expected", [
    ("https://app.example.com", ("https://app.example.com",)),
    (" https://App.Example.com:443 , http://127.0.0.1:5173,http://[::1]:3000 ",
     ("https://app.example.com", "http://127.0.0.1:5173", "http://[::1]:3000")),
    ("*", ("*",)),
])
def test_origins_setting(value, expected):
    assert load_settings({"OCTORELAY_CORS_ORIGINS": value}, read_dotenv=False).cors_origins == expected


@pytest.mark.parametrize("value", ["https://app.example.com/", "*, https://app.example.com", "null",
                                   "https://*.example.com", "app.example.com", "file://", "https://a.com/x"])
def test_bad_origins_fail_the_boot(value):
    with pytest.raises(ConfigError, match="OCTORELAY_CORS_ORIGINS"):
        load_settings({"OCTORELAY_CORS_ORIGINS": value}, read_dotenv=False)


# in a real browser ----------------------------------------------------------------------------

@pytest.fixture
def node_modules(site_root):
    """npm's install of @anthropic-ai/sdk, served to the page under /node_modules."""
    for path in SDK_CANDIDATES:
        if path and (pathlib.Path(path) / "@anthropic-ai/sdk/index.mjs").is_file():
            (site_root / "node_modules").symlink_to(path, target_is_directory=True)
            return path
    message = "@anthropic-ai/sdk is not installed (npm install --prefix .ci/node @anthropic-ai/sdk)"
    if os.environ.get("OCTORELAY_REQUIRE_CLAUDE") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def open_page(browser):
    contexts = []

    def open_at(site: Site):
        context = browser.new_context()
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto(site.origin + "/index.html")
        return page
    yield open_at
    for context in contexts:
        context.close()


SDK_CALLS = """async ([base, key, body]) => {
  const { default: Anthropic } = await import('@anthropic-ai/sdk');
  const client = new Anthropic({ apiKey: key, baseURL: base, dangerouslyAllowBrowser: true, maxRetries: 0 });
  const message = await client.messages.create(body);
  const stream = client.messages.stream(body);
  const streamed = await stream.finalMessage();
  const models = [];
  for await (const model of client.models.list({ limit: 1 })) models.push(model.id);
  return { text: message.content[0].text, requestId: message._request_id,
           streamed: streamed.content.map((b) => b.text).join(''), models };
}"""

FETCH = """async ([url, headers, credentials]) => {
  try {
    const resp = await fetch(url, { method: 'POST', headers, credentials,
      body: JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 20,
                             messages: [{ role: 'user', content: 'Hello' }] }) });
    return { status: resp.status, body: await resp.json(), requestId: resp.headers.get('request-id') };
  } catch (error) {
    return { failed: String(error) };
  }
}"""


def answer(request):
    body = request.json()
    if body.get("stream"):
        return sse_answer(anthropic_stream_events(["Hi from ", "a stream"], model=body["model"]))
    return json_answer(anthropic_message("Hi from the relay", model=body["model"]))


def test_the_typescript_sdk_in_a_browser_page_calls_the_relay(app, live, key, upstream, sites, node_modules,
                                                              open_page):
    upstream.set_default(answer)
    page = open_page(sites["allowed"])
    result = page.evaluate(SDK_CALLS, [live, key, BODY])
    assert result["text"] == "Hi from the relay"
    assert result["streamed"] == "Hi from a stream"
    assert result["requestId"].startswith("req_")  # an exposed header, read by the SDK
    assert "claude-sonnet-4-5" in result["models"]
    sent = [r for r in upstream.requests if r.path == "/v1/messages"]
    assert len(sent) == 2 and all(r.headers[BROWSER_HEADER] == "true" for r in sent)
    wait_for_row()
    settled(app)
    assert RequestLog.select().count() == 2


def test_a_browser_fetch_without_the_header_reads_anthropics_401(live, key, upstream, sites, open_page):
    page = open_page(sites["allowed"])
    result = page.evaluate(FETCH, [live + "/v1/messages", {"x-api-key": key, "content-type": "application/json"},
                                   "same-origin"])
    assert result.get("status") == 401, result
    assert result["body"]["error"] == {
        "type": "authentication_error",
        "message": "CORS requests must set 'anthropic-dangerous-direct-browser-access' header"}
    assert result["requestId"].startswith("req_")
    assert not upstream.requests


def test_a_page_from_an_unlisted_origin_is_blocked_by_the_browser(live, key, upstream, sites, open_page):
    page = open_page(sites["other"])
    headers = {"x-api-key": key, "content-type": "application/json", BROWSER_HEADER: "true"}
    result = page.evaluate(FETCH, [live + "/v1/messages", headers, "same-origin"])
    assert "failed" in result and "Failed to fetch" in result["failed"], result
    assert not upstream.requests  # the preflight failed: the POST was never sent


@pytest.mark.parametrize("cors_mode", ["exact", "*"])
def test_a_credentialed_fetch_is_refused_by_the_browser(live, key, upstream, sites, open_page, cors_mode):
    page = open_page(sites["allowed"])
    headers = {"x-api-key": key, "content-type": "application/json", BROWSER_HEADER: "true"}
    ok = page.evaluate(FETCH, [live + "/v1/messages", headers, "omit"])
    assert ok.get("status") == 200, ok
    refused = page.evaluate(FETCH, [live + "/v1/messages", headers, "include"])
    assert "failed" in refused, refused  # no Access-Control-Allow-Credentials, ever
    assert len([r for r in upstream.requests if r.path == "/v1/messages"]) == 1
