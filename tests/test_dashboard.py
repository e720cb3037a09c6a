"""The web console at /dashboard: served pages and headers, then real-browser flows against a live server.

Browser tests drive headless Chromium (tests/support/browser.py); each also fails on a
console error, an uncaught exception, a CSP violation or any JS dialog.
"""
import configparser
import fnmatch
import pathlib
import re
import time
from dataclasses import replace
from datetime import datetime, timezone

import anthropic
import pytest

from app.models import RequestLog
from app.web.dashboard import PAGES, SECURITY_HEADERS
from tests.support.app import anthropic_channel, assert_error
from tests.support.bodies import messages_body
from tests.support.constants import ADMIN_TOKEN, SECRETS_USED, UPSTREAM_KEY
from tests.support.upstream import (anthropic_message, anthropic_stream_events, error_answer, json_answer,
                                    sse_answer)

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or fails, in CI) with the reason
    expect = None

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGE_PATHS = ["/dashboard" + path for path, _ in PAGES.values()] + ["/dashboard", "/dashboard/signin"]
STATIC = ["/static/dashboard/api.js", "/static/dashboard/dashboard.css", "/static/dashboard/chart.umd.min.js"]
BODY = messages_body(max_tokens=50, content="Hello")
XSS = "<script>alert(1)</script>"
XSS_IMG = '<img src=x onerror="alert(2)">'


# served pages, without a browser ------------------------------------------------------

def test_pages_and_static_files_carry_strict_security_headers(client):
    for path in PAGE_PATHS + STATIC:
        resp = client.get(path)
        assert resp.status_code == 200, path
        for name, value in SECURITY_HEADERS.items():
            assert resp.headers[name] == value, (path, name)
        assert "Set-Cookie" not in resp.headers
    assert "javascript" in client.get(STATIC[0]).content_type


def test_pages_have_no_inline_script_style_or_handlers(client):
    for path in PAGE_PATHS:
        html = client.get(path).get_data(as_text=True)
        assert html.startswith("<!doctype html>") and "text/html" in client.get(path).content_type
        assert all(" src=" in tag for tag in re.findall(r"<script[^>]*>", html)), path
        assert not re.search(r"\sstyle=|<style|\son[a-z]+=", html), path


def test_other_routes_keep_their_json_errors(client):
    assert_error(client.get("/dashboard/nope"), 404, "not_found_error")
    assert_error(client.get("/static/dashboard/nope.js"), 404, "not_found_error")
    assert "Content-Security-Policy" not in client.get("/healthz").headers


def test_without_an_admin_token_the_page_says_how_to_set_one(app, client, monkeypatch):
    monkeypatch.setitem(app.config, "OCTORELAY", replace(app.config["OCTORELAY"], admin_token=None))
    for path in PAGE_PATHS:
        html = client.get(path).get_data(as_text=True)
        assert "OCTORELAY_ADMIN_TOKEN=" in html and "octorelay up" in html, path
        assert 'type="password"' not in html and ".js" not in html, path
    assert_error(client.get("/admin/keys"), 403, "permission_error")


def test_templates_and_static_files_ship_in_the_package():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    patterns = config["options.package_data"]["app"].split()
    manifest = (ROOT / "MANIFEST.in").read_text()
    files = [p for folder in ("templates", "static") for p in (ROOT / "app" / folder).rglob("*") if p.is_file()]
    assert files
    for path in files:
        relative = path.relative_to(ROOT / "app").as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative
    assert "recursive-include app/templates" in manifest and "recursive-include app/static" in manifest


# in a browser -------------------------------------------------------------------------

def signed_in(tab, path):
    tab.sign_in(ADMIN_TOKEN)
    return tab.goto(path)


