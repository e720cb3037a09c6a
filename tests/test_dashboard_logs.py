"""What the dashboard shows an operator (issue 20, item 5): logs by name, a date range and pages
(GET /admin/logs since/until/before_id), keys over budget, deleting a price, and a 402 that names a
small budget exactly. The admin API and CLI first, then the same in headless Chromium."""
from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import pytest

from app.models import RequestLog
from app.services.keys import format_usd
from tests.support.upstream import anthropic_message, json_answer

from tests.support.app import anthropic_channel, assert_error
from tests.support.cli_harness import release, runner  # noqa: F401  (runner is a fixture)
from tests.support.constants import ADMIN_TOKEN

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or fails, in CI) with the reason
    expect = None

_seq = itertools.count(1)
T0 = datetime(2026, 3, 1, 12, 0, 0)


def log(**fields) -> RequestLog:
    fields.setdefault("request_id", f"req_logs{next(_seq):020d}")
    fields.setdefault("key_id", 1)
    fields.setdefault("channel_id", 1)
    fields.setdefault("model", "claude-sonnet-4-6")
    fields.setdefault("status", 200)
    return RequestLog.create(**fields)


def ids(page) -> list[str]:
    return [row["request_id"] for row in page["data"]]


def get_logs(admin, **params):
    resp = admin.get("/admin/logs", query_string=params)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


# the admin API --------------------------------------------------------------------------

def test_keyset_pages_walk_the_log_once_each_even_with_ties_and_new_rows(admin):
    # 11 rows, four of them sharing one instant (ties are ordered by id, newest first)
    for i in range(7):
        log(request_id=f"req_{i:02d}", created_at=T0 + timedelta(minutes=i))
    for i in range(7, 11):
        log(request_id=f"req_{i:02d}", created_at=T0 + timedelta(minutes=3))
    everything = ids(get_logs(admin, limit=1000))
    assert everything == ["req_06", "req_05", "req_04", "req_10", "req_09", "req_08", "req_07", "req_03",
                          "req_02", "req_01", "req_00"]

    pages, before = [], None
    while True:
        page = get_logs(admin, limit=3, **({"before_id": before} if before else {}))
        pages.append(ids(page))
        assert page["first_id"] == page["data"][0]["request_id"] and page["last_id"] == page["data"][-1]["request_id"]
        if len(pages) == 2:
            log(request_id="req_new", created_at=T0 + timedelta(hours=1))  # arrives mid-walk: no shift
        if not page["has_more"]:
            break
        before = page["last_id"]
    assert pages == [everything[0:3], everything[3:6], everything[6:9], everything[9:11]]
    assert ids(get_logs(admin, limit=1))[0] == "req_new"

    # an exact page count ends with has_more false, not an empty page after it
    last = get_logs(admin, limit=2, before_id="req_03")
    assert ids(last) == ["req_02", "req_01"] and last["has_more"] is True
    assert get_logs(admin, limit=2, before_id="req_01") == {
        "data": get_logs(admin, limit=1, before_id="req_01")["data"], "has_more": False,
        "first_id": "req_00", "last_id": "req_00"}
    assert get_logs(admin, before_id="req_00") == {"data": [], "has_more": False, "first_id": None, "last_id": None}


def test_a_date_range_bounds_the_log_and_combines_with_key_and_pages(admin):
    for i in range(6):
        log(request_id=f"req_{i}", key_id=1 + i % 2, created_at=T0 + timedelta(days=i))
    # since inclusive, until exclusive; a bare date is midnight UTC
    assert ids(get_logs(admin, since="2026-03-02T12:00:00Z", until="2026-03-05T12:00:00Z")) == ["req_3", "req_2", "req_1"]
    assert ids(get_logs(admin, since="2026-03-04")) == ["req_5", "req_4", "req_3"]
    assert ids(get_logs(admin, until="2026-03-02")) == ["req_0"]
    assert ids(get_logs(admin, key_id=2, since="2026-03-02")) == ["req_5", "req_3", "req_1"]
    page = get_logs(admin, key_id=2, since="2026-03-02", limit=2)
    assert ids(page) == ["req_5", "req_3"] and page["has_more"]
    assert ids(get_logs(admin, key_id=2, since="2026-03-02", limit=2, before_id=page["last_id"])) == ["req_1"]
    # with an offset: 13:00+01:00 is noon UTC
    assert ids(get_logs(admin, since="2026-03-06T13:00:00+01:00")) == ["req_5"]


