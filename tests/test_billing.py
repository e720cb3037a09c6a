"""Billing as Anthropic bills: the 5-minute / 1-hour cache-write split, long-context tiers, web
searches, glob prices, and the unpriced-model policy, through the relay and a loopback upstream."""
import pytest

from app.adaptors.base import Usage
from app.models import ApiKey, RequestLog
from app.services.pricing import Price, PriceTable, Rates, cost_nanos
from tests.support.app import anthropic_channel, assert_error, wait_for_row
from tests.support.bodies import messages_body
from tests.support.upstream import anthropic_message, anthropic_stream_events, json_answer, sse_answer

MODEL = "claude-test-9"
BODY = messages_body(MODEL)
# USD per MTok
PRICE = {"input": 3, "output": 15, "cache_write": 3.75, "cache_read": 0.3}
SPLIT = {"cache_creation_input_tokens": 1000,
         "cache_creation": {"ephemeral_5m_input_tokens": 400, "ephemeral_1h_input_tokens": 600}}


def expected_nanos(inp, out, cw5, cw1h, cr, *, rates=(3, 15, 3.75, 6, 0.3), searches=0, per_1k=0):
    """The formula of docs/api.md, Accounting, in exact decimal arithmetic, as nano-dollars."""
    from decimal import Decimal as D

    r_in, r_out, r_cw, r_cw1h, r_cr = (D(str(x)) for x in rates)
    usd = (inp * r_in + cw5 * r_cw + cw1h * r_cw1h + cr * r_cr + out * r_out) / D(10**6) \
        + searches * D(str(per_1k)) / 1000
    return int((usd * 10**9).to_integral_value())


def put_price(admin, model=MODEL, **fields):
    resp = admin.put(f"/admin/prices/{model}", json={**PRICE, **fields})
    assert resp.status_code in (200, 201), resp.get_json()
    return resp.get_json()


def post(client, key, body=BODY, **extra):
    return client.post("/v1/messages", json={**body, **extra}, headers={"x-api-key": key["key"]})


# the formula, without the relay -------------------------------------------------

def test_one_hour_writes_cost_twice_input():
    """Sonnet ($3 in): of 1,000 tokens written, 600 with the 1-hour TTL: 400 x $3.75 + 600 x $6 per
    MTok = $0.0051, where pricing all at the 5-minute rate gave $0.00375."""
    price = Price("m", Rates.of({"input": 3_000_000, "output": 15_000_000, "cache_write": 3_750_000,
                                 "cache_read": 300_000}))
    usage = Usage(cache_creation_input_tokens=1000, cache_creation_1h_input_tokens=600)
    assert cost_nanos(price, usage) == 5_100_000


def test_glob_lookup_exact_wins_then_longest_pattern():
    def price(model):
        return Price(model, Rates(1, 1, 1, 2, 1))

    table = PriceTable([price("claude-opus-5*"), price("claude-opus-5-5*"), price("claude-opus-5-5"),
                        price("claude-*")])
    assert table.lookup("claude-opus-5-5").model == "claude-opus-5-5"
    assert table.lookup("claude-opus-5-5-20261201").model == "claude-opus-5-5*"
    assert table.lookup("claude-opus-5-20260724").model == "claude-opus-5*"
    assert table.lookup("claude-haiku-9").model == "claude-*"
    assert table.lookup("gpt-4o") is None


def test_usage_reads_the_split_and_searches_and_never_erases():
    usage = Usage()
    usage.merge({"input_tokens": 10, **SPLIT, "server_tool_use": {"web_search_requests": 2}})
    usage.merge({"output_tokens": 5, "cache_creation": None, "server_tool_use": {}})
    assert (usage.cache_creation_input_tokens, usage.cache_creation_1h_input_tokens,
            usage.web_search_requests, usage.output_tokens) == (1000, 600, 2, 5)
    assert usage.total == 10 + 5 + 1000  # searches and the 1h part are not extra tokens


# through the relay -----------------------------------------------------------------

def test_non_stream_split_and_web_searches(client, admin, upstream, key):
    anthropic_channel(admin, upstream)
    put_price(admin, web_search_per_1k=10)
    usage = {"input_tokens": 2000, "output_tokens": 300, "cache_read_input_tokens": 5000, **SPLIT,
             "server_tool_use": {"web_search_requests": 3}}
    upstream.script(json_answer(anthropic_message(usage=usage)))
    assert post(client, key).status_code == 200
    row = RequestLog.get()
    assert (row.cache_creation_input_tokens, row.cache_creation_1h_input_tokens, row.web_search_requests) == \
        (1000, 600, 3)
    assert row.cost_nanos == expected_nanos(2000, 300, 400, 600, 5000, searches=3, per_1k=10)
    assert ApiKey.get_by_id(key["id"]).used_nanos == row.cost_nanos
    logged = admin.get("/admin/logs").get_json()["data"][0]
    assert logged["cache_creation_1h_input_tokens"] == 600 and logged["web_search_requests"] == 3
    total = admin.get("/admin/usage").get_json()["data"][0]
    assert total["cache_creation_1h_input_tokens"] == 600 and total["web_search_requests"] == 3
    assert total["cost_usd"] == pytest.approx(row.cost_nanos / 1e9)