def test_sign_in_wrong_token_and_sign_out(tab):
    tab.allowed = ("401",)  # the browser logs each refused call
    page = tab.goto("/dashboard/keys")
    expect(page).to_have_url(re.compile(r"/dashboard/signin\?next=%2Fdashboard%2Fkeys$"))
    page.get_by_label("Admin token").fill("not-the-admin-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#signin-error")).to_contain_text("Wrong admin token")
    assert page.evaluate("sessionStorage.length") == 0
    tab.screenshot("signin-wrong-token")

    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/dashboard/keys")
    expect(page.get_by_role("heading", name="Keys", level=1)).to_be_visible()
    assert page.context.cookies() == []  # the token lives in sessionStorage, never in a cookie

    # a token the server no longer accepts sends the admin back to sign in, saying why
    page.evaluate("sessionStorage.setItem('octorelay.adminToken', 'a-stale-token')")
    page.reload()
    page.wait_for_url("**/dashboard/signin?next=%2Fdashboard%2Fkeys")
    expect(page.locator("#signin-error")).to_contain_text("Wrong admin token")

    tab.sign_in(ADMIN_TOKEN)
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/dashboard/signin**")
    expect(page.locator("#signin-error")).to_have_text("Signed out.")
    assert page.evaluate("sessionStorage.getItem('octorelay.adminToken')") is None


def test_create_a_key_see_it_once_edit_disable_and_revoke(tab, admin, live):
    page = signed_in(tab, "/dashboard/keys")
    page.get_by_label("Name", exact=True).fill("team-a")
    page.get_by_label("Budget (USD)").fill("5")
    page.get_by_label("Models").fill("claude-sonnet-*")
    page.get_by_role("button", name="Create key").click()

    expect(page.locator("#new-key")).to_be_visible()
    secret = page.locator("#new-key-value").input_value()
    SECRETS_USED.add(secret)
    assert secret.startswith("sk-octo-")
    expect(page.locator("#new-key-claude")).to_have_text(
        f"ANTHROPIC_BASE_URL={live} ANTHROPIC_API_KEY={secret} claude")
    expect(page.locator("#new-key-curl")).to_contain_text(f"curl -s {live}/v1/messages -H \"x-api-key: {secret}\"")
    row = page.locator("#keys-table tbody tr", has_text="team-a")
    expect(row.locator(".badge")).to_have_text("enabled")
    expect(row).to_contain_text("$0.00 of $5.00")
    (key,) = admin.get("/admin/keys").get_json()["data"]
    assert (key["name"], key["budget_usd"], key["models"]) == ("team-a", 5.0, ["claude-sonnet-*"])
    assert secret.startswith(key["key_prefix"])
    tab.screenshot("keys-new-key")

    page.reload()
    page.wait_for_load_state("networkidle")
    expect(row).to_be_visible()
    expect(page.locator("#new-key")).to_be_hidden()
    assert secret not in page.content()

    row.get_by_role("button", name="Edit key team-a").click()
    expect(page.get_by_label("Name", exact=True)).to_have_value("team-a")
    page.get_by_label("Requests per minute").fill("60")
    page.get_by_role("button", name="Save changes").click()
    expect(row).to_contain_text("60 rpm")
    assert admin.get(f"/admin/keys/{key['id']}").get_json()["rpm"] == 60

    row.get_by_role("button", name="Disable key team-a").click()
    expect(row.locator(".badge")).to_have_text("disabled")
    row.get_by_role("button", name="Enable key team-a").click()
    expect(row.locator(".badge")).to_have_text("enabled")

    row.get_by_role("button", name="Revoke key team-a").click()  # cancelling (Escape) changes nothing
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Revoke key “team-a”")
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    expect(row.locator(".badge")).to_have_text("enabled")
    row.get_by_role("button", name="Revoke key team-a").click()
    page.get_by_role("dialog").get_by_role("button", name="Revoke").click()
    expect(row.locator(".badge")).to_have_text("revoked")
    assert admin.get(f"/admin/keys/{key['id']}").get_json()["status"] == "revoked"
    tab.screenshot("keys")


