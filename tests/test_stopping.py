"""A stopping worker's deadline, in process: open upstream calls end as Anthropic sheds load, each
settled; no request holds a database connection while it waits on its upstream; the start's
connection-budget arithmetic. (The same through gunicorn and a platform's signals: test_shutdown.py.)"""
from __future__ import annotations

import json
import threading
import time

import requests

from app import shutdown
from app.db import db
from app.models import ApiKey, Channel, RequestLog
from app.pg_budget import Limits, assess
from app.state import services
from app.wire.sse import SSEParser
from tests.support.admin import AdminClient
from tests.support.app import anthropic_channel, settled
from tests.support.upstream import (anthropic_message, anthropic_stream_events, hang_answer, json_answer,
                                    sse_answer)

START = {"input_tokens": 300, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 40,
         "output_tokens": 1}


def body(stream: bool) -> dict:
    return {"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": stream,
            "messages": [{"role": "user", "content": "hi"}]}


def long_stream():
    return sse_answer(anthropic_stream_events(["word "] * 40, usage_start=START,
                                              usage_delta={"output_tokens": 41}), delay=0.2)


def open_stream(live, key):
    resp = requests.post(f"{live}/v1/messages", json=body(True), stream=True, timeout=20,
                         headers={"x-api-key": key["key"]})
    chunks = resp.iter_content(chunk_size=None)
    return resp, chunks, next(chunks)


def test_stopping_ends_an_open_stream_with_overloaded_error_and_settles_it(app, admin, live, upstream):
    anthropic_channel(admin, upstream)
    key = admin.create_key(name="k")
    upstream.script(long_stream())
    relay = services(app).relay
    resp, chunks, data = open_stream(live, key)
    assert relay.in_flight() == 1
    started = time.monotonic()
    assert relay.stop_upstreams() == 1
    data += b"".join(chunks)
    assert time.monotonic() - started < 3  # not the 8 s the upstream would have taken
    events = SSEParser().feed(data)
    assert events[0][0] == "message_start" and events[-1][0] == "error"
    error = json.loads(events[-1][1])
    assert error["error"]["type"] == "overloaded_error"
    assert error["request_id"] == resp.headers["request-id"]
    assert "message_stop" not in [name for name, _ in events]
    assert upstream.wait_for_disconnect(5)
    settled(app)
    row = RequestLog.get()
    assert (row.status, row.error_type) == (200, "overloaded_error")
    assert (row.input_tokens, row.cache_read_input_tokens) == (300, 40) and row.output_tokens >= 1
    assert ApiKey.get_by_id(key["id"]).used_tokens == 340 + row.output_tokens
    assert relay.in_flight() == 0


def test_stopping_answers_a_waiting_request_503_without_failing_over_or_blaming_the_channel(
        app, admin, live, upstream):
    channel = anthropic_channel(admin, upstream, priority=2)
    anthropic_channel(admin, upstream, priority=1)  # a failover candidate that must not be tried
    key = admin.create_key(name="k")
    upstream.set_default(hang_answer(10, then=json_answer(anthropic_message())))
    relay = services(app).relay
    answer = {}
    thread = threading.Thread(target=lambda: answer.update(resp=requests.post(
        f"{live}/v1/messages", json=body(False), timeout=20, headers={"x-api-key": key["key"]})))
    thread.start()
    assert upstream.wait_for_requests(1, 5)
    relay.stop_upstreams()
    thread.join(5)
    resp = answer["resp"]
    assert resp.status_code == 503
    assert resp.json()["error"]["type"] == "overloaded_error"
    assert resp.json()["request_id"] == resp.headers["request-id"]
    assert len(upstream.requests) == 1
    settled(app)
    row = RequestLog.get()
    assert (row.status, row.error_type, row.attempts) == (503, "overloaded_error", 1)
    assert Channel.get_by_id(channel["id"]).consecutive_failures == 0

    # a request arriving after the deadline (a kept-alive connection) is not sent upstream
    late = requests.post(f"{live}/v1/messages", json=body(True), timeout=5, headers={"x-api-key": key["key"]})
    assert late.status_code == 503 and late.json()["error"]["type"] == "overloaded_error"
    assert len(upstream.requests) == 1
    settled(app)
    assert RequestLog.select().count() == 2


