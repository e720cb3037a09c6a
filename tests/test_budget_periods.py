"""Budget periods: a key's totals start again from 0 at each UTC day, week or month, exactly, under
concurrent charges, with time injected (the limiter's and the ledger's clocks), never waited for."""
import random
import threading
from datetime import datetime, timedelta

import pytest

from app.models import ApiKey, RequestLog, utcnow
from app.services import keys as key_service
from app import periods
from app.state import services
from app.timefmt import iso
from tests.support.app import anthropic_channel, assert_error, settled
from tests.support.bodies import messages_body
from tests.support.upstream import anthropic_message, anthropic_stream_events, json_answer, sse_answer

BODY = messages_body()
USAGE = {"input_tokens": 1000, "output_tokens": 100}  # sonnet ($3 / $15 per million): $0.0045, 1100 tokens
COST = 1000 * 3000 + 100 * 15000
NEW_YEAR = datetime(2027, 1, 1)  # a Friday: the start of a day and a month, not of a week


# the calendar ---------------------------------------------------------------------------------

@pytest.mark.parametrize("period, at, start, after", [
    ("day", datetime(2026, 12, 31, 23, 59, 59, 999999), datetime(2026, 12, 31), datetime(2027, 1, 1)),
    ("day", datetime(2027, 1, 1), datetime(2027, 1, 1), datetime(2027, 1, 2)),
    ("week", datetime(2026, 12, 6, 23, 0), datetime(2026, 11, 30), datetime(2026, 12, 7)),  # a Sunday
    ("week", datetime(2026, 12, 7), datetime(2026, 12, 7), datetime(2026, 12, 14)),  # a Monday
    ("week", datetime(2027, 1, 1, 12), datetime(2026, 12, 28), datetime(2027, 1, 4)),
    ("month", datetime(2026, 12, 31, 23, 59), datetime(2026, 12, 1), datetime(2027, 1, 1)),
    ("month", datetime(2028, 2, 29, 8), datetime(2028, 2, 1), datetime(2028, 3, 1)),
    ("month", datetime(2027, 1, 1), datetime(2027, 1, 1), datetime(2027, 2, 1)),
])
def test_periods_start_at_midnight_utc_mondays_and_the_first(period, at, start, after):
    assert periods.period_start(period, at) == start
    assert periods.next_start(period, start) == after == periods.resets_at(period, at)


def test_stored_totals_count_only_while_their_period_runs():
    start = datetime(2026, 12, 1)
    assert periods.current_usage("month", start, 5, 7, datetime(2026, 12, 31, 23, 59)) == (5, 7)
    assert periods.current_usage("month", start, 5, 7, NEW_YEAR) == (0, 0)
    assert periods.current_usage("day", start, 5, 7, datetime(2026, 12, 2)) == (0, 0)
    assert periods.current_usage(None, None, 5, 7, NEW_YEAR) == (5, 7)  # no period: never resets


# the admin API --------------------------------------------------------------------------------

def test_a_key_shows_its_period_and_next_reset(admin):
    before = utcnow()
    key = admin.create_key(name="monthly", budget_usd=50, budget_period="month")
    after = utcnow()
    assert key["budget_period"] == "month"
    assert key["budget_resets_at"] in {iso(periods.resets_at("month", t)) for t in (before, after)}
    assert key["used_usd"] == 0.0 and key["used_tokens"] == 0
    row = ApiKey.get_by_id(key["id"])
    assert row.period_start == periods.period_start("month", before) or row.period_start == periods.period_start(
        "month", after)

    shown = admin.patch(f"/admin/keys/{key['id']}", json={"budget_period": "day"}).get_json()
    assert shown["budget_period"] == "day"
    assert shown["budget_resets_at"].endswith("T00:00:00Z")
    assert datetime.fromisoformat(shown["budget_resets_at"][:-1]) - utcnow() <= timedelta(days=1)
    listed = admin.get("/admin/keys").get_json()["data"][0]
    assert listed["budget_period"] == "day" and listed["budget_resets_at"] == shown["budget_resets_at"]

    cleared = admin.patch(f"/admin/keys/{key['id']}", json={"budget_period": None}).get_json()
    assert cleared["budget_period"] is None and cleared["budget_resets_at"] is None
    assert ApiKey.get_by_id(key["id"]).period_start is None

    plain = admin.create_key(name="lifetime", budget_usd=5)
    assert plain["budget_period"] is None and plain["budget_resets_at"] is None