def test_api_errors_show_next_to_what_caused_them(tab):
    tab.allowed = ("400",)
    page = signed_in(tab, "/dashboard/keys")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("#key-form-error")).to_contain_text("name:")

    page = tab.goto("/dashboard/channels")
    page.get_by_label("Name", exact=True).fill("no-models")
    page.get_by_label("Type").select_option("openai")
    page.get_by_label("Models").fill("gpt-*")
    page.get_by_role("button", name="Add channel").click()
    expect(page.locator("#channel-form-error")).to_contain_text("base_url: required for openai channels")


def test_add_a_channel_and_test_it(tab, admin, upstream):
    page = signed_in(tab, "/dashboard/channels")
    page.get_by_label("Name", exact=True).fill("loopback")
    page.get_by_label("Type").select_option("anthropic")
    page.get_by_label("Base URL").fill(upstream.url)
    page.get_by_label("Upstream API key").fill(UPSTREAM_KEY)
    page.get_by_label("Models").fill("claude-*")
    page.get_by_role("button", name="Add channel").click()

    row = page.locator("#channels-table tbody tr", has_text="loopback")
    expect(row).to_contain_text("healthy")
    expect(row).to_contain_text("sk-ant-…796")  # the API's mask, nothing more
    expect(page.get_by_label("Upstream API key")).to_have_value("")
    assert UPSTREAM_KEY not in page.content()

    row.get_by_role("button", name="Test channel loopback").click()
    expect(row.locator("output")).to_have_text(re.compile(r"^OK: status 200 in \d+ ms \(claude-sonnet-5-5\)$"))
    assert upstream.requests[-1].headers["x-api-key"] == UPSTREAM_KEY
    assert upstream.requests[-1].json()["max_tokens"] == 1

    upstream.script(error_answer(401, "authentication_error", "invalid x-api-key"))
    row.get_by_role("button", name="Test channel loopback").click()
    expect(row.locator("output")).to_have_text(re.compile(r"^Failed: status 401 in \d+ ms .* invalid x-api-key$"))
    expect(row).to_contain_text("0 consecutive failures")  # a test leaves health alone

    # editing without retyping the key keeps the stored one
    row.get_by_role("button", name="Edit channel loopback").click()
    expect(page.get_by_label("Upstream API key")).to_have_value("")
    expect(page.get_by_label("Base URL")).to_have_value(upstream.url)
    page.get_by_label("Priority").fill("5")
    page.get_by_role("button", name="Save changes").click()
    expect(row).to_contain_text("5 / 1")
    row.get_by_role("button", name="Test channel loopback").click()
    expect(row.locator("output")).to_contain_text("OK: status 200")
    assert upstream.requests[-1].headers["x-api-key"] == UPSTREAM_KEY

    row.get_by_role("button", name="Disable channel loopback").click()
    expect(row.locator("td").nth(7)).to_have_text("disabled")
    page.reload()
    page.wait_for_load_state("networkidle")
    assert UPSTREAM_KEY not in page.content()
    tab.screenshot("channels")
    (channel,) = admin.get("/admin/channels").get_json()["data"]
    assert (channel["priority"], channel["enabled"], channel["consecutive_failures"]) == (5, False, 0)


