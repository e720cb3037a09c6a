"""The read side of accounting: usage reports and the request log (service and admin API).

Rows are inserted straight into RequestLog with known tokens, costs and times
over two days, two keys, two models and two channels; every grouping is
checked against a plain-Python oracle and a few against hand-written numbers.
"""
from __future__ import annotations

import itertools
from datetime import datetime
from decimal import Decimal

import pytest

from app.models import RequestLog
from app.schemas import usage as usage_query
from app.services.usage import LOG_FIELDS, recent_logs, usage_report
from tests.support.app import assert_error
from tests.support.constants import ADMIN_TOKEN

SONNET, HAIKU = "claude-sonnet-4-5", "claude-haiku-4-5"
TOKENS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens",
          "cache_creation_1h_input_tokens", "web_search_requests")
TOTAL_FIELDS = ("requests", *TOKENS, "cost_usd")
GROUP_COLUMN = {"key": "key_id", "model": "model", "channel": "channel_id", "day": "day"}

_seq = itertools.count(1)


def log(**fields) -> RequestLog:
    fields.setdefault("request_id", f"req_test{next(_seq):020d}")
    fields.setdefault("key_id", 1)
    fields.setdefault("channel_id", 10)
    fields.setdefault("model", SONNET)
    fields.setdefault("status", 200)
    return RequestLog.create(**fields)


# Two days x two keys x two models x two channels; some combinations twice.
DAY1, DAY2 = "2025-03-01", "2025-03-02"
TIMES = {
    DAY1: [datetime(2025, 3, 1, 0, 0, 0), datetime(2025, 3, 1, 23, 59, 59, 999999)],
    DAY2: [datetime(2025, 3, 2, 0, 0, 0), datetime(2025, 3, 2, 13, 30, 5)],
}


def seed() -> list[dict]:
    """Insert the dataset; returns the rows as plain dicts (the oracle's input)."""
    rows = []
    combos = itertools.product((1, 2), (SONNET, HAIKU), (10, 20), (DAY1, DAY2))
    for n, (key_id, model, channel_id, day) in enumerate(combos):
        for copy in range(1 + n % 2):  # every other combination has two rows
            row = {
                "key_id": key_id, "model": model, "channel_id": channel_id,
                "created_at": TIMES[day][copy],
                "input_tokens": 1000 + 17 * n + copy,
                "output_tokens": 200 + 3 * n,
                "cache_creation_input_tokens": 50 * (n % 3),
                "cache_read_input_tokens": 400 * (n % 4) + copy,
                "cache_creation_1h_input_tokens": 20 * (n % 3),
                "web_search_requests": n % 5,
                "cost_nanos": 3_123_457 * (n + 1) + 7 * copy,  # realistic, not round
            }
            log(**row)
            rows.append({**row, "day": day})
    return rows


def oracle(rows, group_by=(), **filters) -> list[dict]:
    """What usage_report must answer, computed in Python with exact Decimal money."""
    def keep(r):
        return ((filters.get("key_id") is None or r["key_id"] == filters["key_id"])
                and (filters.get("model") is None or r["model"] == filters["model"])
                and (filters.get("since") is None or r["created_at"] >= filters["since"])
                and (filters.get("until") is None or r["created_at"] < filters["until"]))

    columns = [GROUP_COLUMN[g] for g in group_by]
    buckets: dict[tuple, dict] = {}
    if not group_by:
        buckets[()] = {"requests": 0, **{t: 0 for t in TOKENS}, "nanos": 0}
    for r in filter(keep, rows):
        b = buckets.setdefault(tuple(r[c] for c in columns),
                               {"requests": 0, **{t: 0 for t in TOKENS}, "nanos": 0})
        b["requests"] += 1
        for t in TOKENS:
            b[t] += r[t]
        b["nanos"] += r["cost_nanos"]
    out = []
    for group in sorted(buckets):
        b = buckets[group]
        out.append({**dict(zip(columns, group)), "requests": b["requests"],
                    **{t: b[t] for t in TOKENS},
                    "cost_usd": float(Decimal(b["nanos"]) / 1_000_000_000)})
    return out


@pytest.fixture
def rows(app):
    return seed()