@pytest.mark.parametrize("params, message", [
    ({"before_id": "req_nope"}, "before_id: no request"),
    ({"since": "2026-03-02", "until": "2026-03-01"}, "until"),
    ({"since": "yesterday"}, "since"),
    ({"after_id": "req_1"}, "after_id"),
])
def test_bad_log_parameters_are_400(admin, params, message):
    log(request_id="req_1", created_at=T0)
    assert_error(admin.get("/admin/logs", query_string=params), 400, "invalid_request_error", contains=message)


def test_cli_logs_take_the_same_range_and_cursor(runner):  # noqa: F811
    cli = runner
    cli.ok("db", "upgrade")
    for i in range(4):
        log(request_id=f"req_{i}", created_at=T0 + timedelta(days=i))
    release()
    assert ids(cli.json("logs", "--since", "2026-03-02", "--limit", "1")) == ["req_3"]
    assert ids(cli.json("logs", "--since", "2026-03-02", "--before-id", "req_3")) == ["req_2", "req_1"]
    assert ids(cli.json("logs", "--until", "2026-03-02")) == ["req_0"]
    assert "before_id: no request" in cli.fail("logs", "--before-id", "req_9")


def test_prices_are_deleted_through_the_api_and_the_cli(admin, client, upstream, runner):  # noqa: F811
    rates = {"input": 1, "output": 5, "cache_write": 1.25, "cache_read": 0.1}
    assert admin.put("/admin/prices/my-model", json=rates).status_code == 201
    assert admin.put("/admin/prices/my-*", json={**rates, "input": 2}).status_code == 201
    listed = lambda: {p["model"] for p in admin.get("/admin/prices").get_json()["data"]}  # noqa: E731

    # a budgeted key bills my-model at its own price, then (deleted) at the glob's, in force at once
    upstream.set_default(json_answer(anthropic_message(model="my-model", usage={"input_tokens": 1_000_000,
                                                                                 "output_tokens": 0})))
    anthropic_channel(admin, upstream, models=["my-*"])
    key = admin.create_key(name="billed", budget_usd=100)
    send = lambda: client.post("/v1/messages", headers={"x-api-key": key["key"]}, json={  # noqa: E731
        "model": "my-model", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]})
    assert send().status_code == 200
    assert admin.get(f"/admin/keys/{key['id']}").get_json()["used_usd"] == pytest.approx(1.0)

    resp = admin.delete("/admin/prices/my-model")
    assert resp.status_code == 204 and resp.get_data() == b""
    assert "my-model" not in listed() and "my-*" in listed()
    assert send().status_code == 200
    assert admin.get(f"/admin/keys/{key['id']}").get_json()["used_usd"] == pytest.approx(3.0)
    assert_error(admin.delete("/admin/prices/my-model"), 404, "not_found_error", contains="my-model")

    cli = runner
    assert "removed the price of my-*" in cli.ok("prices", "remove", "my-*")
    assert "my-*" not in listed()
    assert "no price for 'my-*'" in cli.fail("prices", "remove", "my-*")
    assert_error(client.delete("/admin/prices/claude-sonnet-4-6"), 401, "authentication_error")
    assert "claude-sonnet-4-6" in listed()


@pytest.mark.parametrize("nanos, text", [
    (500_000, "$0.0005"), (0, "$0.00"), (5_000_000_000, "$5.00"), (12_340_000_000, "$12.34"),
    (1, "$0.000000001"), (1_234_567_891, "$1.234567891"), (10_000, "$0.00001"), (150_000_000_000, "$150.00"),
])
def test_money_in_messages_keeps_every_digit_the_amount_has(nanos, text):
    assert format_usd(nanos) == text