def wait_for_rows(count: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while RequestLog.select().count() < count:
        assert time.monotonic() < deadline, f"fewer than {count} log rows"
        time.sleep(0.02)


def chart_data(page) -> dict:
    return page.evaluate("""() => {
        const chart = Chart.getChart("usage-chart");
        return {labels: chart.data.labels, datasets: chart.data.datasets.map((d) => ({label: d.label, data: d.data}))};
    }""")


def test_traffic_shows_in_the_overview_chart_and_the_logs(tab, admin, upstream, live):
    anthropic_channel(admin, upstream)
    key = admin.create_key(name="sdk-user")
    sdk = anthropic.Anthropic(base_url=live, api_key=key["key"], max_retries=0, timeout=10)
    sdk.messages.create(**BODY)
    upstream.script(sse_answer(anthropic_stream_events(["Hi", " there"])))
    with sdk.messages.stream(**BODY) as stream:
        stream.get_final_message()
    wait_for_rows(2)

    page = signed_in(tab, "/dashboard/")
    expect(page.locator("#stat-today-requests")).to_have_text("2")
    expect(page.locator("#stat-month-input_tokens")).to_have_text("50")
    today = datetime.now(timezone.utc).date().isoformat()
    data = chart_data(page)
    assert data["labels"][-1] == today[5:] and len(data["labels"]) == 30
    (dataset,) = data["datasets"]
    assert dataset["label"] == "claude-sonnet-4-6"
    assert dataset["data"][-1] > 0 and not any(dataset["data"][:-1])  # today's cost, nothing before
    page.get_by_label("Chart shows").select_option("requests")
    assert chart_data(page)["datasets"][0]["data"][-1] == 2
    expect(page.locator("#top-keys tbody tr").first).to_contain_text("sdk-user")
    tab.screenshot("overview")

    page = tab.goto("/dashboard/logs")
    rows = page.locator("#logs-table tbody tr")
    expect(rows).to_have_count(2)
    for i in range(2):
        expect(rows.nth(i)).to_contain_text("sdk-user")
        expect(rows.nth(i).locator("td").nth(2)).to_have_text("up-0")  # the channel's name
        expect(rows.nth(i).locator("td").nth(3)).to_have_text("claude-sonnet-4-6")
        expect(rows.nth(i).locator("td").nth(4)).to_have_text("200")
        expect(rows.nth(i).locator("td").nth(5)).to_have_text(re.compile(r"^25 in · \d+ out$"))
    page.get_by_label("Status").select_option("5")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("No request on this page matches")
    page.get_by_label("Status").select_option("2")
    page.get_by_label("Key").select_option(label=f"sdk-user ({key['key_prefix']}…)")
    page.wait_for_load_state("networkidle")
    expect(rows).to_have_count(2)
    expect(page.locator("#logs-count")).to_have_text("(2 of 2 on this page)")
    tab.screenshot("logs")


def test_overview_shows_the_cache_read_share_per_channel(tab, admin, upstream, live):
    """Two turns of one conversation on a channel that caches (the second reads what the first
    wrote), one turn on a channel that only writes; shares from GET /admin/usage?group_by=channel."""
    anthropic_channel(admin, upstream, name="warm", models=["claude-sonnet-*"])
    anthropic_channel(admin, upstream, name="cold", models=["claude-haiku-*"])
    key = admin.create_key(name="cc")
    sdk = anthropic.Anthropic(base_url=live, api_key=key["key"], max_retries=0, timeout=10)
    for usage in ({"input_tokens": 10, "cache_creation_input_tokens": 990, "cache_read_input_tokens": 0,
                   "output_tokens": 5},
                  {"input_tokens": 10, "cache_creation_input_tokens": 200, "cache_read_input_tokens": 990,
                   "output_tokens": 5}):
        upstream.script(json_answer(anthropic_message(model="claude-sonnet-4-6", usage=usage)))
        sdk.messages.create(**BODY, extra_headers={"x-claude-code-session-id": "s1"})
    upstream.script(json_answer(anthropic_message(model="claude-haiku-4-5", usage={
        "input_tokens": 4, "cache_creation_input_tokens": 96, "cache_read_input_tokens": 0, "output_tokens": 5})))
    sdk.messages.create(**{**BODY, "model": "claude-haiku-4-5"})
    wait_for_rows(3)
    assert [row.affinity for row in RequestLog.select().order_by(RequestLog.id)] == ["new", "kept", "new"]

    page = signed_in(tab, "/dashboard/")
    rows = page.locator("#cache-by-channel tbody tr")
    expect(rows).to_have_count(2)
    by_name = {rows.nth(i).locator("td").first.inner_text(): rows.nth(i) for i in range(2)}
    cells = by_name["warm"].locator("td")
    expect(cells.nth(1)).to_have_text("2")
    expect(cells.nth(2)).to_have_text("990")
    expect(cells.nth(3)).to_have_text("1,190")
    expect(cells.nth(4)).to_have_text("20")
    expect(cells.nth(5)).to_have_text("45.0 %")  # 990 / (20 + 1,190 + 990)
    expect(by_name["cold"].locator("td").nth(5)).to_have_text("0.0 %")
    tab.screenshot("overview-cache")


def test_names_render_as_text_never_as_markup(tab, admin, upstream, live):
    key = admin.create_key(name=XSS)
    admin.create_key(name=XSS_IMG)
    anthropic_channel(admin, upstream, name=XSS_IMG)
    anthropic.Anthropic(base_url=live, api_key=key["key"], max_retries=0, timeout=10).messages.create(**BODY)
    wait_for_rows(1)
    tab.sign_in(ADMIN_TOKEN)
    for path, table in [("/dashboard/keys", "#keys-table"), ("/dashboard/", "#top-keys"),
                        ("/dashboard/logs", "#logs-table"), ("/dashboard/channels", "#channels-table")]:
        page = tab.goto(path)
        name = XSS_IMG if table == "#channels-table" else XSS
        expect(page.locator(f"{table} td", has_text=name).first).to_be_visible()
        # The empty-state row is marked by its class; matching its "No ..." text would also match a
        # request id that happens to contain "No".
        expect(page.locator(f"{table} tbody tr.empty")).to_have_count(0)
        assert page.locator("main img").count() == 0, path
        assert not page.evaluate("[...document.scripts].some((s) => !s.src)"), path
    assert tab.dialogs == []


def test_prices_are_editable(tab, admin):
    tab.allowed = ("400",)
    page = signed_in(tab, "/dashboard/prices")
    row = page.locator('tr[data-model="claude-haiku-4-5"]')
    row.get_by_label("Output price of claude-haiku-4-5").fill("6")
    row.get_by_role("button", name="Save price of claude-haiku-4-5").click()
    expect(row).to_contain_text("Saved.")
    prices = {p["model"]: p for p in admin.get("/admin/prices").get_json()["data"]}
    assert prices["claude-haiku-4-5"]["output"] == 6.0

    row.get_by_label("Input price of claude-haiku-4-5").fill("-1")
    row.get_by_role("button", name="Save price of claude-haiku-4-5").click()
    expect(row.locator(".error")).to_contain_text("input:")

    page.get_by_label("Model", exact=True).fill("my-model")
    for label, value in [("Input", "1"), ("Output", "5"), ("Cache write", "1.25"), ("Cache read", "0.1")]:
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_role("button", name="Save price", exact=True).click()
    expect(page.locator('tr[data-model="my-model"]')).to_be_visible()
    prices = {p["model"]: p for p in admin.get("/admin/prices").get_json()["data"]}
    assert prices["my-model"] == {"model": "my-model", "input": 1.0, "output": 5.0, "cache_write": 1.25,
                                  "cache_write_1h": 2.0, "cache_read": 0.1, "web_search_per_1k": None,
                                  "long_context": None}
    tab.screenshot("prices")


@pytest.mark.parametrize("path", ["/dashboard/", "/dashboard/keys", "/dashboard/channels", "/dashboard/logs",
                                  "/dashboard/prices", "/dashboard/signin"])
def test_pages_fit_a_phone_screen(tab, path):
    tab.page.set_viewport_size({"width": 375, "height": 800})
    tab.sign_in(ADMIN_TOKEN)
    page = tab.goto(path)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375, path
    tab.screenshot("phone-" + (path.strip("/").split("/")[-1] if path != "/dashboard/" else "overview"))