@pytest.mark.parametrize("bad", ["year", "Month", "", 1, ["day"]])
def test_an_unknown_period_is_a_400(admin, bad):
    assert_error(admin.post("/admin/keys", json={"name": "x", "budget_period": bad}), 400, "invalid_request_error",
                 contains="budget_period")


def test_changing_the_period_keeps_what_was_used_but_never_revives_an_ended_period(admin):
    key = admin.create_key(name="k", budget_usd=1, budget_period="month")
    now = utcnow()
    ApiKey.update(used_nanos=400_000_000, used_tokens=900).where(ApiKey.id == key["id"]).execute()
    # this month's spend still counts after a switch to days, until the next midnight
    shown = admin.patch(f"/admin/keys/{key['id']}", json={"budget_period": "day"}).get_json()
    assert (shown["used_usd"], shown["used_tokens"]) == (0.4, 900)
    assert ApiKey.get_by_id(key["id"]).period_start == periods.period_start("day", now)
    # the same period again changes nothing
    assert admin.patch(f"/admin/keys/{key['id']}", json={"budget_period": "day"}).get_json()["used_usd"] == 0.4
    # totals of a period that ended (last month's) read as 0, and a change of period keeps them at 0
    last_month = periods.period_start("month", now) - timedelta(days=3)
    ApiKey.update(budget_period="month", period_start=periods.period_start("month", last_month)).where(
        ApiKey.id == key["id"]).execute()
    assert admin.get(f"/admin/keys/{key['id']}").get_json()["used_usd"] == 0.0
    shown = admin.patch(f"/admin/keys/{key['id']}", json={"budget_period": "week"}).get_json()
    assert (shown["used_usd"], shown["used_tokens"]) == (0.0, 0)
    row = ApiKey.get_by_id(key["id"])
    assert (row.used_nanos, row.used_tokens, row.period_start) == (0, 0, periods.period_start("week", now))


# across a reset, through the relay ------------------------------------------------------------

class Clock:
    """The injected now (naive UTC) of the limiter (admission) and the ledger (a row's created_at)."""

    def __init__(self, app, now: datetime):
        self.now = now
        relay = services(app).relay
        relay.limiter.clock = relay.ledger.clock = lambda: self.now


def post(client, key, body=BODY, **kwargs):
    return client.post("/v1/messages", json=body, headers={"x-api-key": key["key"]}, **kwargs)


@pytest.fixture
def channel(admin, upstream):
    upstream.set_default(json_answer(anthropic_message(usage=USAGE)))
    return anthropic_channel(admin, upstream)


def key_totals(key_id: int) -> tuple[int, int, datetime | None]:
    row = ApiKey.get_by_id(key_id)
    return row.used_nanos, row.used_tokens, row.period_start


