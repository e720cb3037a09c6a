"""The dashboard fits the screens people use: 1366 px laptops and 390 px phones (issue 20, item 5).

Real headless Chromium (tests/browser.py) measures the laid-out page: what the operator must see
(the Logs table's cost, latency and TTFT; each key's buttons; a channel test's whole result) lies
inside the window without sideways scrolling, with the widest values the pages can get.
"""
from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import pytest

from app.models import RequestLog
from tests.support.upstream import error_answer

from tests.support.app import anthropic_channel
from tests.support.constants import ADMIN_TOKEN

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or fails, in CI) with the reason
    expect = None

DESKTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}
LONG_NAME = "platform-team-" + "x" * 46  # 60 characters, no space to break at
LONG_WORDS = "the platform team's shared key for the nightly batch jobs ok"  # 60 characters, spaces
_seq = itertools.count(1)

# what scrolls sideways: the page itself, and every element whose content is wider than its box
OVERFLOW = """() => {
  const root = document.scrollingElement;
  const wide = [...document.querySelectorAll(".table-wrap")].filter((w) => w.scrollWidth > w.clientWidth + 1)
    .map((w) => `${w.querySelector("table").id}: ${w.scrollWidth} > ${w.clientWidth}`);
  return {page: root.scrollWidth, viewport: root.clientWidth, wraps: wide};
}"""


@pytest.fixture
def screen(browser, live):
    """Open a tab of a given size, signed in: screen(DESKTOP) -> Tab."""
    from tests.support.browser import Tab

    contexts = []
    tabs = []

    def open_tab(viewport):
        context = browser.new_context(viewport=viewport)
        contexts.append(context)
        tab = Tab(context.new_page(), live)
        tab.sign_in(ADMIN_TOKEN)
        tabs.append(tab)
        return tab

    yield open_tab
    for context in contexts:
        context.close()
    for tab in tabs:
        tab.assert_clean()


def widest_logs(admin, count: int = 40) -> None:
    """Log rows with the widest values each column can show: long key, channel and model names,
    refusals with their error type, six-digit token counts, costs and multi-second latencies."""
    key = admin.create_key(name=LONG_NAME)
    channel = admin.create_channel(name="anthropic-" + "eu-west-" * 4 + "primary")
    start = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(hours=1)
    for i in range(count):
        RequestLog.create(
            request_id=f"req_{next(_seq):024d}", key_id=key["id"], channel_id=channel["id"] if i % 4 else None,
            model="claude-sonnet-4-5-20250929-with-a-very-long-suffix", stream=bool(i % 2),
            status=(200, 402, 529, 200)[i % 4], error_type=(None, "billing_error", "overloaded_error", None)[i % 4],
            input_tokens=123_456 + i, output_tokens=98_765, cache_creation_input_tokens=204_800,
            cache_creation_1h_input_tokens=102_400, cache_read_input_tokens=1_048_576, web_search_requests=12,
            cost_nanos=123_456_789_012, latency_ms=123_456, ttft_ms=98_765, attempts=3,
            client_disconnected=i % 5 == 0, created_at=start + timedelta(seconds=i))


def box(locator) -> dict:
    found = locator.bounding_box()
    assert found is not None, locator
    return found


def assert_in_view(page, locator, what: str) -> None:
    """Wholly inside the window horizontally, and not clipped by a scrolling ancestor."""
    width = page.viewport_size["width"]
    b = box(locator)
    assert b["x"] >= 0 and b["x"] + b["width"] <= width, (what, b, width)
    clipped = locator.evaluate("""(node) => {
      const r = node.getBoundingClientRect();
      for (let p = node.parentElement; p; p = p.parentElement) {
        const style = getComputedStyle(p);
        if (style.overflowX === "visible") continue;
        const c = p.getBoundingClientRect();
        if (r.left < c.left - 1 || r.right > c.right + 1) return `${p.tagName}.${p.className}`;
      }
      return null;
    }""")
    assert clipped is None, (what, "clipped by", clipped)