def test_a_budget_of_half_a_tenth_of_a_cent_reads_so_in_the_402(client, admin, upstream):
    upstream.set_default(json_answer(anthropic_message(usage={"input_tokens": 1000, "output_tokens": 100})))
    anthropic_channel(admin, upstream)
    key = admin.create_key(name="tiny", budget_usd=0.0005)
    body = {"model": "claude-sonnet-4-6", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}
    assert client.post("/v1/messages", json=body, headers={"x-api-key": key["key"]}).status_code == 200
    refused = client.post("/v1/messages", json=body, headers={"x-api-key": key["key"]})
    message = assert_error(refused, 402, "billing_error")["error"]["message"]
    assert "this API key has used its budget of $0.0005" in message and "$0.00 " not in message + " "


# in a browser ---------------------------------------------------------------------------

def signed_in(tab, path):
    tab.sign_in(ADMIN_TOKEN)
    return tab.goto(path)


def test_logs_name_keys_and_channels_and_page_through_a_date_range(tab, admin):
    key = admin.create_key(name="team-logs")
    kept = admin.create_channel(name="primary-eu")
    gone = admin.create_channel(name="short-lived")
    admin.delete(f"/admin/channels/{gone['id']}")
    now = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
    # 120 rows a minute apart over the last two hours, then 5 from three days ago
    for i in range(120):
        log(request_id=f"req_recent{i:04d}", key_id=key["id"], channel_id=(kept["id"], gone["id"], None)[i % 3],
            status=(200, 200, 429)[i % 3], error_type=(None, None, "rate_limit_error")[i % 3],
            created_at=now - timedelta(minutes=120 - i))
    for i in range(5):
        log(request_id=f"req_old{i}", key_id=key["id"], channel_id=kept["id"], created_at=now - timedelta(days=3, minutes=i))

    page = signed_in(tab, "/dashboard/logs")
    rows = page.locator("#logs-table tbody tr")
    page.get_by_label("Requests per page").select_option("50")
    page.wait_for_load_state("networkidle")
    expect(rows).to_have_count(50)
    newest = rows.first
    expect(newest).to_have_attribute("data-request-id", "req_recent0119")
    # 119 % 3 == 2: a refusal, no channel; 118: the deleted channel; 117: the kept one, by name
    expect(newest.locator("td").nth(2)).to_have_text("—")
    expect(newest.locator("td").nth(4)).to_contain_text("429")
    expect(newest.locator("td").nth(4)).to_contain_text("rate_limit_error")
    expect(rows.nth(1).locator("td").nth(2)).to_have_text(f"#{gone['id']} (deleted)")
    expect(rows.nth(2).locator("td").nth(2)).to_have_text("primary-eu")
    expect(newest.locator("td").nth(1)).to_have_text(f"team-logs ({key['key_prefix']}…)")
    assert str(kept["id"]) not in rows.nth(2).locator("td").nth(2).inner_text()

    # pages: 50 + 50 + 25 (20 recent, 5 old); Older and Newer walk them without overlap
    seen = []
    expect(page.locator("#logs-page")).to_have_text("Page 1")
    expect(page.get_by_role("button", name="← Newer")).to_be_disabled()
    for number, size in ((1, 50), (2, 50), (3, 25)):
        expect(page.locator("#logs-page")).to_have_text(f"Page {number}")
        expect(rows).to_have_count(size)
        seen += [rows.nth(i).get_attribute("data-request-id") for i in range(size)]
        if number < 3:
            page.get_by_role("button", name="Older →").click()
    expect(page.get_by_role("button", name="Older →")).to_be_disabled()
    assert seen == [f"req_recent{i:04d}" for i in range(119, -1, -1)] + [f"req_old{i}" for i in range(5)]
    page.get_by_role("button", name="← Newer").click()
    expect(page.locator("#logs-page")).to_have_text("Page 2")
    expect(rows.first).to_have_attribute("data-request-id", "req_recent0069")

    # a date range (the browser's local time): the old rows only, and then just the last hour
    local = lambda dt: page.evaluate(  # noqa: E731  (UTC -> the datetime-local value the browser shows)
        """(iso) => { const d = new Date(iso); const p = (n) => String(n).padStart(2, "0");
             return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`; }""",
        dt.isoformat() + "Z")
    page.get_by_label("Until (your local time)").fill(local(now - timedelta(days=1)))
    page.get_by_label("Until (your local time)").dispatch_event("change")
    expect(rows).to_have_count(5)
    expect(page.locator("#logs-page")).to_have_text("Page 1")
    expect(rows.first).to_have_attribute("data-request-id", "req_old0")
    page.get_by_label("Until (your local time)").fill("")
    page.get_by_label("From (your local time)").fill(local(now - timedelta(minutes=60)))
    page.get_by_label("From (your local time)").dispatch_event("change")
    expect(rows).to_have_count(50)
    expect(page.get_by_role("button", name="Older →")).to_be_enabled()
    page.get_by_role("button", name="Older →").click()
    # from the minute an hour ago (seconds cut): the rows 60 .. 1 minutes old, 50 + 10
    expect(rows).to_have_count(10)
    expect(rows.last).to_have_attribute("data-request-id", "req_recent0060")
    expect(page.get_by_role("button", name="Older →")).to_be_disabled()

    # model and status still filter the page shown
    page.get_by_label("Status").select_option("4")
    expect(rows).to_have_count(3)  # rows 69 .. 60 on this page; every third (62, 65, 68) a 429
    expect(page.locator("#logs-count")).to_have_text("(3 of 10 on this page)")
    tab.screenshot("logs-pages")