ALL_GROUPINGS = [combo for n in range(5) for combo in itertools.combinations(("key", "model", "channel", "day"), n)]


# usage: service ----------------------------------------------------------------

@pytest.mark.parametrize("group_by", ALL_GROUPINGS, ids=lambda g: ",".join(g) or "totals")
def test_every_grouping_matches_the_oracle(rows, group_by):
    assert usage_report(group_by=group_by) == oracle(rows, group_by)


@pytest.mark.parametrize("group_by", [("day", "key"), ("model", "day"), ("channel", "model", "key"),
                                      ("day", "channel", "model", "key")])
def test_group_order_follows_the_request(rows, group_by):
    report = usage_report(group_by=group_by)
    assert report == oracle(rows, group_by)
    columns = [GROUP_COLUMN[g] for g in group_by]
    assert [list(r)[:len(columns)] for r in report] == [columns] * len(report)


def test_totals_by_hand(app):
    log(input_tokens=10, output_tokens=20, cache_creation_input_tokens=30, cache_read_input_tokens=40,
        cost_nanos=1_500_000_000, created_at=datetime(2025, 1, 1, 8))
    log(input_tokens=1, output_tokens=2, cache_creation_input_tokens=3, cache_read_input_tokens=4,
        cost_nanos=250_000_000, created_at=datetime(2025, 1, 2, 8), model=HAIKU, key_id=2)
    assert usage_report() == [{"requests": 2, "input_tokens": 11, "output_tokens": 22,
                               "cache_creation_input_tokens": 33, "cache_read_input_tokens": 44,
                               "cache_creation_1h_input_tokens": 0, "web_search_requests": 0, "cost_usd": 1.75}]
    assert usage_report(group_by=("day",)) == [
        {"day": "2025-01-01", "requests": 1, "input_tokens": 10, "output_tokens": 20,
         "cache_creation_input_tokens": 30, "cache_read_input_tokens": 40, "cache_creation_1h_input_tokens": 0, "web_search_requests": 0, "cost_usd": 1.5},
        {"day": "2025-01-02", "requests": 1, "input_tokens": 1, "output_tokens": 2,
         "cache_creation_input_tokens": 3, "cache_read_input_tokens": 4, "cache_creation_1h_input_tokens": 0, "web_search_requests": 0, "cost_usd": 0.25},
    ]
    assert [(r["key_id"], r["model"]) for r in usage_report(group_by=("key", "model"))] == [
        (1, SONNET), (2, HAIKU)]


def test_no_rows_gives_one_row_of_zeros_or_an_empty_grouping(app):
    zeros = {"requests": 0, "input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
             "cache_read_input_tokens": 0, "cache_creation_1h_input_tokens": 0, "web_search_requests": 0, "cost_usd": 0.0}
    assert usage_report() == [zeros]
    assert usage_report(group_by=("key", "day")) == []


def test_filters_that_match_nothing_still_give_totals(rows):
    report = usage_report(key_id=999)
    assert len(report) == 1 and report[0]["requests"] == 0 and report[0]["cost_usd"] == 0
    assert usage_report(model="claude-nothing", group_by=("model",)) == []


def test_costs_are_summed_exactly_in_nanos(app):
    for _ in range(3):
        log(cost_nanos=1, model="one-nano")
    log(cost_nanos=100_000_000, model="tenth")
    log(cost_nanos=200_000_000, model="tenth")
    # float addition would say 3.0000000000000004e-09 and 0.30000000000000004
    assert 1e-9 + 1e-9 + 1e-9 != 3e-9 and 0.1 + 0.2 != 0.3
    by_model = {r["model"]: r["cost_usd"] for r in usage_report(group_by=("model",))}
    assert by_model == {"one-nano": 3e-9, "tenth": 0.3}
    assert usage_report()[0]["cost_usd"] == float(Decimal(300_000_003) / 10**9)


def test_large_sums_stay_exact(app):
    # beyond 2**31 tokens and 2**53 nanos in total: integer sums, not floats
    for _ in range(3):
        log(input_tokens=3_000_000_000, cost_nanos=3_000_000_000_000_000 + 1)
    total = usage_report()[0]
    assert total["input_tokens"] == 9_000_000_000
    assert total["cost_usd"] == float(Decimal(9_000_000_000_000_003) / 10**9)