def test_a_used_up_monthly_budget_is_402_until_the_month_ends(app, client, admin, upstream, channel):
    key = admin.create_key(name="m", budget_usd=0.0065, budget_period="month")
    clock = Clock(app, NEW_YEAR - timedelta(seconds=30))  # this month's last half minute
    assert post(client, key).status_code == 200
    assert post(client, key).status_code == 200  # $0.009 used of $0.0065
    assert_error(post(client, key), 402, "billing_error",
                 contains="budget of $")
    assert "(it resets at 2027-01-01T00:00:00Z)" in post(client, key).get_json()["error"]["message"]
    assert len(upstream.requests) == 2

    clock.now = NEW_YEAR  # the first instant of the next month
    assert post(client, key).status_code == 200
    assert key_totals(key["id"]) == (COST, 1100, NEW_YEAR)  # this month's charge alone
    shown = key_service.serialize(ApiKey.get_by_id(key["id"]), now=clock.now)
    assert (shown["used_usd"], shown["budget_resets_at"]) == (0.0045, "2027-02-01T00:00:00Z")
    # the key's total is exactly its rows of this period
    this_month = RequestLog.select().where((RequestLog.key_id == key["id"]) & (RequestLog.created_at >= NEW_YEAR))
    assert sum(r.cost_nanos for r in this_month) == COST and RequestLog.select().count() >= 3


def test_the_token_quota_resets_with_the_period(app, client, admin, upstream, channel):
    key = admin.create_key(name="t", token_quota=2000, budget_period="day")
    clock = Clock(app, NEW_YEAR - timedelta(hours=1))
    assert post(client, key).status_code == 200
    assert post(client, key).status_code == 200  # 2200 tokens >= 2000
    assert_error(post(client, key), 402, "billing_error", contains="quota of 2000 tokens (it resets at 2027-01-01")
    clock.now = NEW_YEAR + timedelta(minutes=1)
    assert post(client, key).status_code == 200
    assert key_totals(key["id"]) == (COST, 1100, NEW_YEAR)


def test_a_stream_admitted_before_the_reset_is_charged_to_the_period_it_ends_in(
        app, client, admin, upstream, channel):
    key = admin.create_key(name="s", budget_usd=1, budget_period="month")
    clock = Clock(app, NEW_YEAR - timedelta(seconds=1))
    assert post(client, key).status_code == 200  # December: $0.0045
    assert key_totals(key["id"])[0] == COST
    upstream.script(sse_answer(anthropic_stream_events(["x"], usage_start={"input_tokens": 2000, "output_tokens": 1},
                                                        usage_delta={"output_tokens": 10})))
    resp = post(client, key, {**BODY, "stream": True})  # admitted in December
    assert resp.status_code == 200
    clock.now = NEW_YEAR + timedelta(seconds=1)  # the answer ends in January
    resp.get_data()
    resp.close()
    settled(app)
    stream_cost = 2000 * 3000 + 10 * 15000
    row = RequestLog.select().order_by(RequestLog.id.desc()).first()
    assert row.stream and row.cost_nanos == stream_cost and row.created_at >= NEW_YEAR
    assert key_totals(key["id"]) == (stream_cost, 2010, NEW_YEAR)  # January's, not December's + January's


# the charge itself, from several writers at once ----------------------------------------------

def settlement(key_id: int, n: int, created_at: datetime, input_tokens: int = 1000) -> dict:
    return {"request_id": f"req_period_{n}", "key_id": key_id, "channel_id": None, "model": "claude-sonnet-4-6",
            "stream": False, "status": 200, "error_type": None, "ttft_ms": None, "attempts": 1,
            "client_disconnected": False, "latency_ms": 5, "affinity": None, "upstream_model": "claude-sonnet-4-6",
            "created_at": created_at.isoformat(), "input_tokens": input_tokens, "output_tokens": 0}


def test_a_row_of_an_ended_period_written_late_no_longer_counts(app, admin):
    ledger = services(app).relay.ledger
    key = admin.create_key(name="late", budget_usd=1, budget_period="day")
    with app.app_context():
        ledger.write_batch([settlement(key["id"], 1, NEW_YEAR + timedelta(hours=2))])
        # written after the new day's first charge, though settled (created) the day before
        ledger.write_batch([settlement(key["id"], 2, NEW_YEAR - timedelta(minutes=5), 3000)])
        # one batch spanning the reset: each row counts in its own day
        ledger.write_batch([settlement(key["id"], 3, NEW_YEAR + timedelta(days=1, seconds=-1), 500),
                            settlement(key["id"], 4, NEW_YEAR + timedelta(days=1), 700)])
    assert RequestLog.select().count() == 4  # every row is logged
    assert key_totals(key["id"]) == (700 * 3000, 700, NEW_YEAR + timedelta(days=1))
    # a key without a period adds every row, whenever it was created
    plain = admin.create_key(name="plain", budget_usd=1)
    with app.app_context():
        ledger.write_batch([settlement(plain["id"], 5, NEW_YEAR), settlement(plain["id"], 6, NEW_YEAR - timedelta(days=40))])
    assert key_totals(plain["id"]) == (2 * 1000 * 3000, 2000, None)