def test_a_key_over_its_budget_or_quota_says_so(tab, admin):
    from app.models import ApiKey

    over = admin.create_key(name="spent", budget_usd=0.0005)
    quota = admin.create_key(name="all-tokens", token_quota=1000)
    fine = admin.create_key(name="fine", budget_usd=5)
    off = admin.create_key(name="off", budget_usd=0.0005)
    ApiKey.update(used_nanos=600_000).where(ApiKey.id.in_([over["id"], off["id"]])).execute()
    ApiKey.update(used_tokens=1000).where(ApiKey.id == quota["id"]).execute()
    admin.patch(f"/admin/keys/{off['id']}", json={"enabled": False})

    page = signed_in(tab, "/dashboard/keys")
    badge = lambda key: page.locator(f'#keys-table tbody tr[data-key-id="{key["id"]}"] .badge')  # noqa: E731
    expect(badge(over)).to_have_text("over budget")
    expect(badge(quota)).to_have_text("over quota")
    expect(badge(fine)).to_have_text("enabled")
    expect(badge(off)).to_have_text("disabled")  # disabled says more than over budget
    assert admin.get(f"/admin/keys/{over['id']}").get_json()["status"] == "active"  # the API's status is unchanged

    admin.patch(f"/admin/keys/{over['id']}", json={"budget_usd": 1})
    page.reload()
    page.wait_for_load_state("networkidle")
    expect(badge(over)).to_have_text("enabled")
    tab.screenshot("keys-over-budget")


def test_delete_a_price_in_the_dashboard(tab, admin):
    rates = {"input": 1, "output": 5, "cache_write": 1.25, "cache_read": 0.1}
    assert admin.put("/admin/prices/doomed-model*", json=rates).status_code == 201
    page = signed_in(tab, "/dashboard/prices")
    row = page.locator('#prices-table tbody tr[data-model="doomed-model*"]')
    expect(row).to_have_count(1)

    row.get_by_role("button", name="Delete price of doomed-model*").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Delete the price of “doomed-model*”")
    dialog.get_by_role("button", name="Cancel").click()
    expect(row).to_have_count(1)

    row.get_by_role("button", name="Delete price of doomed-model*").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)
    assert "doomed-model*" not in {p["model"] for p in admin.get("/admin/prices").get_json()["data"]}
    expect(page.locator('#prices-table tbody tr[data-model="claude-sonnet-4-6"]')).to_have_count(1)