def test_filters_key_model_and_window(rows):
    for filters in ({"key_id": 1}, {"key_id": 2}, {"model": HAIKU}, {"key_id": 2, "model": SONNET},
                    {"since": datetime(2025, 3, 2)}, {"until": datetime(2025, 3, 2)},
                    {"since": datetime(2025, 3, 1, 12), "until": datetime(2025, 3, 2, 12)}):
        for group_by in ((), ("day",), ("key", "model", "channel")):
            assert usage_report(group_by=group_by, **filters) == oracle(rows, group_by, **filters), filters


def test_window_bounds_since_inclusive_until_exclusive(app):
    log(created_at=datetime(2025, 3, 1, 23, 59, 59, 999999), input_tokens=1)
    log(created_at=datetime(2025, 3, 2, 0, 0, 0), input_tokens=10)
    log(created_at=datetime(2025, 3, 3, 0, 0, 0), input_tokens=100)
    day2 = dict(since=datetime(2025, 3, 2), until=datetime(2025, 3, 3))
    assert usage_report(**day2)[0]["input_tokens"] == 10
    assert usage_report(until=datetime(2025, 3, 2))[0]["input_tokens"] == 1
    assert usage_report(since=datetime(2025, 3, 2))[0]["input_tokens"] == 110
    assert [r["day"] for r in usage_report(group_by=("day",))] == ["2025-03-01", "2025-03-02", "2025-03-03"]


def test_null_keys_and_channels_group_together_and_sort_last(app):
    log(key_id=None, channel_id=None, input_tokens=5)
    log(key_id=2, channel_id=20, input_tokens=7)
    log(key_id=None, channel_id=None, input_tokens=6)
    log(key_id=1, channel_id=10, input_tokens=8)
    report = usage_report(group_by=("key", "channel"))
    assert [(r["key_id"], r["channel_id"], r["input_tokens"]) for r in report] == [
        (1, 10, 8), (2, 20, 7), (None, None, 11)]


def test_report_rejects_unknown_group_fields():
    from app.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match="group_by: unknown field 'week'"):
        usage_report(group_by=("week",))


# parameters ------------------------------------------------------------------------

def test_parse_usage_query_converts_everything():
    parsed = usage_query.parse_usage_query({
        "key_id": "3", "model": SONNET, "since": "2025-03-01",
        "until": "2025-03-02T01:00:00+02:00", "group_by": " day, key ,day",
    })
    assert parsed == {"key_id": 3, "model": SONNET, "since": datetime(2025, 3, 1),
                      "until": datetime(2025, 3, 1, 23), "group_by": ("day", "key")}
    assert usage_query.parse_usage_query({"since": "2025-03-01T10:00:00Z"}) == {"since": datetime(2025, 3, 1, 10)}
    assert usage_query.parse_usage_query({"key_id": "", "model": "", "group_by": ""}) == {}
    assert usage_query.parse_usage_query({"key_id": None}) == {}
    assert usage_query.parse_logs_query({}) == {"limit": 50}
    assert usage_query.parse_logs_query({"key_id": "2", "limit": "1000"}) == {"key_id": 2, "limit": 1000}


# usage: API --------------------------------------------------------------------------

def test_api_usage_totals_and_groupings(admin, rows):
    body = admin.get("/admin/usage").get_json()
    assert body == {"data": oracle(rows)}
    assert set(body["data"][0]) == set(TOTAL_FIELDS)
    for group_by in (("key",), ("model",), ("channel",), ("day",), ("key", "day"),
                     ("model", "channel"), ("key", "model", "channel", "day")):
        resp = admin.get("/admin/usage", query_string={"group_by": ",".join(group_by)})
        assert resp.status_code == 200
        assert resp.get_json() == {"data": oracle(rows, group_by)}, group_by


