"""`octorelay usage` and `octorelay logs` in-process (click's CliRunner): same rows as the admin API."""
from __future__ import annotations

from datetime import datetime

import pytest

from app.models import RequestLog
from tests.support.cli_harness import release

SONNET, HAIKU = "claude-sonnet-4-5", "claude-haiku-4-5"


@pytest.fixture
def cli(runner):
    """A Cli on a migrated database (migrated through the CLI itself)."""
    runner.ok("db", "upgrade")
    return runner


def log(request_id, **fields):
    fields.setdefault("key_id", 1)
    fields.setdefault("channel_id", 10)
    fields.setdefault("model", SONNET)
    fields.setdefault("status", 200)
    RequestLog.create(request_id=request_id, **fields)


@pytest.fixture
def rows(cli):
    log("req_1", created_at=datetime(2025, 3, 1, 9), input_tokens=100, output_tokens=10,
        cache_read_input_tokens=1000, cost_nanos=1)
    log("req_2", created_at=datetime(2025, 3, 1, 18), input_tokens=200, output_tokens=20,
        key_id=2, model=HAIKU, channel_id=20, cost_nanos=1)
    log("req_3", created_at=datetime(2025, 3, 2, 7), input_tokens=300, output_tokens=30,
        cache_creation_input_tokens=5, cost_nanos=1, status=529, error_type="overloaded_error",
        attempts=3, stream=True, client_disconnected=True, ttft_ms=250, latency_ms=900)
    release()


def test_usage_totals_json(cli, rows):
    assert cli.json("usage") == {"data": [{
        "requests": 3, "input_tokens": 600, "output_tokens": 60, "cache_creation_input_tokens": 5,
        "cache_read_input_tokens": 1000, "cache_creation_1h_input_tokens": 0, "web_search_requests": 0,
        "cost_usd": 3e-9}]}


def test_usage_grouped_and_filtered_json(cli, rows):
    by_day = cli.json("usage", "--group-by", "day")["data"]
    assert [(r["day"], r["requests"], r["input_tokens"]) for r in by_day] == [
        ("2025-03-01", 2, 300), ("2025-03-02", 1, 300)]
    by_key_model = cli.json("usage", "--group-by", "key,model")["data"]
    assert [(r["key_id"], r["model"], r["requests"]) for r in by_key_model] == [
        (1, SONNET, 2), (2, HAIKU, 1)]
    assert list(by_key_model[0])[:2] == ["key_id", "model"]
    assert cli.json("usage", "--key-id", "1", "--since", "2025-03-02")["data"][0]["input_tokens"] == 300
    assert cli.json("usage", "--model", HAIKU)["data"][0]["requests"] == 1
    assert cli.json("usage", "--until", "2025-03-01T18:00:00Z")["data"][0]["requests"] == 1
    assert cli.json("usage", "--group-by", "channel", "--key-id", "2")["data"] == [{
        "channel_id": 20, "requests": 1, "input_tokens": 200, "output_tokens": 20,
        "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "cache_creation_1h_input_tokens": 0,
        "web_search_requests": 0, "cost_usd": 1e-9}]


def test_usage_json_is_what_the_api_returns(cli, rows, admin):
    for args, query in (((), ""), (("--group-by", "key,day"), "?group_by=key,day"),
                        (("--model", SONNET, "--group-by", "channel"), f"?model={SONNET}&group_by=channel")):
        api = admin.get(f"/admin/usage{query}").get_json()
        assert cli.json("usage", *args) == api, args


def test_usage_table(cli, rows):
    lines = cli.ok("usage", "--group-by", "model,day").splitlines()
    assert lines[0].split() == ["model", "day", "requests", "input_tokens", "output_tokens",
                                "cache_creation_input_tokens", "cache_creation_1h_input_tokens",
                                "cache_read_input_tokens", "web_search_requests", "cost_usd"]
    assert len(lines) == 4
    assert lines[1].split()[:4] == [HAIKU, "2025-03-01", "1", "200"]
    assert lines[2].split()[:4] == [SONNET, "2025-03-01", "1", "100"]
    assert lines[3].split()[:4] == [SONNET, "2025-03-02", "1", "300"]
    totals = cli.ok("usage").splitlines()
    assert totals[0].split()[0] == "requests" and totals[1].split()[:2] == ["3", "600"]


def test_usage_on_an_empty_log(cli):
    assert cli.json("usage")["data"][0]["requests"] == 0
    assert cli.json("usage", "--group-by", "day") == {"data": []}
    assert cli.ok("usage", "--group-by", "day").splitlines()[0].split()[0] == "day"


def test_logs_json_newest_first(cli, rows):
    from app.services.usage import LOG_FIELDS

    data = cli.json("logs")["data"]
    assert [e["request_id"] for e in data] == ["req_3", "req_2", "req_1"]
    assert list(data[0]) == list(LOG_FIELDS)  # the API's fields (test_usage.py pins them)
    assert {k: data[0][k] for k in (
        "request_id", "key_id", "channel_id", "model", "stream", "status", "error_type", "input_tokens",
        "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "cost_usd", "latency_ms",
        "ttft_ms", "attempts", "client_disconnected", "created_at")} == {
        "request_id": "req_3", "key_id": 1, "channel_id": 10, "model": SONNET, "stream": True,
        "status": 529, "error_type": "overloaded_error", "input_tokens": 300, "output_tokens": 30,
        "cache_creation_input_tokens": 5, "cache_read_input_tokens": 0, "cost_usd": 1e-9,
        "latency_ms": 900, "ttft_ms": 250, "attempts": 3, "client_disconnected": True,
        "created_at": "2025-03-02T07:00:00Z"}
    assert [e["request_id"] for e in cli.json("logs", "--limit", "2")["data"]] == ["req_3", "req_2"]
    assert [e["request_id"] for e in cli.json("logs", "--key-id", "2")["data"]] == ["req_2"]


def test_logs_json_is_what_the_api_returns(cli, rows, admin):
    assert cli.json("logs", "--key-id", "1") == admin.get("/admin/logs?key_id=1").get_json()


def test_logs_table(cli, rows):
    lines = cli.ok("logs").splitlines()
    assert lines[0].split()[:5] == ["created_at", "request_id", "key_id", "channel_id", "model"]
    assert [line.split()[1] for line in lines[1:]] == ["req_3", "req_2", "req_1"]
    assert "overloaded_error" in lines[1] and "-" in lines[2].split()  # no error_type -> "-"


@pytest.mark.parametrize("args, contains", [
    (("usage", "--group-by", "week"), "group_by: unknown field 'week' (allowed: key, model, channel, day)"),
    (("usage", "--key-id", "abc"), "key_id:"),
    (("usage", "--since", "yesterday"), "since:"),
    (("usage", "--until", "2025-02-30"), "until:"),
    (("usage", "--since", "2025-03-02", "--until", "2025-03-01"), "until:"),
    (("logs", "--limit", "0"), "limit:"),
    (("logs", "--limit", "1001"), "limit:"),
    (("logs", "--limit", "many"), "limit:"),
    (("logs", "--key-id", "-3"), "key_id:"),
])
def test_bad_options_fail_with_one_line(cli, args, contains):
    line = cli.fail(*args)
    assert contains in line, line