def test_stream_split_from_message_start_survives_the_delta(client, admin, upstream, key):
    anthropic_channel(admin, upstream)
    put_price(admin, cache_write_1h=9)  # an explicit 1-hour rate replaces 2 x input
    start = {"input_tokens": 50, "cache_read_input_tokens": 7000, **SPLIT}
    delta = {"output_tokens": 80, "server_tool_use": {"web_search_requests": 1}}
    upstream.script(sse_answer(anthropic_stream_events(["x"], usage_start=start, usage_delta=delta)))
    resp = post(client, key, stream=True)
    resp.get_data()
    row = wait_for_row()
    assert (row.cache_creation_input_tokens, row.cache_creation_1h_input_tokens, row.web_search_requests,
            row.output_tokens) == (1000, 600, 1, 80)
    assert row.cost_nanos == expected_nanos(50, 80, 400, 600, 7000, rates=(3, 15, 3.75, 9, 0.3))


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("prompt, tier", [(200_000, False), (200_001, True)])
def test_long_context_tier_bills_the_whole_request(client, admin, upstream, key, prompt, tier, stream):
    anthropic_channel(admin, upstream)
    put_price(admin, long_context={"threshold_tokens": 200_000, "input": 6, "output": 22.5,
                                   "cache_write": 7.5, "cache_read": 0.6})
    # the prompt counts input, cache writes and cache reads
    usage = {"input_tokens": prompt - 1000 - 150_000, "output_tokens": 1000, "cache_read_input_tokens": 150_000,
             **SPLIT}
    if stream:  # the prompt's counts arrive in message_start, the output in message_delta
        start = {k: v for k, v in usage.items() if k != "output_tokens"}
        upstream.script(sse_answer(anthropic_stream_events(["x"], usage_start=start,
                                                           usage_delta={"output_tokens": 1000})))
        resp = post(client, key, stream=True)
        assert resp.status_code == 200
        resp.get_data()
        wait_for_row()
    else:
        upstream.script(json_answer(anthropic_message(usage=usage)))
        assert post(client, key).status_code == 200
    rates = (6, 22.5, 7.5, 12, 0.6) if tier else (3, 15, 3.75, 6, 0.3)  # tier's 1h: 2 x its input
    assert RequestLog.get().cost_nanos == expected_nanos(prompt - 151_000, 1000, 400, 600, 150_000, rates=rates)


def test_a_glob_prices_new_dated_ids_and_an_exact_name_wins(client, admin, upstream, key):
    anthropic_channel(admin, upstream)
    put_price(admin, "claude-test-*", input=1, output=1, cache_write=1, cache_read=1)
    put_price(admin, "claude-test-9*", input=2, output=2, cache_write=2, cache_read=2)
    put_price(admin, "claude-test-9-20261201", input=5, output=5, cache_write=5, cache_read=5)
    usage = {"input_tokens": 1000, "output_tokens": 0}
    costs = {}
    for model in ("claude-test-9-20270101", "claude-test-9-20261201", "claude-test-8"):
        upstream.script(json_answer(anthropic_message(usage=usage)))
        assert post(client, key, model=model).status_code == 200
        costs[model] = RequestLog.select().order_by(RequestLog.id.desc()).get().cost_nanos
    assert costs == {"claude-test-9-20270101": 2_000_000, "claude-test-9-20261201": 5_000_000,
                     "claude-test-8": 1_000_000}


def test_prices_api_round_trip_and_validation(admin):
    got = put_price(admin, cache_write_1h=None, web_search_per_1k=10,
                    long_context={"threshold_tokens": 1000, "input": 6, "output": 22.5, "cache_write": 7.5,
                                  "cache_write_1h": 11, "cache_read": 0.6})
    assert got == {"model": MODEL, **PRICE, "cache_write_1h": 6.0, "web_search_per_1k": 10.0,
                   "long_context": {"threshold_tokens": 1000, "input": 6.0, "output": 22.5, "cache_write": 7.5,
                                    "cache_write_1h": 11.0, "cache_read": 0.6}}
    listed = {p["model"]: p for p in admin.get("/admin/prices").get_json()["data"]}
    assert listed[MODEL] == got
    assert_error(admin.put(f"/admin/prices/{MODEL}", json={**PRICE, "long_context": {"input": 1}}),
                 400, "invalid_request_error", contains="long_context.threshold_tokens")
    assert_error(admin.put(f"/admin/prices/{MODEL}", json={**PRICE, "cache_write_1h": -1}),
                 400, "invalid_request_error", contains="cache_write_1h")


