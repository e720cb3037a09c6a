"""The dashboard's billing detail in a real browser: prices with a 1-hour write rate, a web-search
rate and a long-context tier; the unpriced-models banner; the new usage columns in logs and overview.

Each test also fails on a console error, an uncaught exception, a CSP violation or a JS dialog
(tests/support/browser.py).
"""
import anthropic
import pytest

from app.models import ModelPrice
from tests.support.app import anthropic_channel, wait_for_row
from tests.support.constants import ADMIN_TOKEN
from tests.support.upstream import anthropic_message, json_answer

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or fails, in CI) with the reason
    expect = None

MODEL = "claude-dash-9"
UNPRICED = "claude-nobody-7"


def open_prices(tab):
    tab.sign_in(ADMIN_TOKEN)
    return tab.goto("/dashboard/prices")


def price_of(admin, model):
    return {p["model"]: p for p in admin.get("/admin/prices").get_json()["data"]}[model]


def fill(scope, values):
    for label, value in values:
        scope.get_by_label(label, exact=True).fill(value)


def save_and_capture(page, button):
    """Click `button` and return the JSON body of the PUT it sent."""
    with page.expect_request(lambda r: r.method == "PUT" and "/admin/prices/" in r.url) as sent:
        button.click()
    return sent.value.post_data_json


def test_a_price_with_a_one_hour_rate_and_a_long_context_tier_round_trips(tab, admin):
    page = open_prices(tab)
    page.get_by_label("Model", exact=True).fill(MODEL)
    fill(page, [("Input", "2"), ("Output", "10"), ("Cache write", "2.5"), ("Cache write (1 hour)", "4.5"),
                ("Cache read", "0.2"), ("Web searches (per 1,000)", "10")])
    expect(page.get_by_label("Cache write (1 hour)", exact=True)).to_have_attribute("placeholder", "2 × input")
    page.get_by_text("Long-context tier (optional)").click()
    fill(page, [("Threshold (prompt tokens)", "200000"), ("Tier input", "4"), ("Tier output", "15"),
                ("Tier cache write", "5"), ("Tier cache read", "0.4")])  # the tier's 1-hour rate left empty
    sent = save_and_capture(page, page.get_by_role("button", name="Save price", exact=True))
    tier = {"threshold_tokens": 200000, "input": 4, "output": 15, "cache_write": 5, "cache_write_1h": None,
            "cache_read": 0.4}
    assert sent == {"input": 2, "output": 10, "cache_write": 2.5, "cache_write_1h": 4.5, "cache_read": 0.2,
                    "web_search_per_1k": 10, "long_context": tier}
    row = page.locator(f'tr[data-model="{MODEL}"]')
    expect(row).to_be_visible()
    expect(page.get_by_label("Model", exact=True)).to_have_value("")  # the form is reset
    assert price_of(admin, MODEL) == {
        "model": MODEL, "input": 2.0, "output": 10.0, "cache_write": 2.5, "cache_write_1h": 4.5,
        "cache_read": 0.2, "web_search_per_1k": 10.0,
        "long_context": {**tier, "cache_write_1h": 8.0}}  # the tier's 1-hour rate: 2 x its input
    assert "cache_write_1h" not in ModelPrice.get(ModelPrice.model == MODEL).long_context

    # the row shows what was saved; a default 1-hour rate shows as empty
    expect(row.get_by_label(f"Cache write (1 hour) price of {MODEL}")).to_have_value("4.5")
    expect(row.get_by_label(f"Web search price of {MODEL}")).to_have_value("10")
    expect(row.locator("summary")).to_have_text("above 200,000")
    row.locator("summary").click()
    expect(row.get_by_label(f"Long context threshold of {MODEL}")).to_have_value("200000")
    expect(row.get_by_label(f"Long context cache write (1 hour) rate of {MODEL}")).to_have_value("")

    # clearing an optional field sends null: the 1-hour rate falls back to 2 x input, no web-search rate
    row.get_by_label(f"Cache write (1 hour) price of {MODEL}").fill("")
    row.get_by_label(f"Web search price of {MODEL}").fill("")
    row.get_by_label(f"Long context output rate of {MODEL}").fill("16")
    sent = save_and_capture(page, row.get_by_role("button", name=f"Save price of {MODEL}"))
    assert sent["cache_write_1h"] is None and sent["web_search_per_1k"] is None
    assert sent["long_context"] == {**tier, "output": 16}
    expect(row.get_by_role("status")).to_have_text("Saved.")
    got = price_of(admin, MODEL)
    assert (got["cache_write_1h"], got["web_search_per_1k"], got["long_context"]["output"]) == (4.0, None, 16.0)
    stored = ModelPrice.get(ModelPrice.model == MODEL)
    assert (stored.cache_write_1h, stored.web_search_per_1k) == (None, None)
    expect(row.get_by_label(f"Cache write (1 hour) price of {MODEL}")).to_have_value("")

    # a tier without its threshold is refused on the page (nothing sent); emptied, the tier is removed
    row.get_by_label(f"Long context threshold of {MODEL}").fill("")
    row.get_by_role("button", name=f"Save price of {MODEL}").click()
    expect(row.locator(".error")).to_have_text("Long context threshold: enter the threshold in prompt tokens.")
    assert price_of(admin, MODEL)["long_context"]["threshold_tokens"] == 200000
    for name in ("input", "output", "cache write", "cache read"):
        row.get_by_label(f"Long context {name} rate of {MODEL}").fill("")
    sent = save_and_capture(page, row.get_by_role("button", name=f"Save price of {MODEL}"))
    assert sent["long_context"] is None
    expect(row.get_by_role("status")).to_have_text("Saved.")
    expect(row.locator("summary")).to_have_text("none")
    assert price_of(admin, MODEL)["long_context"] is None
    tab.screenshot("prices-tier")