def test_logs_at_1366_px_show_cost_latency_and_ttft_without_scrolling(screen, admin):
    widest_logs(admin)
    tab = screen(DESKTOP)
    page = tab.goto("/dashboard/logs")
    rows = page.locator("#logs-table tbody tr")
    expect(rows).to_have_count(40)
    expect(rows.first.locator("td.name").first).to_contain_text(LONG_NAME)
    overflow = page.evaluate(OVERFLOW)
    assert overflow["page"] <= overflow["viewport"] and not overflow["wraps"], overflow
    for i in (0, 1, 2):
        for column in ("cost", "latency", "ttft"):
            cell = rows.nth(i).locator(f"td.{column}")
            expect(cell).not_to_have_text("")
            assert_in_view(page, cell, f"row {i} {column}")
    expect(rows.first.locator("td.cost")).to_have_text("$123.46")
    expect(rows.first.locator("td.latency")).to_have_text("123.5 s")
    tab.screenshot("layout-logs-1366")


def test_logs_on_a_390_px_phone_do_not_scroll_sideways(screen, admin):
    widest_logs(admin, count=12)
    tab = screen(PHONE)
    page = tab.goto("/dashboard/logs")
    rows = page.locator("#logs-table tbody tr")
    expect(rows).to_have_count(12)
    overflow = page.evaluate(OVERFLOW)
    assert overflow["page"] <= overflow["viewport"] and not overflow["wraps"], overflow  # not even the table
    first = rows.first
    for column in ("cost", "latency", "ttft"):
        assert_in_view(page, first.locator(f"td.{column}"), column)
    expect(first.locator("td.cost")).to_have_text("$123.46")
    tab.screenshot("layout-logs-390")


@pytest.mark.parametrize("name", [LONG_NAME, LONG_WORDS], ids=["no-spaces", "words"])
def test_a_60_character_key_name_keeps_the_keys_buttons_in_view(screen, admin, name):
    assert len(name) == 60
    key = admin.create_key(name=name, budget_usd=12.5, token_quota=1_000_000, rpm=600, tpm=2_000_000,
                           max_concurrency=20, models=["claude-sonnet-*", "claude-haiku-*"],
                           expires_at="2027-06-30T00:00:00Z")
    tab = screen(DESKTOP)
    page = tab.goto("/dashboard/keys")
    row = page.locator(f'#keys-table tbody tr[data-key-id="{key["id"]}"]')
    expect(row.locator("td.name")).to_have_text(name)
    overflow = page.evaluate(OVERFLOW)
    assert overflow["page"] <= overflow["viewport"] and not overflow["wraps"], overflow
    for verb in ("Edit", "Disable", "Revoke"):
        assert_in_view(page, row.get_by_role("button", name=f"{verb} key {name}"), verb)
    tab.screenshot(f"layout-keys-1366-{'words' if ' ' in name else 'long'}")

    phone = screen(PHONE).goto("/dashboard/keys")
    expect(phone.locator("#keys-table tbody tr")).to_have_count(1)
    overflow = phone.evaluate(OVERFLOW)
    assert overflow["page"] <= overflow["viewport"], overflow  # the table may scroll in its box; the page not


def test_a_channel_tests_whole_result_is_shown(screen, admin, upstream):
    channel = anthropic_channel(admin, upstream, name="loopback", models=["claude-sonnet-4-5"])
    message = ("the upstream refused this request because the organisation's monthly usage limit has been "
               "reached; raise the limit in the console or wait until the first of the month")
    upstream.script(error_answer(429, "rate_limit_error", message))
    tab = screen(DESKTOP)
    page = tab.goto("/dashboard/channels")
    row = page.locator(f'#channels-table tbody tr[data-channel-id="{channel["id"]}"]')
    row.get_by_role("button", name="Test channel loopback").click()
    output = row.locator("output")
    expect(output).to_contain_text(message)
    expect(output).to_contain_text("Failed: status 429")
    assert_in_view(page, output, "test result")
    assert output.evaluate("(node) => node.scrollWidth <= node.clientWidth + 1")
    overflow = page.evaluate(OVERFLOW)
    assert overflow["page"] <= overflow["viewport"] and not overflow["wraps"], overflow
    tab.screenshot("layout-channel-test-1366")


@pytest.mark.parametrize("path", ["/dashboard/", "/dashboard/keys", "/dashboard/channels", "/dashboard/prices"])
def test_no_page_scrolls_sideways_on_a_390_px_phone(screen, admin, path):
    """Tables may scroll inside their own box on a phone; the page itself never does."""
    admin.create_key(name=LONG_NAME, budget_usd=5)
    admin.create_channel(name="anthropic-" + "eu-west-" * 4 + "primary")
    page = screen(PHONE).goto(path)
    overflow = page.evaluate(OVERFLOW)
    assert overflow["page"] <= overflow["viewport"], overflow