def test_concurrent_writers_across_the_reset_count_exactly_this_periods_rows(app, admin):
    """Several writers (workers, instances) charge one key with rows on both sides of the reset, in
    any order: the key ends with exactly the new period's rows (on PostgreSQL, real row locks)."""
    ledger = services(app).relay.ledger
    key = admin.create_key(name="busy", budget_usd=1000, budget_period="month")
    rng = random.Random(20)
    rows = [settlement(key["id"], n, NEW_YEAR + timedelta(seconds=rng.randint(-30, 30)), rng.randint(1, 5000))
            for n in range(160)]
    batches = [rows[i:i + 4] for i in range(0, len(rows), 4)]
    errors = []

    def writer(mine):
        try:
            with app.app_context():
                for batch in mine:
                    ledger.write_batch(batch)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(batches[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and not any(t.is_alive() for t in threads)
    assert not ledger.spool.pending()  # nothing was refused
    assert RequestLog.select().count() == len(rows)
    january = [r for r in rows if datetime.fromisoformat(r["created_at"]) >= NEW_YEAR]
    assert 0 < len(january) < len(rows)
    assert key_totals(key["id"]) == (sum(r["input_tokens"] * 3000 for r in january),
                                     sum(r["input_tokens"] for r in january), NEW_YEAR)
    logged = RequestLog.select().where(RequestLog.created_at >= NEW_YEAR)
    assert sum(r.cost_nanos for r in logged) == key_totals(key["id"])[0]


# the dashboard --------------------------------------------------------------------------------

def test_the_keys_page_sets_changes_and_clears_the_period(tab, admin):
    from playwright.sync_api import expect

    from tests.support.constants import ADMIN_TOKEN

    tab.sign_in(ADMIN_TOKEN)
    page = tab.goto("/dashboard/keys")
    page.get_by_label("Name", exact=True).fill("monthly")
    page.get_by_label("Budget (USD)").fill("50")
    page.get_by_label("Budget resets").select_option("month")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("#new-key")).to_be_visible()
    (key,) = admin.get("/admin/keys").get_json()["data"]
    assert (key["budget_period"], key["budget_usd"]) == ("month", 50.0) and key["budget_resets_at"]
    row = page.locator("#keys-table tbody tr", has_text="monthly")
    expect(row.locator(".resets")).to_contain_text("month: resets")
    tab.screenshot("keys-budget-period")

    row.get_by_role("button", name="Edit key monthly").click()
    expect(page.get_by_label("Budget resets")).to_have_value("month")
    page.get_by_label("Budget resets").select_option("day")
    page.get_by_role("button", name="Save changes").click()
    expect(row.locator(".resets")).to_contain_text("day: resets")
    assert admin.get(f"/admin/keys/{key['id']}").get_json()["budget_period"] == "day"

    row.get_by_role("button", name="Edit key monthly").click()
    expect(page.get_by_label("Budget resets")).to_have_value("day")
    page.get_by_label("Budget resets").select_option("")
    page.get_by_role("button", name="Save changes").click()
    expect(row.locator(".resets")).to_have_count(0)
    shown = admin.get(f"/admin/keys/{key['id']}").get_json()
    assert (shown["budget_period"], shown["budget_resets_at"], shown["budget_usd"]) == (None, None, 50.0)