def test_saving_a_seeded_row_keeps_its_tier_and_web_search_rate(tab, admin):
    model = "claude-sonnet-4-5"
    before = price_of(admin, model)
    assert before["long_context"] is not None and before["web_search_per_1k"]
    page = open_prices(tab)
    row = page.locator(f'tr[data-model="{model}"]')
    expect(row.locator("summary")).to_have_text(f"above {before['long_context']['threshold_tokens']:,}")
    row.get_by_label(f"Output price of {model}").fill("16")
    row.get_by_role("button", name=f"Save price of {model}").click()
    expect(row.get_by_role("status")).to_have_text("Saved.")
    assert price_of(admin, model) == {**before, "output": 16.0}


def relay_unpriced(admin, live):
    """One request for a model no price matches, through a mock channel, with a key without a budget."""
    admin.create_channel()  # type mock, models claude-*
    key = admin.create_key(name="no-budget")
    sdk = anthropic.Anthropic(base_url=live, api_key=key["key"], max_retries=0, timeout=10)
    sdk.messages.create(model=UNPRICED, max_tokens=20, messages=[{"role": "user", "content": "Hello"}])
    assert wait_for_row().cost_nanos == 0


def test_an_unpriced_model_is_flagged_and_price_it_fills_the_form(tab, admin, live):
    page = open_prices(tab)
    expect(page.locator("#unpriced")).to_be_hidden()
    relay_unpriced(admin, live)

    page = tab.goto("/dashboard/prices")
    banner = page.locator("#unpriced")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Keys with a budget are refused these models (403")
    expect(banner).to_contain_text("keys without one are relayed at cost 0")
    (listed,) = admin.get("/admin/prices").get_json()["unpriced"]
    row = banner.locator("li")
    expect(row).to_have_count(1)
    shown_time = page.evaluate("(iso) => new Date(iso).toLocaleString()", listed["last_seen"])
    expect(row).to_have_text(f"{UNPRICED}1 requestlast seen {shown_time}Price it")
    tab.screenshot("prices-unpriced")

    row.get_by_role("button", name=f"Price it: {UNPRICED}").click()
    expect(page.get_by_label("Model", exact=True)).to_have_value(UNPRICED)
    expect(page.get_by_label("Input", exact=True)).to_be_focused()
    fill(page, [("Input", "1"), ("Output", "5"), ("Cache write", "1.25"), ("Cache read", "0.1")])
    page.get_by_role("button", name="Save price", exact=True).click()
    expect(page.locator(f'#prices-table tr[data-model="{UNPRICED}"]')).to_be_visible()
    expect(banner).to_be_hidden()  # priced now: no longer flagged
    assert admin.get("/admin/prices").get_json()["unpriced"] == []


def test_the_prices_page_fits_a_phone_with_the_banner_and_the_tier_open(tab, admin, live):
    relay_unpriced(admin, live)
    tab.page.set_viewport_size({"width": 375, "height": 800})
    page = open_prices(tab)
    expect(page.locator("#unpriced")).to_be_visible()
    page.get_by_text("Long-context tier (optional)").click()
    expect(page.get_by_label("Tier cache read", exact=True)).to_be_visible()
    page.locator('#prices-table tr[data-model="claude-sonnet-4-5"] summary').click()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    tab.screenshot("phone-prices-unpriced")


@pytest.fixture
def searched(admin, upstream, live):
    """One request whose usage has 1,000 cache writes (600 of them 1-hour) and 3 web searches."""
    anthropic_channel(admin, upstream)
    key = admin.create_key(name="searcher")
    usage = {"cache_creation_input_tokens": 1000, "server_tool_use": {"web_search_requests": 3},
             "cache_creation": {"ephemeral_5m_input_tokens": 400, "ephemeral_1h_input_tokens": 600}}
    upstream.script(json_answer(anthropic_message(usage=usage)))
    sdk = anthropic.Anthropic(base_url=live, api_key=key["key"], max_retries=0, timeout=10)
    sdk.messages.create(model="claude-sonnet-4-6", max_tokens=50, messages=[{"role": "user", "content": "Hi"}])
    row = wait_for_row()
    assert (row.cache_creation_1h_input_tokens, row.web_search_requests) == (600, 3)
    return row


def test_logs_and_overview_show_one_hour_writes_and_web_searches(tab, searched):
    tab.sign_in(ADMIN_TOKEN)
    page = tab.goto("/dashboard/logs")
    headers = page.locator("#logs-table thead th").all_inner_texts()
    headers = [h.strip().lower() for h in headers]
    cells = page.locator("#logs-table tbody tr").first.locator("td")
    # the tokens cell: input and output, then cache writes (the 1-hour part) and web searches; no cache read
    tokens = cells.nth(headers.index("tokens"))
    expect(tokens.locator("span").first).to_have_text("25 in · 15 out")
    expect(tokens.locator(".meter-text")).to_have_text("cache write 1,000 (600 1h) · 3 web searches")
    # Sonnet: (25 x 3 + 400 x 3.75 + 600 x 6 + 15 x 15) / 10^6 + 3 searches x $10 / 1,000
    expect(cells.nth(headers.index("cost"))).to_have_text("$0.0354")
    tab.screenshot("logs-billing")

    page = tab.goto("/dashboard/")
    for period in ("today", "month"):
        expect(page.locator(f"#stat-{period}-cache_creation_1h_input_tokens")).to_have_text("600")
        expect(page.locator(f"#stat-{period}-web_search_requests")).to_have_text("3")