def test_the_deadline_cuts_then_flushes_and_reports(app, admin, live, upstream):
    anthropic_channel(admin, upstream)
    key = admin.create_key(name="k")
    upstream.script(long_stream())
    relay = services(app).relay
    resp, chunks, data = open_stream(live, key)
    report = {}
    deadline = time.monotonic() + 2.0
    runner = threading.Thread(target=lambda: report.update(shutdown.at_deadline(relay, deadline, 1.5)))
    runner.start()
    data += b"".join(chunks)
    runner.join(5)
    assert b"overloaded_error" in data
    assert report["in_flight"] == 1 and report["unsettled"] == 0 and report["flushed"] is True
    assert report["left_of_grace_s"] > 0.5
    assert RequestLog.select().count() == 1  # written by the deadline's flush, not by a helper


def test_no_database_connection_is_held_while_the_upstream_thinks(app, admin, live, upstream):
    anthropic_channel(admin, upstream)
    key = admin.create_key(name="k")
    upstream.set_default(hang_answer(1.5, then=json_answer(anthropic_message())))
    services(app).key_cache.clear()  # the request looks its key up: a connection
    answer = {}
    thread = threading.Thread(target=lambda: answer.update(resp=requests.post(
        f"{live}/v1/messages", json=body(False), timeout=20, headers={"x-api-key": key["key"]})))
    thread.start()
    assert upstream.wait_for_requests(1, 5)
    settled(app)  # the writer's own connection (a journal entry) is not the request's
    in_use = []  # the pool's checked-out connections, while the upstream waits
    for _ in range(8):
        in_use.append(len(db.obj._in_use))
        time.sleep(0.05)
    thread.join(10)
    assert answer["resp"].status_code == 200
    assert 0 in in_use, in_use  # a request holding one would show in every sample


# --------------------------------------------------------------------------- the budget arithmetic

def test_budget_fits_and_says_how_many_instances():
    level, line = assess(2, 4, Limits(max_connections=100, reserved=3, open_now=5))
    assert level == 20 and "2 workers x (4 pool + 1 change feed) = 10 connections" in line
    assert "allows 97" in line and "room for 9 such instances" in line


def test_budget_warns_when_one_instance_cannot_fit_the_database_limit():
    level, line = assess(8, 10, Limits(max_connections=100, reserved=3, database_limit=50))
    assert level == 30 and "= 88 connections" in line and "allows 50" in line
    assert "database limit 50" in line and "cannot fit" in line


def test_budget_warns_when_the_connections_open_now_leave_no_room():
    level, line = assess(4, 4, Limits(max_connections=50, reserved=3, open_now=30))
    assert level == 30 and "open now" in line and "does not fit next to" in line


def test_superusers_ignore_database_and_role_limits():
    assert Limits(max_connections=100, reserved=3, database_limit=10, role_limit=5, superuser=True).allowed == 100
    assert Limits(max_connections=100, reserved=3, database_limit=60, role_limit=40).allowed == 40


def test_an_exhausted_pool_answers_503_overloaded_after_a_bounded_wait(env, monkeypatch):
    from app import create_app
    from app.db import upgrade

    monkeypatch.setattr("app.db.POOL_WAIT_S", 1)
    app = create_app({**env, "OCTORELAY_DB_POOL": "2"})
    upgrade(db.obj)
    try:
        client = app.test_client()
        key = AdminClient(client).create_key(name="k")
        services(app).key_cache.clear()
        size = db.obj._max_connections  # OCTORELAY_DB_POOL on PostgreSQL; SQLite keeps its own
        holding, release = threading.Barrier(size + 1, timeout=10), threading.Event()

        def hold():  # a connection checked out and kept, per thread
            db.connect(reuse_if_open=True)
            holding.wait()
            release.wait(10)
            db.close()

        holders = [threading.Thread(target=hold) for _ in range(size)]
        for thread in holders:
            thread.start()
        holding.wait()
        started = time.monotonic()
        resp = client.get("/v1/models", headers={"x-api-key": key["key"]})
        waited = time.monotonic() - started
        release.set()
        for thread in holders:
            thread.join(10)
        assert resp.status_code == 503, resp.get_data(as_text=True)
        assert resp.get_json()["error"]["type"] == "overloaded_error"
        assert 0.9 < waited < 4
        assert client.get("/v1/models", headers={"x-api-key": key["key"]}).status_code == 200
    finally:
        services(app).close()
        db.obj.close_all()