def test_claude_codes_default_model_is_priced(admin):
    """Seeded from Anthropic's list: Claude Code asks for claude-opus-5-5 by default; new dated ids
    of every family are priced through globs."""
    from app.services.pricing import PriceBook

    book = PriceBook()
    assert book.lookup("claude-opus-5-5").rates.input == 4_000_000
    assert book.lookup("claude-opus-5-5-20261201").rates.cache_read == 200_000
    assert book.lookup("claude-sonnet-5-5-20270101").rates.output == 10_000_000
    assert book.lookup("claude-haiku-5-5").long_context[0] == 100_000
    assert book.lookup("claude-sonnet-4-5").long_context == (200_000, Rates(6_000_000, 22_500_000, 7_500_000,
                                                                            12_000_000, 600_000))
    assert book.lookup("claude-opus-4-1-20250805").web_search_per_1k == 10_000_000
    # the clouds' ids (after a channel's model_map) are priced like the family they belong to
    assert book.lookup("us.anthropic.claude-sonnet-4-5-20250929-v1:0").long_context[0] == 200_000
    assert book.lookup("global.anthropic.claude-opus-5-5-20261201-v1:0").rates.input == 4_000_000
    assert book.lookup("claude-haiku-4-5@20251001").rates.output == 5_000_000


# the unpriced policy --------------------------------------------------------------

def test_unpriced_model_with_a_budget_is_refused_and_nothing_is_sent(client, admin, upstream):
    anthropic_channel(admin, upstream)
    budgeted = admin.create_key(name="b", budget_usd=5)
    resp = post(client, budgeted, model="claude-nobody-1")
    assert_error(resp, 403, "permission_error", contains="claude-nobody-1")
    assert "PUT /admin/prices/claude-nobody-1" in resp.get_json()["error"]["message"]
    assert upstream.requests == []
    put_price(admin, "claude-nobody-1")  # priced: served at once
    upstream.script(json_answer(anthropic_message()))
    assert post(client, budgeted, model="claude-nobody-1").status_code == 200


def test_budgeted_key_skips_a_channel_whose_mapped_model_is_unpriced(client, admin, upstream):
    anthropic_channel(admin, upstream, priority=10, model_map={MODEL: "claude-unpriced-x"})
    anthropic_channel(admin, upstream, priority=0)
    put_price(admin)
    budgeted = admin.create_key(name="b", budget_usd=5)
    upstream.script(json_answer(anthropic_message()))
    assert post(client, budgeted).status_code == 200
    assert [r.json()["model"] for r in upstream.requests] == [MODEL]


def test_unpriced_model_without_a_budget_is_relayed_at_zero_and_flagged(client, admin, upstream, key):
    import logging

    from app.metrics import UNPRICED_REQUESTS

    anthropic_channel(admin, upstream)
    before = UNPRICED_REQUESTS.labels("claude-nobody-2")._value.get()
    upstream.script(json_answer(anthropic_message()))
    warnings: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = warnings.append
    logging.getLogger("octorelay.pricing").addHandler(handler)
    try:
        assert post(client, key, model="claude-nobody-2").status_code == 200
    finally:
        logging.getLogger("octorelay.pricing").removeHandler(handler)
    assert RequestLog.get().cost_nanos == 0
    assert UNPRICED_REQUESTS.labels("claude-nobody-2")._value.get() == before + 1
    assert [w.fields["model"] for w in warnings if "no price for model" in w.getMessage()] == ["claude-nobody-2"]
    flagged = admin.get("/admin/prices").get_json()["unpriced"]
    assert [f["model"] for f in flagged] == ["claude-nobody-2"] and flagged[0]["requests"] == 1


# admin writes in force for the next request (same process; other workers: test_freshness.py) ---

def test_a_new_price_bills_the_very_next_request(client, admin, upstream, key):
    anthropic_channel(admin, upstream)
    put_price(admin)
    usage = {"input_tokens": 1000, "output_tokens": 0}
    upstream.script(json_answer(anthropic_message(usage=usage)), json_answer(anthropic_message(usage=usage)))
    post(client, key)
    put_price(admin, input=7)
    post(client, key)
    assert [r.cost_nanos for r in RequestLog.select().order_by(RequestLog.id)] == [3_000_000, 7_000_000]