def test_api_usage_filters(admin, rows):
    resp = admin.get("/admin/usage?key_id=2&model=claude-haiku-4-5&since=2025-03-02&group_by=channel")
    assert resp.get_json()["data"] == oracle(rows, ("channel",), key_id=2, model=HAIKU,
                                             since=datetime(2025, 3, 2))
    # an offset is converted to UTC: 02:00+02:00 is midnight UTC
    resp = admin.get("/admin/usage", query_string={"until": "2025-03-02T02:00:00+02:00", "group_by": "day"})
    assert [r["day"] for r in resp.get_json()["data"]] == [DAY1]
    # the query template of docs/api.md (Usage) with empty values means "no filter"
    assert admin.get("/admin/usage?key_id=&model=&since=&until=&group_by=").get_json() == {"data": oracle(rows)}
    # group_by given twice adds up
    resp = admin.get("/admin/usage?group_by=key&group_by=day")
    assert resp.get_json()["data"] == oracle(rows, ("key", "day"))


def test_api_usage_with_no_rows(admin):
    assert admin.get("/admin/usage").get_json() == {"data": [{
        "requests": 0, "input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0, "cache_creation_1h_input_tokens": 0, "web_search_requests": 0, "cost_usd": 0.0}]}
    assert admin.get("/admin/usage?group_by=day").get_json() == {"data": []}


@pytest.mark.parametrize("query, name, text", [
    ("group_by=week", "group_by", "unknown field 'week' (allowed: key, model, channel, day)"),
    ("group_by=key,days", "group_by", "unknown field 'days'"),
    ("key_id=abc", "key_id", None),
    ("key_id=1.5", "key_id", None),
    ("key_id=-1", "key_id", None),
    ("key_id=99999999999999999999", "key_id", None),
    ("key_id=1&key_id=2", "key_id", "more than once"),
    ("model=" + "m" * 201, "model", None),
    ("since=yesterday", "since", "ISO-8601"),
    ("since=2025-13-01", "since", None),
    ("until=2025-03-01T25:00", "until", None),
    ("since=2025-03-02&until=2025-03-01", "until", "later than since"),
    ("since=2025-03-02&until=2025-03-02", "until", None),
    ("colour=red", "colour", None),
    ("limit=5", "limit", None),  # not a parameter of the usage report
])
def test_api_usage_rejects_bad_parameters(admin, query, name, text):
    body = assert_error(admin.get(f"/admin/usage?{query}"), 400, "invalid_request_error")
    message = body["error"]["message"]
    assert message.startswith(f"{name}:"), message
    if text:
        assert text in message, message


def test_usage_and_logs_need_the_admin_token(client, rows):
    for path in ("/admin/usage", "/admin/logs"):
        assert_error(client.get(path), 401, "authentication_error")
        assert_error(client.get(path, headers={"Authorization": "Bearer nope"}), 401, "authentication_error")
        assert client.get(path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 200


# logs ---------------------------------------------------------------------------------

def test_logs_have_exactly_the_documented_fields(app):
    log(request_id="req_full", key_id=7, channel_id=3, model=SONNET, stream=True, status=529,
        error_type="overloaded_error", input_tokens=11, output_tokens=22,
        cache_creation_input_tokens=33, cache_read_input_tokens=44, cost_nanos=123_456_789,
        latency_ms=1500, ttft_ms=320, attempts=3, client_disconnected=True, affinity="moved",
        usage_estimated=True, created_at=datetime(2025, 3, 1, 12, 34, 56, 789))
    assert recent_logs() == [{
        "request_id": "req_full", "key_id": 7, "channel_id": 3, "model": SONNET, "stream": True,
        "status": 529, "error_type": "overloaded_error", "input_tokens": 11, "output_tokens": 22,
        "cache_creation_input_tokens": 33, "cache_read_input_tokens": 44,
            "cache_creation_1h_input_tokens": 0, "web_search_requests": 0, "cost_usd": 0.123456789,
        "latency_ms": 1500, "ttft_ms": 320, "attempts": 3, "client_disconnected": True,
        "affinity": "moved", "usage_estimated": True, "created_at": "2025-03-01T12:34:56Z",
    }]
    assert list(recent_logs()[0]) == list(LOG_FIELDS)
    assert set(LOG_FIELDS) == {
        "request_id", "key_id", "channel_id", "model", "stream", "status", "error_type",
        "input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens",
        "cache_creation_1h_input_tokens", "web_search_requests",
        "cost_usd", "latency_ms", "ttft_ms", "attempts", "client_disconnected", "affinity", "usage_estimated",
        "created_at"}


def test_log_defaults_serialize_cleanly(app):
    log(request_id="req_min", key_id=None, channel_id=None)
    entry = recent_logs()[0]
    assert entry["key_id"] is None and entry["channel_id"] is None and entry["ttft_ms"] is None
    assert entry["stream"] is False and entry["client_disconnected"] is False and entry["usage_estimated"] is False
    assert entry["error_type"] is None and entry["cost_usd"] == 0.0 and entry["attempts"] == 0
    assert entry["created_at"].endswith("Z")


def test_logs_newest_first_with_ties_by_id(app):
    same = datetime(2025, 3, 1, 12)
    log(request_id="req_a", created_at=datetime(2025, 3, 1, 11))
    log(request_id="req_b", created_at=same)
    log(request_id="req_c", created_at=same)
    log(request_id="req_d", created_at=datetime(2025, 3, 2, 9))
    log(request_id="req_e", created_at=datetime(2025, 2, 28, 9))
    assert [e["request_id"] for e in recent_logs()] == ["req_d", "req_c", "req_b", "req_a", "req_e"]
    assert [e["request_id"] for e in recent_logs(limit=2)] == ["req_d", "req_c"]


def test_logs_filter_by_key_and_limit(app):
    for i in range(60):
        log(key_id=1 + i % 2, created_at=datetime(2025, 3, 1, 0, i))
    assert len(recent_logs()) == 50
    mine = recent_logs(key_id=2, limit=1000)
    assert len(mine) == 30 and {e["key_id"] for e in mine} == {2}
    assert [e["created_at"] for e in mine] == sorted((e["created_at"] for e in mine), reverse=True)
    assert recent_logs(key_id=3) == []


def test_api_logs(admin, app):
    log(request_id="req_old", key_id=1, created_at=datetime(2025, 3, 1))
    log(request_id="req_new", key_id=2, created_at=datetime(2025, 3, 2), cost_nanos=5)
    body = admin.get("/admin/logs").get_json()
    assert [e["request_id"] for e in body["data"]] == ["req_new", "req_old"]
    assert body["data"][0]["cost_usd"] == 5e-9 and list(body["data"][0]) == list(LOG_FIELDS)
    assert [e["request_id"] for e in admin.get("/admin/logs?key_id=1").get_json()["data"]] == ["req_old"]
    assert [e["request_id"] for e in admin.get("/admin/logs?limit=1").get_json()["data"]] == ["req_new"]
    assert admin.get("/admin/logs?key_id=&limit=").get_json()["data"][0]["request_id"] == "req_new"
    assert admin.get("/admin/logs?key_id=9").get_json() == {"data": [], "has_more": False, "first_id": None,
                                                            "last_id": None}


def test_api_logs_never_show_secrets(admin, app):
    key = admin.create_key(name="k")
    channel = admin.create_channel(name="c", api_key="sk-ant-api03-SECRETUPSTREAM-abcdef")
    log(key_id=key["id"], channel_id=channel["id"])
    text = admin.get("/admin/logs").get_data(as_text=True)
    assert key["key"] not in text and key["key"][len(key["key_prefix"]):] not in text
    assert "SECRETUPSTREAM" not in text
    entry = admin.get("/admin/logs").get_json()["data"][0]
    assert not {"prompt", "messages", "content", "body", "text", "api_key", "key", "key_hash"} & set(entry)


@pytest.mark.parametrize("query, name", [
    ("limit=0", "limit"),
    ("limit=1001", "limit"),
    ("limit=ten", "limit"),
    ("limit=2.5", "limit"),
    ("limit=1&limit=2", "limit"),
    ("key_id=x", "key_id"),
    ("key_id=0", "key_id"),
    ("group_by=day", "group_by"),  # not a parameter of the log
    ("model=x", "model"),
])
def test_api_logs_rejects_bad_parameters(admin, query, name):
    body = assert_error(admin.get(f"/admin/logs?{query}"), 400, "invalid_request_error")
    assert body["error"]["message"].startswith(f"{name}:"), body["error"]["message"]
